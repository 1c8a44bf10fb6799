"""SIGINT and SIGTERM as one exception, so every command can say what is done and how to resume.

`run_cli` installs `raise_on_signals`: both signals raise `Interrupted` (a BaseException, so no
`except Exception` swallows it and click does not turn it into a bare Abort). A command that knows
what it was doing catches it, records `resume_hint`, and re-raises; `run_cli` prints one line and
exits 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(BaseException):
    """The process got SIGINT or SIGTERM; `message` says what was done and how to resume."""

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum = signum
        self.message = message
        super().__init__(signum, message)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def with_message(self, message: str) -> Interrupted:
        """The same interrupt carrying `message` (the innermost command that knows most sets it)."""
        self.message = self.message or message
        return self


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def raise_on_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the block, `signals` raise Interrupted in the main thread; the old handlers come back after."""
    old = {}
    for s in signals:
        try:
            old[s] = signal.signal(s, _raise)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def ignore_in_worker() -> None:
    """For worker processes (DataLoader, pools): leave SIGINT/SIGTERM to the parent, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
