"""Store integrity: done means verified. Deleted, truncated or corrupted chunk objects, tampered root
attributes and failed writes are refused or listed, never read as complete; --overwrite deletes only stores."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import chunk_outputs, make_models, make_tables, store_snapshot

from analyze.cli import cli as analyze_cli
from featurestore import integrity
from featurestore.backend import decode_h5_attrs, encode_h5_attrs
from featurestore.errors import StoreError, StoreWriteError
from featurestore.schema import STATUS_MISSING, STATUS_OK
from featurestore.store import CRC_KEY, DONE_KEY, FeatureStore, create_store

FORMATS = [".zarr", ".h5"]


def filled(path: Path, status=None) -> Path:
    """A finished store of the toy tables (10 rows, chunks of 4: 3 chunks), or with `status` per row."""
    tables, models = make_tables(), make_models()
    store = create_store(path, tables, models, chunk_rows=4)
    with store.writer() as w:
        for c in w.pending():
            a, b = store.chunk_rows_range(c)
            st = np.full(b - a, STATUS_OK) if status is None else status[a:b]
            out = chunk_outputs(models, a, b)
            if status is not None:
                for o in out.values():
                    for k in o:
                        o[k][st != STATUS_OK] = np.nan
            w.write_chunk(c, st, out)
    store.close()
    return path


snapshot = store_snapshot


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def zarr_chunk_file(path: Path, key: str, chunk: int) -> Path:
    f = path / key / "c" / str(chunk)
    while f.is_dir():
        f = f / "0"
    return f


def info(path, *args):
    return CliRunner().invoke(analyze_cli, ["info", "--cache", str(path), *args])


# ---- deleted and corrupted chunk objects ---------------------------------------------------------


def test_deleted_embedding_chunk_is_refused_not_read_as_nan(tmp_path):
    path = filled(tmp_path / "s.zarr")
    zarr_chunk_file(path, "models/scaleface/embedding", 1).unlink()
    with pytest.raises(StoreError) as e:
        FeatureStore.open(path)
    msg = str(e.value)
    assert "models/scaleface/embedding chunk 1 (rows 4-7): missing storage object" in msg
    assert "analyze info --cache" in msg and "--verify" in msg and "--repair" in msg
    assert "\n" not in msg
    res = info(path)
    assert res.exit_code != 0 and "missing storage object" in str(res.exception or res.output)
    res = info(path, "--verify")
    assert res.exit_code == 1
    assert "damaged  models/scaleface/embedding chunk 1 (rows 4-7): missing storage object" in res.output
    assert "done chunks to redo: 1" in res.output


def test_deleted_status_chunk_is_refused(tmp_path):
    path = filled(tmp_path / "s.zarr")
    zarr_chunk_file(path, "images/status", 2).unlink()
    with pytest.raises(StoreError, match=r"images/status chunk 2 \(rows 8-9\): missing storage object"):
        FeatureStore.open(path)


def test_deleted_creation_array_chunk_and_checksum_row_are_refused(tmp_path):
    path = filled(tmp_path / "s.zarr")
    zarr_chunk_file(path, "images/template", 0).unlink()
    with pytest.raises(StoreError, match=r"images/template chunk 0 \(rows 0-3\): missing storage object"):
        FeatureStore.open(path)
    path = filled(tmp_path / "t.zarr")
    zarr_chunk_file(path, CRC_KEY, 1).unlink()
    with pytest.raises(StoreError, match=r"progress/chunk_crc32 chunk 1 \(rows 4-7\): missing storage object"):
        FeatureStore.open(path)


def test_all_failed_chunk_has_storage_objects_and_verifies(tmp_path):
    status = np.full(10, STATUS_OK)
    status[4:8] = STATUS_MISSING  # chunk 1: every output all NaN, equal to the fill value
    path = filled(tmp_path / "s.zarr", status)
    assert zarr_chunk_file(path, "models/pfe/sigma_sq", 1).is_file()
    with FeatureStore.open(path) as s:
        assert integrity.verify(s) == []
        assert np.isnan(s.read("pfe", "sigma_sq")[4:8]).all()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_zarr_chunk_file_is_listed_by_verify(tmp_path, damage):
    path = filled(tmp_path / "s.zarr")
    f = zarr_chunk_file(path, "models/pfe/embedding", 2)
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    res = info(path, "--verify")
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("damaged")]
    assert len(lines) == 1 and "models/pfe/embedding chunk 2 (rows 8-9)" in lines[0]
    assert "checksum mismatch" in lines[0] or "unreadable" in lines[0]


def _h5_chunk_offset(path: Path, key: str, chunk: int) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        ds = f[key]
        info_ = ds.id.get_chunk_info_by_coord((chunk * ds.chunks[0],) + (0,) * (ds.ndim - 1))
        return info_.byte_offset, info_.size


@pytest.mark.parametrize("key", ["models/scaleface/norm", "images/subject"])
def test_corrupted_hdf5_chunk_bytes_are_listed_by_verify(tmp_path, key):
    path = filled(tmp_path / "s.h5")
    offset, size = _h5_chunk_offset(path, key, 1)
    with open(path, "r+b") as f:
        f.seek(offset + size // 2)
        b = f.read(1)
        f.seek(offset + size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    res = info(path, "--verify")
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("damaged")]
    assert len(lines) == 1 and f"{key} chunk 1 (rows 4-7)" in lines[0], res.output


@pytest.mark.parametrize("suffix", FORMATS)
def test_clean_store_verifies_with_exit_0(tmp_path, suffix):
    path = filled(tmp_path / f"s{suffix}")
    res = info(path, "--verify")
    assert res.exit_code == 0, res.output
    assert "verify: 3 done chunks and the creation-time arrays are intact (zlib.crc32 checksums)" in res.output


def test_store_without_checksums_still_opens_and_accepts_only_all_failed_gaps(tmp_path):
    """A store made before checksums: zarr skipped all-NaN chunks, which is fine where every row failed."""
    status = np.full(10, STATUS_OK)
    status[4:8] = STATUS_MISSING
    path = filled(tmp_path / "old.zarr", status)
    meta = json.loads((path / "zarr.json").read_text())
    for k in ("created_by", integrity.ATTR_ALGORITHM, integrity.ATTR_COLUMNS, integrity.ATTR_CREATION):
        del meta["attributes"][k]
    (path / "zarr.json").write_text(json.dumps(meta))
    shutil.rmtree(path / CRC_KEY)
    for key in ("models/pfe/embedding", "models/scaleface/scale"):
        zarr_chunk_file(path, key, 1).unlink()  # all failed: what old zarr left out
    shutil.rmtree(path / "images/template/c")  # -1 everywhere would also have been left out
    with FeatureStore.open(path) as s:
        assert s.chunk_done().all()
        assert integrity.verify(s) == []
    zarr_chunk_file(path, "models/pfe/embedding", 0).unlink()  # rows that are ok: damage
    with pytest.raises(StoreError, match=r"models/pfe/embedding chunk 0 \(rows 0-3\): missing storage object"):
        FeatureStore.open(path)


# ---- tampered root attributes --------------------------------------------------------------------


def _edit_attrs(path: Path, edit) -> None:
    if path.suffix == ".zarr":
        meta = json.loads((path / "zarr.json").read_text())
        edit(meta["attributes"])
        (path / "zarr.json").write_text(json.dumps(meta))
    else:
        with h5py.File(path, "r+") as f:  # native HDF5 attributes, mappings as JSON text
            attrs = decode_h5_attrs(f.attrs)
            edit(attrs)
            for k in list(f.attrs):
                del f.attrs[k]
            encode_h5_attrs(f.attrs, attrs)


def _set(key, value):
    def edit(a):
        if value is KeyError:
            del a[key]
        else:
            a[key] = value

    return edit


def _model(edit):
    def f(a):
        edit(a["models"]["pfe"])

    return f


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("n_images", KeyError), "root attribute 'n_images' is missing"),
        (_set("n_images", "10"), "root attribute 'n_images' is '10', expected an integer >= 1"),
        (_set("n_images", 13), "root attribute 'n_chunks' is 3, but n_images 13 in chunks of chunk_rows 4 make 4"),
        (_set("n_images", 11), "root attribute 'n_images' is 11, but images/path has 10 rows"),
        (_set("chunk_rows", 0), "root attribute 'chunk_rows' is 0, expected an integer >= 1"),
        (lambda a: a.update(chunk_rows=5, n_chunks=2), "'chunk_rows' is 5, but images/path is stored in chunks of 4"),
        (_set("n_chunks", 4), "root attribute 'n_chunks' is 4, but n_images 10 in chunks of chunk_rows 4 make 3"),
        (_set("models", KeyError), "root attribute 'models' is missing"),
        (_set("models", []), "root attribute 'models' is list, expected a mapping"),
        (_model(lambda m: m.pop("family")), "root attribute 'models.pfe' is malformed"),
        (_model(lambda m: m.update(outputs=["embedding", "bogus"])), "root attribute 'models.pfe' is malformed"),
        (_model(lambda m: m.update(embedding_dim=8)), "root attribute 'models.pfe' says models/pfe/embedding is"),
        (_set("protocols", {"tpl": {"level": "x"}}), "root attribute 'protocols.tpl' is malformed"),
    ],
)
def test_tampered_root_attributes_give_one_line_naming_the_attribute(tmp_path, suffix, edit, message):
    path = tmp_path / f"s{suffix}"
    create_store(path, make_tables(), make_models(), chunk_rows=4).close()
    _edit_attrs(path, edit)
    with pytest.raises(StoreError) as e:
        FeatureStore.open(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    res = info(path)
    assert res.exit_code != 0 and isinstance(res.exception, StoreError | SystemExit)


# ---- failed writes -------------------------------------------------------------------------------


class FailingArray:
    """Wraps a backend array; the k-th write (counted over all wrapped arrays) raises `error`."""

    def __init__(self, arr, counter, k, error):
        self._arr, self._counter, self._k, self._error = arr, counter, k, error

    def __getattr__(self, name):
        return getattr(self._arr, name)

    def __getitem__(self, item):
        return self._arr[item]

    def __setitem__(self, item, value):
        self._counter[0] += 1
        if self._counter[0] == self._k:
            raise self._error
        self._arr[item] = value


def inject(store: FeatureStore, k: int, error: BaseException) -> None:
    backend, real = store._b, store._b.array
    counter = [0]
    backend.array = lambda key: FailingArray(real(key), counter, k, error)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("k", [1, 4, 7, 8])  # an output, the status, the checksum row, the done flag
def test_injected_write_failure_never_marks_done_and_resume_equals_clean_run(tmp_path, suffix, err, k):
    tables, models = make_tables(), make_models()
    clean = snapshot(filled(tmp_path / f"clean{suffix}"))
    path = tmp_path / f"s{suffix}"
    store = create_store(path, tables, models, chunk_rows=4)
    with store.writer() as w:
        w.write_chunk(0, np.full(4, STATUS_OK), chunk_outputs(models, 0, 4))
        inject(store, k, OSError(err, os.strerror(err)))
        with pytest.raises(StoreWriteError) as e:
            w.write_chunk(1, np.full(4, STATUS_OK), chunk_outputs(models, 4, 8))
        assert f"for chunk 1 failed: OSError: [Errno {err}] {os.strerror(err)}" in str(e.value)
        assert e.value.chunk == 1 and e.value.key
        del store._b.array  # the device works again
        assert w.pending() == [1, 2]
    store.close()
    with FeatureStore.open(path) as s:
        np.testing.assert_array_equal(s.chunk_done(), [True, False, False])
    store = create_store(path, tables, models, chunk_rows=4, exist_ok=True)
    with store.writer() as w:
        for c in w.pending():
            a, b = store.chunk_rows_range(c)
            w.write_chunk(c, np.full(b - a, STATUS_OK), chunk_outputs(models, a, b))
    store.close()
    assert_same(snapshot(path), clean)


def test_hdf5_refuses_a_chunk_that_does_not_fit_in_the_free_space(tmp_path, monkeypatch):
    tables, models = make_tables(), make_models()
    path = tmp_path / "s.h5"
    store = create_store(path, tables, models, chunk_rows=4)
    import featurestore.store as fs

    monkeypatch.setattr(fs.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 1 << 20))
    with store.writer() as w:
        with pytest.raises(StoreWriteError, match=r"writing chunk 0 refused before it began: 1.0 MiB free.*No space"):
            w.write_chunk(0, np.full(4, STATUS_OK), chunk_outputs(models, 0, 4))
    assert not store.chunk_done().any()
    store.close()


# ---- overwrite and creation never delete what is not ours ----------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path):
    user = tmp_path / "photos.zarr"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(StoreError, match=r"photos.zarr exists but is not a feature store.*nothing was deleted"):
        create_store(user, make_tables(), make_models(), overwrite=True)
    assert (user / "holiday.jpg").read_bytes() == b"precious"
    import zarr

    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").attrs["mine"] = 1
    with pytest.raises(StoreError, match="not a feature store"):
        create_store(foreign, make_tables(), make_models(), overwrite=True)
    assert (foreign / "zarr.json").exists()
    h5 = tmp_path / "data.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreError, match="data.h5 exists but is not a feature store"):
        create_store(h5, make_tables(), make_models(), overwrite=True)
    with h5py.File(h5, "r") as f:
        np.testing.assert_array_equal(f["x"][:], np.arange(3))
    # a real store, even a damaged one, is replaced
    store = filled(tmp_path / "s.zarr")
    zarr_chunk_file(store, "images/status", 0).unlink()
    create_store(store, make_tables(n=12), make_models(), overwrite=True).close()
    with FeatureStore.open(store) as s:
        assert s.n_images == 12


@pytest.mark.parametrize("suffix", FORMATS)
def test_leftover_creating_path_is_removed_only_if_ours(tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    tmp = tmp_path / f".s.creating{suffix}"
    if suffix == ".zarr":
        tmp.mkdir()
        (tmp / "notes.txt").write_text("mine")
    else:
        tmp.write_text("mine")
    with pytest.raises(StoreError, match=r"\.s\.creating.* is not a feature store.*store creation"):
        create_store(path, make_tables(), make_models())
    assert tmp.exists() and not path.exists()
    shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    # one of ours, left by a killed creation (marker attribute written first): cleaned up
    from featurestore.backend import CREATED_BY, open_backend

    open_backend(tmp, "w", attrs={"created_by": CREATED_BY}).close()
    create_store(path, make_tables(), make_models()).close()
    assert not tmp.exists() and path.exists()


# ---- repair ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_mark_not_done_and_rewrite_creation_restore_a_clean_store(tmp_path, suffix):
    tables, models = make_tables(), make_models()
    path = filled(tmp_path / f"s{suffix}")
    clean = snapshot(path)
    with FeatureStore.open(path, "r+") as s:  # damage an output chunk and an images column chunk
        s._b.array("models/pfe/norm")[4:8] = 0
        s._b.array("images/path")[8:10] = np.array(["x", "y"], dtype=object)
    with FeatureStore.open(path, "r+", check=False) as s:
        damages = integrity.verify(s)
        assert [(d.key, d.chunk) for d in damages] == [("images/path", 2), ("models/pfe/norm", 1)]
        assert integrity.damaged_chunks(s, damages) == [1]
        with s.writer() as w:
            assert w.rewrite_creation(tables, damages) == ["images/path chunk 2 (rows 8-9)"]
            w.mark_not_done([1])
            assert w.pending() == [1]
            w.write_chunk(1, np.full(4, STATUS_OK), chunk_outputs(models, 4, 8))
        assert integrity.verify(s) == []
    assert_same(snapshot(path), clean)


def test_done_chunk_is_marked_only_after_its_checksums(tmp_path):
    """Order on disk: data, flush, checksums, flush, done flag: a done flag always has its checksums."""
    tables, models = make_tables(), make_models()
    store = create_store(tmp_path / "s.zarr", tables, models, chunk_rows=4)
    seen = []
    real = store._b.array
    store._b.array = lambda key: (seen.append(key), real(key))[1]
    with store.writer([0]) as w:
        seen.clear()
        w.write_chunk(0, np.full(4, STATUS_OK), chunk_outputs(models, 0, 4))
    assert seen[-2:] == [CRC_KEY, DONE_KEY] and seen[-3] == "images/status"


def test_analyze_reject_refuses_a_store_with_a_deleted_chunk(tmp_path):
    """Before: the deleted chunk read as NaN and reject exited 0 with a different AUC."""
    path = filled(tmp_path / "s.zarr")
    zarr_chunk_file(path, "models/scaleface/scale", 0).unlink()
    res = CliRunner().invoke(analyze_cli, ["reject", "--cache", str(path), "--no-figures"])
    assert res.exit_code != 0
    assert isinstance(res.exception, StoreError)
    assert "models/scaleface/scale chunk 0 (rows 0-3): missing storage object" in str(res.exception)
    assert not (tmp_path / "s.analysis").exists()


def _write_chunk_in_child(path: str, chunk: int, q) -> None:
    try:
        s = FeatureStore.open(path, "r+")
        with s.writer([chunk]):
            q.put("no error")
    except Exception as exc:  # report the message to the parent
        q.put(str(exc))


def test_a_second_process_writing_the_same_zarr_chunk_is_refused(tmp_path):
    import multiprocessing as mp

    path = tmp_path / "s.zarr"
    create_store(path, make_tables(), make_models(), chunk_rows=4).close()
    first = FeatureStore.open(path, "r+")
    ctx = mp.get_context("spawn")
    with first.writer([1]):
        q = ctx.Queue()
        p = ctx.Process(target=_write_chunk_in_child, args=(str(path), 1, q))
        p.start()
        p.join(60)
        msg = q.get(timeout=5)
    assert "chunk 0000001 of" in msg and "is being written by another process (pid" in msg
    first.close()


@pytest.mark.parametrize("suffix", FORMATS)
def test_failed_creation_leaves_nothing_and_says_so(tmp_path, suffix, monkeypatch):
    import featurestore.store as fs

    real_open = fs.open_backend

    def failing_open(path, mode, attrs=None):
        b = real_open(path, mode, attrs)
        counter = [0]
        real = b.array
        b.array = lambda key: FailingArray(real(key), counter, 3, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return b

    monkeypatch.setattr(fs, "open_backend", failing_open)
    path = tmp_path / f"s{suffix}"
    with pytest.raises(StoreWriteError, match=r"creating the store failed \(OSError: \[Errno 28\] No space left"):
        create_store(path, make_tables(), make_models())
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []


def test_corrupted_done_flag_and_array_metadata_are_named(tmp_path):
    path = filled(tmp_path / "s.zarr")
    zarr_chunk_file(path, DONE_KEY, 1).write_bytes(b"\x00garbage")
    with pytest.raises(StoreError, match=r"progress/chunk_done chunk 1 \(rows 4-7\): unreadable"):
        FeatureStore.open(path)
    with FeatureStore.open(path, "r+", check=False) as s:
        damages = integrity.verify(s)
        assert [(d.key, d.chunk) for d in damages] == [(DONE_KEY, 1)]
        assert integrity.damaged_chunks(s, damages) == [1]
        with s.writer([1]) as w:
            w.mark_not_done([1])
            w.write_chunk(1, np.full(4, STATUS_OK), chunk_outputs(make_models(), 4, 8))
    with FeatureStore.open(path) as s:
        assert s.chunk_done().all() and integrity.verify(s) == []
    (path / "models/pfe/norm/zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"array models/pfe/norm has unreadable metadata"):
        FeatureStore.open(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_info_verify_runs_without_torch_and_prints_one_line_errors(tmp_path, suffix):
    from torchless import run_without_torch

    path = filled(tmp_path / f"s{suffix}")
    call = "import sys; from analyze.cli import main; sys.argv=['analyze','info','--cache',{p!r}{extra}]; main()"
    res = run_without_torch(call.format(p=str(path), extra=", '--verify'"))
    assert res.returncode == 0, res.stderr
    assert "intact" in res.stdout
    _edit_attrs(path, _set("n_chunks", 7))
    res = run_without_torch(call.format(p=str(path), extra=""))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: ")
    assert "root attribute 'n_chunks' is 7" in res.stderr
