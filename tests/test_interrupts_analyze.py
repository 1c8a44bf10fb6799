"""SIGINT and SIGTERM in `analyze` and `pipelines` (real signals to a subprocess): exit 130/143, exactly one
`interrupted` line saying what is done and how to resume, no traceback, no "failed: Abort:"; an interrupted
analysis folder stays marked incomplete and an interrupted pipeline continues on the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from analysis_fixture import build_store

from analyze.outputs import read_owner
from pipelines.runner import run_pipeline

REPO = Path(__file__).resolve().parents[1]

SLOW = """
import pathlib, sys, time
import analyze.experiments as e
def _slow(*args, **kwargs):
    pathlib.Path({sentinel!r}).write_text("started")
    time.sleep(60)
e.{func} = _slow
sys.argv = {argv!r}
from {module}.cli import main
main()
"""


def _interrupt(code: str, sentinel: Path, signum: int) -> subprocess.CompletedProcess:
    """Run `code`, send `signum` once it reaches the slow function, return the finished process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while not sentinel.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"never reached the slow step: {out}\n{err}")
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_interrupted_line(err: str, signum: int) -> str:
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Abort" not in err, err
    assert lines[0].startswith(f"interrupted ({signal.Signals(signum).name}): ")
    return lines[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_analyze_reject_signalled(tmp_path, signum):
    store = build_store(tmp_path / "toy.zarr")
    out, sentinel = tmp_path / "res", tmp_path / "started"
    argv = ["analyze", "reject", "--cache", str(store.path), "--far", "0.1", "--out", str(out)]
    res = _interrupt(SLOW.format(sentinel=str(sentinel), func="run_reject", argv=argv, module="analyze"), sentinel,
                     signum)  # fmt: skip
    assert res.returncode == 128 + signum, res.stderr
    line = _one_interrupted_line(res.stderr, signum)
    assert "analyze reject stopped before finishing" in line and "rerun the same command with --force" in line
    assert read_owner(out)["complete"] is False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_pipeline_signalled_in_a_step_then_continued(tmp_path, signum):
    store = build_store(tmp_path / "toy.zarr")
    spec = {
        "name": "interrupt-test",
        "steps": [
            {
                "id": "rej",
                "kind": "reject",
                "with": {"cache": str(store.path), "far": [0.1], "rejected": "0:0.5:3", "no_figures": True},
            },  # fmt: skip
            {"id": "roc", "kind": "roc", "with": {"cache": str(store.path), "far": [0.1], "no_figures": True}},
            {"id": "report", "kind": "report"},
        ],
    }
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
    run, sentinel = tmp_path / "run", tmp_path / "started"
    argv = ["pipelines", "run", str(pipeline), "--out", str(run)]
    res = _interrupt(SLOW.format(sentinel=str(sentinel), func="run_roc", argv=argv, module="pipelines"), sentinel,
                     signum)  # fmt: skip
    assert res.returncode == 128 + signum, res.stderr
    line = _one_interrupted_line(res.stderr, signum)
    assert "steps rej done; step roc interrupted; rerun the same command to continue" in line
    assert "failed" not in res.stderr
    log = (run / "pipeline.log").read_text()
    assert "interrupted during step roc (roc)" in log
    assert (run / "rej" / "step.json").is_file() and not (run / "roc" / "step.json").exists()

    summary = run_pipeline(pipeline, run)
    assert summary.actions == {"rej": "skipped", "roc": "ran", "report": "ran"}
    assert read_owner(run / "roc")["complete"] is True and (run / "roc" / "summary.json").is_file()
