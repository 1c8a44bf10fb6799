"""Advisory per-chunk write locks, so two writers of the same rows are refused, not interleaved.

flock() locks vanish with the process that held them, so a killed extraction never
leaves a stale lock behind and a rerun can resume at once.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .errors import StoreLockedError


class FileLock:
    """An exclusive flock on one file (refused at once if held, or waited for); the file records who holds it."""

    def __init__(self, path: Path, what: str, wait: bool = False) -> None:
        self.path = Path(path)
        self.what = what
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise StoreLockedError(
                f"{self.what} is being written by another process ({holder}); "
                f"lock file {self.path}. Wait for it, or write a different --shard."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LockSet:
    """Several FileLocks taken together: all or none."""

    def __init__(self, locks: list[FileLock]) -> None:
        self.locks = locks
        self._held: list[FileLock] = []

    def acquire(self) -> None:
        try:
            for lock in self.locks:
                lock.acquire()
                self._held.append(lock)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for lock in reversed(self._held):
            lock.release()
        self._held.clear()
