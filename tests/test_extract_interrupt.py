"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM during `extract`: one line
saying what is done and how to resume, exit 130/143, no traceback (DataLoader workers included), and the
rerun gives the store an uninterrupted run gives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from ijb_fixture import extract_cmd, write_ijb

from featurestore.errors import StoreError
from featurestore.store import FeatureStore

N_IMAGES, CHUNK_ROWS = 24, 2
N_CHUNKS = N_IMAGES // CHUNK_ROWS


def _cmd(root, out, workers):
    return extract_cmd(root, out, workers=workers)


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
"""One torch thread per run: on a busy machine this is faster, and every run of the test uses the same."""


def _done(path) -> int:
    try:
        with FeatureStore.open(path) as s:
            return int(s.chunk_done().sum())
    except (StoreError, OSError, KeyError, ValueError):
        return 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interrupt")
    root = write_ijb(tmp / "data", n=N_IMAGES, missing=(9,))
    full = tmp / "full.zarr"
    subprocess.run(_cmd(root, full, 0), check=True, capture_output=True, timeout=600, env=ENV)
    return root, full


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, workers, to_group",
    [
        (signal.SIGINT, 0, True),
        (signal.SIGINT, 1, True),
        (signal.SIGTERM, 0, False),
        (signal.SIGTERM, 1, False),
    ],
    ids=["SIGINT-workers0", "SIGINT-workers1", "SIGTERM-workers0", "SIGTERM-workers1"],
)
def test_signal_then_resume_equals_uninterrupted(tmp_path, uninterrupted, signum, workers, to_group):
    root, full = uninterrupted
    out = tmp_path / "stopped.zarr"
    proc = subprocess.Popen(
        _cmd(root, out, workers),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=ENV,
    )
    deadline = time.time() + 300
    while _done(out) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if to_group:  # Ctrl-C in a terminal: the main process and its DataLoader workers all get SIGINT
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, err
    name = signal.Signals(signum).name
    m = re.fullmatch(
        rf"interrupted \({name}\): (\d+) of {N_CHUNKS} chunks of {re.escape(str(out))} are done "
        r"\((\d+) written this run, each whole\); run the same command again to resume from there",
        lines[0],
    )
    assert m, lines[0]
    done, written = int(m.group(1)), int(m.group(2))
    assert done == written == _done(out), "the message must say what the store holds"
    assert 2 <= done < N_CHUNKS, f"the signal landed after {done} of {N_CHUNKS} chunks"

    res = subprocess.run(_cmd(root, out, workers), check=True, capture_output=True, text=True, timeout=600, env=ENV)
    assert f"{N_CHUNKS - done} written, {done} already done" in res.stderr
    with FeatureStore.open(full) as a, FeatureStore.open(out) as b:
        assert b.chunk_done().all()
        np.testing.assert_array_equal(a.status(), b.status())
        for model, spec in a.models.items():
            for output in spec.outputs:
                np.testing.assert_array_equal(b.read(model, output), a.read(model, output), err_msg=f"{model}/{output}")
