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
