"""A real kill (SIGKILL) in the middle of `extract`, then a rerun: the store equals an uninterrupted run's."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest
from ijb_fixture import extract_cmd, write_ijb

from featurestore.errors import StoreError
from featurestore.store import FeatureStore


def _cmd(root, out):
    return extract_cmd(root, out)


def _done(path) -> int:
    try:
        with FeatureStore.open(path) as s:
            return int(s.chunk_done().sum())
    except StoreError:
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    root = write_ijb(tmp_path / "data", n=24, missing=(9,))
    full = tmp_path / "full.zarr"
    subprocess.run(_cmd(root, full), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen(_cmd(root, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _done(killed) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done_at_kill = _done(killed)
    assert 2 <= done_at_kill < 12, f"kill landed after {done_at_kill} of 12 chunks"

    res = subprocess.run(_cmd(root, killed), check=True, capture_output=True, text=True, timeout=600)
    assert f"{12 - done_at_kill} written, {done_at_kill} already done" in res.stderr
    with FeatureStore.open(full) as a, FeatureStore.open(killed) as b:
        assert b.chunk_done().all()
        np.testing.assert_array_equal(a.status(), b.status())
        for name, spec in a.models.items():
            for out in spec.outputs:
                np.testing.assert_array_equal(b.read(name, out), a.read(name, out), err_msg=f"{name}/{out}")
