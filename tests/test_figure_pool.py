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


def _figures(prefix: str, n: int):
    import matplotlib.pyplot as plt

    for k in range(n):
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [0, k])
        yield f"{prefix}{k}", fig


def _draw_five(out_dir: str, part=None) -> list[str]:
    from analyze.figures import save_figure_sets

    sets = [(_figures("f", 3), 40), (_figures("g", 2), 40)]
    return [p.name for p in save_figure_sets(sets, out_dir, part)]


def test_figure_set_parts_split_the_figures_between_processes(tmp_path):
    import matplotlib.pyplot as plt

    whole = _draw_five(str(tmp_path / "whole"))
    assert whole == [f"{s}.{e}" for s in ("f0", "f1", "f2", "g0", "g1") for e in ("png", "pdf")]
    first, second = _draw_five(str(tmp_path / "a"), (0, 2)), _draw_five(str(tmp_path / "b"), (1, 2))
    assert first == [f"{s}.{e}" for s in ("f0", "f2", "g1") for e in ("png", "pdf")]
    assert second == [f"{s}.{e}" for s in ("f1", "g0") for e in ("png", "pdf")]
    assert not plt.get_fignums()  # the skipped figures were closed too


@pytest.mark.parametrize("enabled", [True, False])
def test_draw_split_makes_every_figure_once(tmp_path, enabled):
    from analyze.figure_pool import draw_split, load_figures

    with second_process(enabled) as submit:
        submit(load_figures)
        names = draw_split(submit, _draw_five, str(tmp_path / "out"))
    assert sorted(names) == sorted(f"{s}.{e}" for s in ("f0", "f1", "f2", "g0", "g1") for e in ("png", "pdf"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the job runs in this process")
def test_a_call_that_cannot_be_pickled_runs_here_and_leaving_does_not_hang(tmp_path):
    """The executor would pickle the call on its feeder thread, where a failure could leave shutdown waiting
    forever; such a call is made here instead, with its result or its error."""
    target = tmp_path / "pid.txt"

    def local(path: str) -> int:  # a local function: pickle refuses it
        Path(path).write_text(str(os.getpid()))
        return os.getpid()

    with second_process() as submit:
        assert submit(local, str(target)).result() == os.getpid()

        def failing() -> None:
            raise ValueError("no figure")

        with pytest.raises(ValueError, match="no figure"):
            submit(failing).result()
        assert submit(_write_pid, str(tmp_path / "other")).result() != os.getpid()  # picklable: the worker
