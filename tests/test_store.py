"""Feature store: round trips in both formats, done marks, locks, shards and error messages."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle

import numpy as np
import pytest
from conftest import chunk_outputs, make_models, make_tables

from featurestore.errors import StoreError, StoreLockedError
from featurestore.schema import SCHEMA_VERSION, STATUS_OK, STATUS_PENDING
from featurestore.store import FeatureStore, create_store, shard_chunks

FORMATS = [".zarr", ".h5"]


def fill(store: FeatureStore, chunks=None) -> None:
    with store.writer(chunks) as w:
        for c in w.pending():
            start, stop = store.chunk_rows_range(c)
            w.write_chunk(c, np.full(stop - start, STATUS_OK), chunk_outputs(list(store.models.values()), start, stop))


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path, tables, models, suffix):
    path = tmp_path / f"toy{suffix}"
    store = create_store(path, tables, models, manifest_digest="abc", chunk_rows=4, extra_attrs={"note": 1})
    fill(store)
    store.close()
    with FeatureStore.open(path) as s:
        assert s.format == ("zarr" if suffix == ".zarr" else "hdf5")
        assert s.attrs["schema"] == SCHEMA_VERSION
        assert s.attrs["dataset"] == "toy"
        assert s.attrs["manifest_digest"] == "abc"
        assert s.attrs["extra"] == {"note": 1}
        assert "numpy" in s.attrs["package_versions"]
        assert s.n_images == 10 and s.n_chunks == 3
        img = s.images()
        assert list(img.path) == list(tables.images.path)
        np.testing.assert_array_equal(img.subject, tables.images.subject)
        np.testing.assert_array_equal(img.template, tables.images.template)
        np.testing.assert_array_equal(img.detector_score, tables.images.detector_score)
        np.testing.assert_array_equal(img.landmarks, tables.images.landmarks)
        p = s.protocol("tpl")
        np.testing.assert_array_equal(p.pairs, tables.protocols["tpl"].pairs)
        np.testing.assert_array_equal(p.label, tables.protocols["tpl"].label)
        assert p.level == "template" and p.description == "toy"
        expected = chunk_outputs(models, 0, 10)
        for spec in models:
            assert s.models[spec.name].outputs == spec.outputs
            for out in spec.outputs:
                np.testing.assert_array_equal(s.read(spec.name, out), expected[spec.name][out])
                d = s.dask(spec.name, out)
                assert d.chunks[0] == (4, 4, 2)
                np.testing.assert_array_equal(d.compute(), expected[spec.name][out])
        assert s.chunk_done().all() and (s.status() == STATUS_OK).all()
        assert s.summary().status_counts == {STATUS_OK: 10}
        assert s.summary().n_templates == 5


@pytest.mark.parametrize("suffix", FORMATS)
def test_done_marks_and_resume(tmp_path, tables, models, suffix):
    path = tmp_path / f"toy{suffix}"
    store = create_store(path, tables, models, chunk_rows=4)
    with store.writer() as w:
        assert w.pending() == [0, 1, 2]
        w.write_chunk(1, np.full(4, STATUS_OK), chunk_outputs(models, 4, 8))
        # a chunk whose outputs are incomplete is refused and stays not done
        bad = chunk_outputs(models, 8, 10)
        del bad["pfe"]["sigma_sq"]
        with pytest.raises(StoreError, match=r"chunk 2 lacks outputs \['pfe/sigma_sq'\]"):
            w.write_chunk(2, np.full(2, STATUS_OK), bad)
        assert w.pending() == [0, 2]
    np.testing.assert_array_equal(store.chunk_done(), [False, True, False])
    np.testing.assert_array_equal(store.row_done(), [False] * 4 + [True] * 4 + [False] * 2)
    assert (store.status()[:4] == STATUS_PENDING).all()
    assert np.isnan(store.read("scaleface", "scale")[:4]).all()
    store.close()
    # resume: reopen compatible store, only the missing chunks are written
    store = create_store(path, tables, models, chunk_rows=4, exist_ok=True)
    with store.writer() as w:
        assert w.pending() == [0, 2]
    fill(store)
    assert store.chunk_done().all()


def test_write_shape_errors_name_the_key(tmp_path, tables, models):
    store = create_store(tmp_path / "s.zarr", tables, models, chunk_rows=4)
    out = chunk_outputs(models, 0, 4)
    out["scaleface"]["embedding"] = out["scaleface"]["embedding"][:, :3]
    with store.writer([0]) as w:
        with pytest.raises(
            StoreError, match=r"models/scaleface/embedding chunk 0 has shape \(4, 3\), expected \(4, 4\)"
        ):
            w.write_chunk(0, np.ones(4), out)
        with pytest.raises(StoreError, match="chunk 1 is not locked by this writer"):
            w.write_chunk(1, np.ones(4), chunk_outputs(models, 4, 8))
    assert not store.chunk_done().any()


def _shard_worker(path: str, shard: int, n_shards: int) -> None:
    tables, models = make_tables(), make_models()
    store = create_store(path, tables, models, chunk_rows=2, exist_ok=True)
    fill(store, shard_chunks(store.n_chunks, shard, n_shards))


def _arrays(path) -> dict[str, np.ndarray]:
    with FeatureStore.open(path) as s:
        out = {"status": s.status(), "done": s.chunk_done(), "path": np.asarray(s.images().path, dtype=str)}
        for name, spec in s.models.items():
            for o in spec.outputs:
                out[f"{name}/{o}"] = s.read(name, o)
        return out


def test_two_processes_disjoint_shards_equal_one_process(tmp_path):
    one = tmp_path / "one.zarr"
    _shard_worker(str(one), 0, 1)
    two = tmp_path / "two.zarr"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_shard_worker, args=(str(two), i, 2)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    a, b = _arrays(one), _arrays(two)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_shard_ranges_partition_chunks():
    for n in (1, 5, 7, 115):
        for k in (1, 2, 3, 8):
            got = [c for i in range(k) for c in shard_chunks(n, i, k)]
            assert got == list(range(n))
    with pytest.raises(ValueError, match="shard 2/2"):
        shard_chunks(4, 2, 2)


@pytest.mark.parametrize("suffix", FORMATS)
def test_second_writer_of_same_range_is_refused(tmp_path, tables, models, suffix):
    path = tmp_path / f"toy{suffix}"
    create_store(path, tables, models, chunk_rows=4).close()
    a = FeatureStore.open(path, "r+") if suffix == ".zarr" else None
    first = FeatureStore.open(path, "r+")
    with first.writer([0, 1]):
        if suffix == ".zarr":
            with pytest.raises(
                StoreLockedError, match=r"chunk 0000001 of .*toy.zarr is being written by another process \(pid"
            ):
                with a.writer([1, 2]):
                    pass
            with a.writer([2]) as w:  # a disjoint range is fine
                assert w.pending() == [2]
        else:
            with pytest.raises(StoreLockedError, match="HDF5 allows one writer"):
                ctx = mp.get_context("spawn")
                q = ctx.Queue()
                p = ctx.Process(target=_try_write, args=(str(path), q))
                p.start()
                p.join(60)
                raise StoreLockedError(q.get(timeout=5))
    # once released, the range can be taken again
    with first.writer([0, 1]):
        pass


def _try_write(path: str, q) -> None:
    try:
        s = FeatureStore.open(path, "r+")
        with s.writer([2]):
            q.put("no error")
    except Exception as exc:  # report the message to the parent
        q.put(str(exc))


def test_incompatible_store_is_refused(tmp_path, tables, models):
    path = tmp_path / "s.zarr"
    create_store(path, tables, models, chunk_rows=4).close()
    with pytest.raises(StoreError, match="already exists"):
        create_store(path, tables, models, chunk_rows=4)
    with pytest.raises(StoreError, match=r"its models are \['pfe', 'scaleface'\], this run has \['scaleface'\]"):
        create_store(path, tables, models[:1], exist_ok=True)
    other = make_tables(n=12)
    with pytest.raises(StoreError, match=r"its images differ \(10 rows in the store, 12 given\)"):
        create_store(path, other, models, exist_ok=True)
    # overwrite replaces it
    s = create_store(path, other, models, chunk_rows=4, overwrite=True)
    assert s.n_images == 12


def test_overwrite_refused_while_written(tmp_path, tables, models):
    path = tmp_path / "s.zarr"
    s = create_store(path, tables, models, chunk_rows=4)
    with s.writer([1]):
        with pytest.raises(StoreLockedError, match="being written by another process"):
            create_store(path, tables, models, overwrite=True)
    assert path.exists()


def test_open_errors_say_what_was_found(tmp_path, tables, models):
    with pytest.raises(StoreError, match="no store at .*missing.zarr"):
        FeatureStore.open(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match=r"cannot tell the store format from the suffix '.txt'"):
        FeatureStore.open(tmp_path / "x.txt")
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "readme").write_text("hi")
    with pytest.raises(StoreError, match=r"not a Zarr v3 store: no zarr.json in it \(found: \['readme'\]\)"):
        FeatureStore.open(tmp_path / "plain.zarr")
    (tmp_path / "bad.h5").write_text("not hdf5")
    with pytest.raises(StoreError, match="could not be opened as an HDF5 store"):
        FeatureStore.open(tmp_path / "bad.h5")
    import zarr

    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    g.attrs["hello"] = 1
    with pytest.raises(
        StoreError, match=r"not a feature store: its root has no 'schema' attribute \(attributes found: \['hello'\]\)"
    ):
        FeatureStore.open(tmp_path / "foreign.zarr")
    path = tmp_path / "future.zarr"
    create_store(path, tables, models).close()
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["schema"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="has store schema 99, which this version does not know"):
        FeatureStore.open(path)


def test_unknown_names_are_listed(tmp_path, tables, models):
    s = create_store(tmp_path / "s.h5", tables, models)
    with pytest.raises(StoreError, match="no model 'magface'; it has: scaleface, pfe"):
        s.read("magface", "embedding")
    with pytest.raises(StoreError, match="model 'scaleface' has no output 'sigma_sq'; it has: embedding, norm, scale"):
        s.dask("scaleface", "sigma_sq")
    with pytest.raises(StoreError, match="no protocol 'x'; it has: tpl"):
        s.protocol("x")


def test_hdf5_dask_array_pickles(tmp_path, tables, models):
    path = tmp_path / "s.h5"
    s = create_store(path, tables, models, chunk_rows=4)
    fill(s)
    s.close()
    d = FeatureStore.open(path).dask("pfe", "sigma_sq")
    d2 = pickle.loads(pickle.dumps(d))
    np.testing.assert_array_equal(d2.compute(), chunk_outputs(models, 0, 10)["pfe"]["sigma_sq"])


@pytest.mark.parametrize("suffix", FORMATS)
def test_read_rows_dense_and_sparse(tmp_path, tables, models, suffix):
    store = create_store(tmp_path / f"s{suffix}", tables, models, chunk_rows=4)
    fill(store)
    want = chunk_outputs(models, 0, 10)["pfe"]["sigma_sq"]
    for rows in ([2, 3, 4, 5], [0, 9], [7], []):
        got = store.read_rows("pfe", "sigma_sq", np.array(rows, dtype=np.int64))
        np.testing.assert_array_equal(got, want[np.array(rows, dtype=np.int64)])
