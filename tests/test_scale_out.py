"""Scale-out: a 2-worker dask.distributed LocalCluster gives the threaded run's tables, and two
`extract --shard i/2` processes fill one store exactly as one process does."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from analysis_fixture import build_store
from click.testing import CliRunner
from ijb_fixture import write_ijb

from analyze.cli import cli as analyze_cli
from featurestore.store import FeatureStore


@pytest.mark.slow
def test_local_cluster_tables_equal_threaded(tmp_path):
    store = build_store(tmp_path / "s.h5")  # HDF5: the workers must open the file themselves
    store.close()
    base = ["reject", "--cache", str(store.path), "--far", "0.05", "--far", "0.1", "--rejected", "0:0.5:6",
            "--no-figures", "--level", "template", "--protocol", "templates"]
    runner = CliRunner()
    res = runner.invoke(analyze_cli, [*base, "--out", str(tmp_path / "threads")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(analyze_cli, [*base, "--out", str(tmp_path / "cluster"), "--cluster", "local:2"])
    assert res.exit_code == 0, res.output
    a = pd.read_parquet(tmp_path / "threads" / "reject.parquet")
    b = pd.read_parquet(tmp_path / "cluster" / "reject.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert "LocalCluster with 2 workers" in (tmp_path / "cluster" / "summary.json").read_text()


def _extract(root, out, shard):
    cmd = [sys.executable, "-c", "from extract.cli import main; main()", "--dataset", "ijbc", "--data-root", str(root),
           "--random-init", "--config", "arcface_r18", "--device", "cpu", "--workers", "0", "--quiet",
           "--chunk-rows", "4", "--batch-size", "4", "--out", str(out), "--shard", shard]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_shard_processes_equal_one_process(tmp_path):
    root = write_ijb(tmp_path / "data", n=14, corrupt=(5,))
    one = _extract(root, tmp_path / "one.zarr", "0/1")
    assert one.wait(300) == 0, one.stderr.read()
    procs = [_extract(root, tmp_path / "two.zarr", f"{i}/2") for i in range(2)]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read()
    with FeatureStore.open(tmp_path / "one.zarr") as a, FeatureStore.open(tmp_path / "two.zarr") as b:
        assert b.chunk_done().all()
        np.testing.assert_array_equal(a.status(), b.status())
        for name, spec in a.models.items():
            for out in spec.outputs:
                np.testing.assert_allclose(b.read(name, out), a.read(name, out), rtol=1e-5, atol=1e-6, equal_nan=True)
