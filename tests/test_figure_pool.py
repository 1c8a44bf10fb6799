"""analyze.figure_pool.second_process: a job runs in another process, its errors reach .result(), leaving waits
for it (so its files exist before the caller records its folder), and disabled it runs here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analyze.figure_pool import second_process


def _write_pid(path: str) -> int:
    Path(path).write_text(str(os.getpid()))
    return os.getpid()


def _fail() -> None:
    raise ValueError("no figure")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the job runs in this process")
def test_job_runs_elsewhere_and_is_waited_for(tmp_path):
    target = tmp_path / "pid.txt"
    with second_process() as submit:
        submit(_write_pid, str(target))  # not waited for here: leaving the block waits
    assert target.is_file() and int(target.read_text()) != os.getpid()
    with second_process() as submit:
        with pytest.raises(ValueError, match="no figure"):
            submit(_fail).result()


def test_disabled_runs_here(tmp_path):
    with second_process(enabled=False) as submit:
        assert submit(_write_pid, str(tmp_path / "p")).result() == os.getpid()
        with pytest.raises(ValueError, match="no figure"):
            submit(_fail).result()
