"""A self-describing store (issue 12 item 3): dimension names, per-array attributes, native HDF5 attributes,
consolidated metadata once complete, locks outside the hierarchy; opened by xarray, zarr, h5py and dask
in a process that never imports this project, and stores written before all this still open and verify."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import chunk_outputs, make_models, make_tables

from featurestore import integrity
from featurestore.arrays import DIMENSIONS
from featurestore.backend import decode_h5_attrs, encode_h5_attrs
from featurestore.schema import SCHEMA_VERSION, STATUS_MISSING, STATUS_NAMES, STATUS_OK
from featurestore.store import FeatureStore, create_store

pytest.importorskip("xarray")

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "data" / "schema1_before_attrs"
KEYS = [
    "images/path",
    "images/subject",
    "images/template",
    "images/media",
    "images/detector_score",
    "images/landmarks",
    "images/status",
    "progress/chunk_done",
    "progress/chunk_crc32",
    "protocols/tpl/pairs",
    "protocols/tpl/label",
    "models/scaleface/embedding",
    "models/scaleface/norm",
    "models/scaleface/scale",
    "models/pfe/embedding",
    "models/pfe/norm",
    "models/pfe/sigma_sq",
    "models/pfe/embedding_flip",
]


def fill(store: FeatureStore, chunks=None) -> None:
    """Write `chunks` (default: all pending) with the conftest outputs, row 4 missing."""
    with store.writer(chunks) as w:
        for c in w.pending():
            a, b = store.chunk_rows_range(c)
            status = np.full(b - a, STATUS_OK)
            if a <= 4 < b:
                status[4 - a] = STATUS_MISSING
            w.write_chunk(c, status, chunk_outputs(list(store.models.values()), a, b))


def complete_store(path: Path) -> Path:
    store = create_store(path, make_tables(), make_models(), chunk_rows=4, manifest_digest="abc")
    fill(store)
    store.close()
    return path


def run_foreign(script: str, cwd: Path) -> dict:
    """Run `script` in a fresh interpreter, from `cwd`, without the repository on its path; it prints JSON.
    It fails if the script imported any of this project's packages."""
    guard = (
        "\nimport sys as _s\n"
        "_mine = sorted({m.split('.')[0] for m in _s.modules} & "
        "{'featurestore', 'facedata', 'extract', 'analyze', 'pipelines'})\n"
        "assert not _mine, _mine\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(script) + guard],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ZARR_SCRIPT = """
import json, sys, warnings
import dask.array as da
import numpy as np
import xarray as xr
import zarr

path = sys.argv[1] if len(sys.argv) > 1 else "toy.zarr"
out = {}
with warnings.catch_warnings():
    warnings.simplefilter("error")  # no warning about unknown objects (.locks/) or metadata
    root = zarr.open_group(path, mode="r")
    out["consolidated"] = root.metadata.consolidated_metadata is not None
    out["dims"], out["attrs"] = {}, {}
    for name, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array):
            out["dims"][name] = list(node.metadata.dimension_names or [])
            out["attrs"][name] = dict(node.attrs)
groups = {}
for g in ("images", "progress", "protocols/tpl", "models/scaleface", "models/pfe"):
    ds = xr.open_zarr(path, group=g)
    groups[g] = {"sizes": dict(ds.sizes), "vars": sorted(ds.data_vars)}
images = xr.open_zarr(path, group="images")
out["subject"] = images["subject"].values.tolist()
out["status"] = images["status"].values.tolist()
out["path"] = [str(p) for p in images["path"].values]
out["pairs"] = xr.open_zarr(path, group="protocols/tpl")["pairs"].values.tolist()
tree = xr.open_datatree(path, engine="zarr")
out["tree"] = sorted(node.path for node in tree.subtree)
emb = xr.open_datatree(path, engine="zarr")["models/pfe/sigma_sq"]
out["sigma_sq_dims"] = list(emb.dims)
out["sigma_sq_kind"] = emb.attrs["kind"]
d = da.from_zarr(path, component="models/scaleface/embedding")
out["emb_sum"] = float(d.sum().compute())
out["groups"] = groups
print(json.dumps(out))
"""


def test_zarr_store_opens_in_xarray_zarr_and_dask_without_the_project(tmp_path):
    complete_store(tmp_path / "toy.zarr")
    got = run_foreign(ZARR_SCRIPT, tmp_path)
    tables, models = make_tables(), make_models()
    assert got["consolidated"]
    assert sorted(got["dims"]) == sorted(KEYS)
    for key, dims in got["dims"].items():
        assert dims and set(dims) <= set(DIMENSIONS), (key, dims)
    assert got["dims"]["images/landmarks"] == ["image", "point", "xy"]
    assert got["dims"]["protocols/tpl/pairs"] == ["pair", "side"]
    assert got["dims"]["models/pfe/sigma_sq"] == ["image", "dim"] == got["sigma_sq_dims"]
    attrs = got["attrs"]
    assert attrs["images/status"]["flag_values"] == sorted(STATUS_NAMES)
    assert attrs["images/status"]["flag_meanings"].split() == [
        STATUS_NAMES[k].replace(" ", "_") for k in sorted(STATUS_NAMES)
    ]
    assert attrs["progress/chunk_done"]["flag_meanings"] == "not_done done"
    for key in ("models/scaleface/embedding", "models/pfe/embedding", "models/pfe/embedding_flip"):
        assert attrs[key]["raw"] is True
    assert attrs["models/pfe/sigma_sq"]["kind"] == "uncertainty" == got["sigma_sq_kind"]
    assert attrs["models/scaleface/scale"]["kind"] == "confidence"
    assert attrs["protocols/tpl/pairs"]["level"] == "template" and attrs["protocols/tpl/pairs"]["kind"] == "template_id"
    assert all("long_name" in a for a in attrs.values())
    assert got["groups"]["images"]["sizes"] == {"image": 10, "point": 5, "xy": 2}
    assert got["groups"]["progress"]["sizes"] == {
        "chunk": 3,
        "column": len(integrity.chunk_columns({m.name: m for m in models})),
    }
    assert got["groups"]["protocols/tpl"]["sizes"] == {"pair": 4, "side": 2}
    assert got["groups"]["models/pfe"]["vars"] == ["embedding", "embedding_flip", "norm", "sigma_sq"]
    assert {"/images", "/models/scaleface", "/models/pfe", "/protocols/tpl", "/progress"} <= set(got["tree"])
    assert got["subject"] == tables.images.subject.tolist()
    assert got["path"] == list(tables.images.path)
    assert got["pairs"] == tables.protocols["tpl"].pairs.tolist()
    assert got["status"] == [STATUS_MISSING if i == 4 else STATUS_OK for i in range(10)]
    emb = np.concatenate([chunk_outputs(models, a, min(a + 4, 10))["scaleface"]["embedding"] for a in (0, 4, 8)])
    assert got["emb_sum"] == pytest.approx(float(emb.astype(np.float64).sum()), rel=1e-6)


H5_SCRIPT = """
import json
import h5py
import numpy as np

with h5py.File("toy.h5", "r") as f:
    root = {k: type(v).__name__ for k, v in f.attrs.items()}
    out = {
        "root_types": root,
        "schema": int(f.attrs["schema"]),
        "dataset": f.attrs["dataset"],
        "checksum_arrays": [str(s) for s in f.attrs["checksum_arrays"]],
        "json_attributes": [str(s) for s in f.attrs["json_attributes"]],
        "models": json.loads(f.attrs["models"]),
        "labels": {k: [d.label for d in f[k].dims] for k in ("images/landmarks", "models/pfe/sigma_sq", "protocols/tpl/pairs")},
        "flag_values": f["images/status"].attrs["flag_values"].tolist(),
        "flag_meanings": f["images/status"].attrs["flag_meanings"],
        "raw": bool(f["models/pfe/embedding"].attrs["raw"]),
        "kind": f["models/scaleface/scale"].attrs["kind"],
        "subject": f["images/subject"][:].tolist(),
    }
print(json.dumps(out))
"""


def test_hdf5_store_has_native_attributes_and_dimension_labels(tmp_path):
    complete_store(tmp_path / "toy.h5")
    got = run_foreign(H5_SCRIPT, tmp_path)
    assert got["schema"] == SCHEMA_VERSION and got["dataset"] == "toy"
    assert got["root_types"]["schema"] == "int64" and got["root_types"]["dataset"] == "str"
    assert got["root_types"]["checksum_arrays"] == "ndarray"
    assert got["checksum_arrays"][-1] == "images/status"
    assert set(got["json_attributes"]) == {"models", "protocols", "identification", "creation_crc32", "package_versions", "extra"}
    assert got["models"]["pfe"]["family"] == "pfe"
    assert got["labels"] == {
        "images/landmarks": ["image", "point", "xy"],
        "models/pfe/sigma_sq": ["image", "dim"],
        "protocols/tpl/pairs": ["pair", "side"],
    }
    assert got["flag_values"] == sorted(STATUS_NAMES) and got["flag_meanings"].startswith("not_yet_done ok")
    assert got["raw"] is True and got["kind"] == "confidence"
    assert got["subject"] == make_tables().images.subject.tolist()
    with FeatureStore.open(tmp_path / "toy.h5") as s:  # and the project reads the same values back
        assert s.attrs["checksum_arrays"] == integrity.chunk_columns(s.models)
        assert s.attrs["n_images"] == 10 and isinstance(s.attrs["n_images"], int)


@pytest.mark.parametrize(
    "value",
    [
        1,
        -(2**63),
        2**63,
        1.5,
        True,
        "text",
        "1",
        "[1]",
        ["a", "b"],
        [1, 2],
        [1.5, 2.0],
        [],
        None,
        {"a": [1, {}]},
        [1, "a"],
        [True],
    ],
)
def test_hdf5_attributes_round_trip(tmp_path, value):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        encode_h5_attrs(f.attrs, {"x": value, "y": 0})
    with h5py.File(tmp_path / "a.h5", "r") as f:
        got = decode_h5_attrs(f.attrs)
    assert got == {"x": value, "y": 0} and type(got["x"]) is type(value)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_no_lock_files_inside_or_beside_a_complete_store(tmp_path, suffix):
    path = complete_store(tmp_path / f"toy{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    if suffix == ".zarr":
        assert not list(path.rglob("*.lock")) and not (path / ".locks").exists()
    store = FeatureStore.open(path, mode="r+")
    with store.writer([0]):  # while a writer holds chunk 0, its lock is outside the hierarchy
        lock = tmp_path / (
            f".{path.name}.locks/chunk-0000000.lock" if suffix == ".zarr" else f".{path.name}.write.lock"
        )
        assert lock.is_file()
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _consolidated_matches(path: Path) -> None:
    """The consolidated copy of every array's metadata equals the array's own zarr.json."""
    meta = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    arrays = {k: v for k, v in meta.items() if v["node_type"] == "array"}
    assert sorted(arrays) == sorted(KEYS)
    for key, m in arrays.items():
        assert m == json.loads((path / key / "zarr.json").read_text()), key


def test_consolidated_metadata_only_once_complete_and_after_resume_and_repair(tmp_path):
    path = tmp_path / "toy.zarr"
    store = create_store(path, make_tables(), make_models(), chunk_rows=4)
    fill(store, [0, 1])
    assert "consolidated_metadata" not in json.loads((path / "zarr.json").read_text())  # not complete yet
    fill(store)  # the resume completes it
    _consolidated_matches(path)
    store.close()
    integrity_file = path / "models/pfe/embedding/c/1/0"
    integrity_file.write_bytes(integrity_file.read_bytes()[:-3])  # damage, then repair what --repair does
    with FeatureStore.open(path, mode="r+", check=False) as s:
        damaged = sorted({d.chunk for d in integrity.verify(s) if not d.creation})
        assert damaged == [1]
        with s.writer(damaged) as w:
            w.mark_not_done(damaged)
        assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
        fill(s, damaged)
        assert integrity.verify(s) == []
    _consolidated_matches(path)


@pytest.mark.parametrize("name", ["toy.zarr", "toy.h5"])
def test_stores_written_before_still_open_verify_and_read(tmp_path, name):
    path = tmp_path / name
    src = LEGACY / name
    shutil.copytree(src, path) if src.is_dir() else shutil.copy(src, path)
    with FeatureStore.open(path) as s:
        assert s.chunk_done().all() and integrity.verify(s) == []
        assert s.attrs["manifest_digest"] == "abc" and s.attrs["schema"] == 1
        models = list(s.models.values())
        want = chunk_outputs(models, 4, 8)["pfe"]["sigma_sq"]
        np.testing.assert_array_equal(s.read("pfe", "sigma_sq")[4:8], want)
        assert s.status()[4] == STATUS_MISSING
    with FeatureStore.open(path, mode="r+") as s:  # resumed (nothing to do): still the same store
        fill(s)
        assert integrity.verify(s) == []


def test_docs_xarray_example_runs(tmp_path):
    """docs/store.md's xarray example, as written, on a complete store named toy.zarr."""
    text = (ROOT / "docs" / "store.md").read_text()
    found = re.search(r"<!-- xarray example -->\s*```python\n(.*?)```", text, re.S)
    assert found, "docs/store.md lost its xarray example"
    complete_store(tmp_path / "toy.zarr")
    code = (
        found.group(1)
        + "\nimport json\nprint(json.dumps({'mean_norm': float(mean_ok.mean()), 'children': sorted(tree['models'].children)}))\n"
    )
    got = run_foreign(code, tmp_path)
    assert got["children"] == ["pfe", "scaleface"]
    emb = np.concatenate([chunk_outputs(make_models(), a, min(a + 4, 10))["scaleface"]["embedding"] for a in (0, 4, 8)])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    keep = np.arange(10) != 4
    assert got["mean_norm"] == pytest.approx(float(unit[keep].mean(axis=0).mean()), rel=1e-5)


def test_a_waiter_on_a_lock_its_holder_deletes_locks_the_file_at_the_path(tmp_path):
    """Lock files are deleted on release; a process that was waiting on the deleted file must notice and
    lock the file now at the path, so two holders never coexist."""
    import threading

    from featurestore.errors import StoreLockedError
    from featurestore.locks import FileLock

    path = tmp_path / "x.lock"
    holder = FileLock(path, "x")
    holder.acquire()
    waiter = FileLock(path, "x", wait=True)
    got = threading.Event()
    thread = threading.Thread(target=lambda: (waiter.acquire(), got.set()))
    thread.start()
    assert not got.wait(0.3)  # blocked behind the holder
    holder.release()
    assert got.wait(10)
    thread.join()
    assert path.is_file() and os.stat(path).st_ino == os.fstat(waiter._fd).st_ino  # it holds the file at the path
    with pytest.raises(StoreLockedError, match="being written by another process"):
        FileLock(path, "x").acquire()
    waiter.release()
    assert not path.exists()
    FileLock(path, "x").acquire()  # free again
