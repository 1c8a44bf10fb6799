"""Where an analyze run's time went: wall seconds per stage (read, fuse, score, ...), for summary.json.

Stages are timed on the thread that opens them and exclusively: time inside a nested `stage` counts for the inner
stage only, so the stages add up to the run's timed wall time. Work handed to pool threads or Dask tasks counts
for the stage open while the caller waits for it. Outside a `timed_run`, `stage` costs one lookup and records
nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

STAGES = ("read", "fuse", "pairs", "score", "uncertainty", "sort", "curves", "figures", "write")
"""The stage names summary.json lists first, in this order (others follow in the order first seen)."""


class StageTimes:
    """Exclusive wall seconds per stage of one run, and the stack of stages open on the run's thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []  # [name, start of its current slice]
        self.start = time.perf_counter()

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        if self._stack:
            self._charge(self._stack[-1], now)
        self._stack.append([name, now])

    def leave(self) -> None:
        now = time.perf_counter()
        self._charge(self._stack.pop(), now)
        if self._stack:
            self._stack[-1][1] = now

    def _charge(self, entry: list, now: float) -> None:
        self.seconds[entry[0]] = self.seconds.get(entry[0], 0.0) + now - entry[1]

    def as_dict(self) -> dict[str, float]:
        """Seconds per stage (known stages first), rounded to milliseconds, plus `other` (the untimed rest of the
        wall time so far) and `total`."""
        total = time.perf_counter() - self.start
        names = [s for s in STAGES if s in self.seconds] + [s for s in self.seconds if s not in STAGES]
        out = {name: round(self.seconds[name], 3) for name in names}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 3)
        out["total"] = round(total, 3)
        return out

    def line(self) -> str:
        """One line for the terminal: `time: read 1.2 s, fuse 0.4 s, ..., total 9.8 s`."""
        d = self.as_dict()
        return "time: " + ", ".join(f"{name} {value:.1f} s" for name, value in d.items())


_current: ContextVar[StageTimes | None] = ContextVar("analyze_stage_times", default=None)


@contextmanager
def timed_run() -> Iterator[StageTimes]:
    """Collect the stage times of everything run inside (on this thread) into a fresh StageTimes."""
    times = StageTimes()
    token = _current.set(times)
    try:
        yield times
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the wall time inside towards stage `name` of the current timed run (if any)."""
    times = _current.get()
    if times is None:
        yield
        return
    times.enter(name)
    try:
        yield
    finally:
        times.leave()


def timed(name: str) -> Callable[[Callable], Callable]:
    """Decorator: every call of the function counts towards stage `name` (see `stage`)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with stage(name):
                return fn(*args, **kwargs)

        return inner

    return wrap
