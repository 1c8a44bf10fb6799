"""A second process for figures: matplotlib holds the GIL while it lays out and renders, so two sets of figures
only draw at the same time in two processes. A command hands one set to `second_process` and draws the other
itself; both land in the same folder before the command records its output."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from featurestore.interrupts import ignore_in_worker


def load_figures() -> None:
    """A first job for the worker, while the caller still computes: import matplotlib and the figure code, and
    draw one small log-axis figure to PNG and PDF in memory, so the fonts, the mathtext parser (the 10^k tick
    labels) and both backends are loaded before the first real figure."""
    import io

    import matplotlib.pyplot as plt

    import analyze.figures  # noqa: F401

    fig, ax = plt.subplots(figsize=(2.0, 1.5))
    ax.plot([1e-6, 1e-3, 1.0], [0.1, 0.5, 0.9], label="warm-up")
    ax.set_xscale("log")
    ax.legend()
    for fmt in ("png", "pdf"):
        fig.savefig(io.BytesIO(), format=fmt, dpi=50, bbox_inches="tight")
    plt.close(fig)


def draw_split(submit: Callable[..., Future], draw: Callable[..., list[Any]], *args: Any, **kwargs: Any) -> list[Any]:
    """One command's figures drawn by two processes: `draw(*args, part=(0, 2), **kwargs)` in the worker (`submit`
    from `second_process`: the first, third, ... figure, so the larger half of an odd count, since the worker is
    warmed up by `load_figures` and this process is not), `part=(1, 2)` here, both waited for (an error in either
    is raised). Without a worker (`submit` runs at once: one core or figures off) `draw` makes them all here."""
    if submit is _run_here:
        return draw(*args, part=None, **kwargs)
    later = submit(draw, *args, part=(0, 2), **kwargs)
    mine = draw(*args, part=(1, 2), **kwargs)
    return later.result() + mine


def _run_here(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """`submit` without a second process: run now, return the finished future (or the one holding the error)."""
    done: Future = Future()
    try:
        done.set_result(fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - delivered by .result(), as a pool would
        done.set_exception(exc)
    return done


@contextmanager
def second_process(enabled: bool = True) -> Iterator[Callable[..., Future]]:
    """Yield a `submit(fn, *args, **kwargs) -> Future` that runs `fn` in one spawned worker process (SIGINT left to
    this one), or here at once with one core or `enabled` False. On leaving, the worker's job is waited for, so
    its files exist before the caller records or reports them, then the worker exits."""
    if not enabled or (os.cpu_count() or 1) < 2:
        yield _run_here
        return
    pool = ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=ignore_in_worker
    )

    def submit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """pool.submit with the call pickled here first: the executor pickles on a feeder thread, where a call
        that cannot be pickled (a local function, a patched one in a test) can leave `shutdown` waiting forever
        (seen on CPython 3.11); such a call runs here at once instead."""
        try:
            blob = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - whatever pickle refuses: the call is made here, with the same result
            return _run_here(fn, *args, **kwargs)
        return pool.submit(_call_pickled, blob)

    try:
        yield submit
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _call_pickled(blob: bytes) -> Any:
    """The worker's side of `submit`: unpickle the call and make it."""
    fn, args, kwargs = pickle.loads(blob)
    return fn(*args, **kwargs)
