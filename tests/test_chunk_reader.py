"""featurestore.backend.ChunkReader: the direct chunk decode equals zarr's read for every slice shape, fill values
of missing chunks included, and other layouts fall back to zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from featurestore.backend import ZarrBackend, chunk_reader


@pytest.fixture
def backend(tmp_path):
    b = ZarrBackend(tmp_path / "s.zarr", "w")
    rng = np.random.default_rng(0)
    b.create_array("m/x", shape=(50, 3), dtype="f4", chunks=(8, 3), fill_value=np.nan)
    b.array("m/x")[0:40] = rng.standard_normal((40, 3)).astype("f4")  # rows 40..49: chunks never written
    b.create_array("m/v", shape=(50,), dtype="u1", chunks=(8,), fill_value=0)
    b.array("m/v")[:] = rng.integers(0, 5, 50).astype("u1")
    return b


@pytest.mark.parametrize("key", ["m/x", "m/v"])
@pytest.mark.parametrize("sl", [(0, 50), (3, 17), (8, 16), (39, 41), (45, 50), (10, 10), (48, 99)])
def test_read_slice_equals_zarr(backend, key, sl):
    want = np.asarray(zarr.open_array(str(backend.path / key), mode="r")[sl[0] : sl[1]])
    assert chunk_reader(backend.array(key), backend.path / key) is not None
    got = backend.read_slice(key, *sl)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=True)


def test_other_layouts_fall_back_to_zarr(tmp_path):
    arr = zarr.create_array(str(tmp_path / "y.zarr"), shape=(20, 4), chunks=(5, 2), dtype="f8")  # split columns
    arr[:] = np.arange(80.0).reshape(20, 4)
    assert chunk_reader(arr, tmp_path / "y.zarr") is None


def test_new_arrays_take_lz4_for_floats_and_zstd_for_the_rest(backend, tmp_path):
    """Floats barely compress and zstd decodes them ~10x slower than LZ4 (featurestore.backend.blosc_codec);
    a store written with zstd floats (before 2026-12) reads the same through the chunk reader."""
    import json

    def blosc_of(key):
        meta = json.loads((backend.path / key / "zarr.json").read_text())
        return next(c["configuration"] for c in meta["codecs"] if c["name"] == "blosc")

    assert (blosc_of("m/x")["cname"], blosc_of("m/x")["shuffle"]) == ("lz4", "shuffle")
    assert (blosc_of("m/v")["cname"], blosc_of("m/v")["shuffle"]) == ("zstd", "bitshuffle")
    backend.create_array("m/i", shape=(20,), dtype="i8", chunks=(8,), fill_value=-1)
    assert (blosc_of("m/i")["cname"], blosc_of("m/i")["shuffle"]) == ("zstd", "shuffle")
    from zarr.codecs import BloscCodec

    old = zarr.create_array(
        str(tmp_path / "old.zarr" / "e"), shape=(30, 4), chunks=(8, 4), dtype="f4", fill_value=np.nan,
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    )  # fmt: skip
    values = np.random.default_rng(1).standard_normal((30, 4)).astype("f4")
    old[:] = values
    reader = chunk_reader(old, tmp_path / "old.zarr" / "e")
    assert reader is not None and np.array_equal(reader.read(0, 30), values)
