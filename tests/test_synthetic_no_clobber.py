"""`datasets synthesize` / `synthesize-store` never write over what they did not make: a folder holding
other files, or a path holding anything but a synthetic store, is refused and left byte-for-byte as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_models, make_tables
from facedata_fixtures import write_ijb

from facedata.errors import DataError
from facedata.synthetic import synthesize_dataset, synthesize_store
from featurestore.store import FeatureStore, create_store


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthesize_refuses_a_folder_of_real_data(tmp_path):
    root = tmp_path / "IJBC"
    write_ijb(root)  # a real-looking IJB-C layout with the same file names the generator writes
    before = snapshot(root)
    with pytest.raises(DataError, match=r"IJBC: .*not empty.*synthetic\.json.*refusing"):
        synthesize_dataset(root, preset="tiny", seed=0)
    assert snapshot(root) == before


def test_synthesize_refuses_a_file_and_reuses_its_own_folder(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(DataError, match="not a folder"):
        synthesize_dataset(tmp_path / "file", preset="tiny", seed=0)
    assert (tmp_path / "file").read_text() == "mine"
    out = tmp_path / "synth"
    out.mkdir()  # an empty folder is fine
    synthesize_dataset(out, preset="tiny", seed=0)
    first = snapshot(out)
    synthesize_dataset(out, preset="tiny", seed=0)  # its own earlier output may be rewritten
    assert snapshot(out) == first
    assert json.loads((out / "synthetic.json").read_text())["dataset"] == "ijbc"


def test_synthesize_store_refuses_what_is_not_its_store(tmp_path):
    folder = tmp_path / "mine.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"mine\.zarr: .*not a synthetic store.*refusing"):
        synthesize_store(folder, "tiny-store", seed=0, progress=False)
    assert (folder / "notes.txt").read_text() == "keep me"
    h5 = tmp_path / "real.h5"
    h5.write_bytes(b"an HDF5 file of someone else")
    with pytest.raises(DataError, match="not a synthetic store"):
        synthesize_store(h5, "tiny-store", seed=0, progress=False)
    assert h5.read_bytes() == b"an HDF5 file of someone else"
    out = synthesize_store(tmp_path / "s.zarr", "tiny-store", seed=0, progress=False)
    assert synthesize_store(out, "tiny-store", seed=1, progress=False) == out  # its own store: replaced


def test_synthesize_store_never_replaces_an_extracted_store(tmp_path):
    real = tmp_path / "ijbc.zarr"
    create_store(real, make_tables(), make_models()).close()
    with pytest.raises(DataError, match=r"ijbc\.zarr: .*not a synthetic store"):
        synthesize_store(real, "tiny-store", seed=0, progress=False)
    with FeatureStore.open(real) as s:
        assert s.attrs["dataset"] == "toy" and len(s.images()) == 10


def test_cli_synthesize_into_real_data_exits_2_with_one_line(tmp_path):
    root = tmp_path / "IJBC"
    write_ijb(root)
    before = snapshot(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-c", "from facedata.cli import main; main()", "synthesize", str(root)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
    assert "refusing" in res.stderr and snapshot(root) == before
