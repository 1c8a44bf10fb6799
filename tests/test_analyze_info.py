"""`analyze info` prints a store's contents, works without torch, and fails clearly on non-stores."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from conftest import chunk_outputs
from torchless import run_without_torch

from analyze.cli import cli
from featurestore.store import create_store


def test_info_reports_counts_failures_and_provenance(tmp_path, tables, models):
    path = tmp_path / "toy.zarr"
    store = create_store(path, tables, models, chunk_rows=4, manifest_digest="d1g")
    with store.writer([0]) as w:
        w.write_chunk(0, np.array([1, 2, 3, 1]), chunk_outputs(models, 0, 4))
    res = CliRunner().invoke(cli, ["info", "--cache", str(path)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "dataset     toy  (manifest sha256 d1g)" in out
    assert "images      10  templates 5  chunks 3 x 4 rows" in out
    assert "progress    1/3 chunks done (33.3%)" in out
    assert "status      not yet done 6, ok 2, unreadable 1, missing 1" in out
    assert "row 1: id0/img_0001.jpg (unreadable)" in out
    assert "tpl              level template pairs 4  genuine 2" in out
    assert "outputs embedding, norm, sigma_sq, embedding_flip" in out
    assert "numpy" in out


def test_info_without_torch_and_on_bad_store(tmp_path, tables, models):
    path = tmp_path / "toy.h5"
    create_store(path, tables, models).close()
    res = run_without_torch(
        f"import sys; from analyze.cli import main; sys.argv=['analyze','info','--cache',{str(path)!r}]; main()"
    )
    assert res.returncode == 0, res.stderr
    assert "toy.h5 (hdf5, schema 2)" in res.stdout  # schema 2 since identification protocols
    res = run_without_torch(
        "import sys; from analyze.cli import main; "
        f"sys.argv=['analyze','info','--cache',{str(tmp_path / 'none.zarr')!r}]; main()"
    )
    assert res.returncode == 2
    assert "error: no store at" in res.stderr and "none.zarr" in res.stderr
