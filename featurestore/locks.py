"""Advisory per-chunk write locks, so two writers of the same rows are refused, not interleaved.

flock() locks vanish with the process that held them, so a killed extraction never
leaves a stale lock behind and a rerun can resume at once. A holder deletes its lock file before
releasing it, so no lock files stay beside a finished store; whoever locks a file checks afterwards that
it is still the file at that path (not one a releasing holder just deleted) and otherwise tries again.
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
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # its folder was just removed by a releasing holder
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
                os.close(fd)
                raise StoreLockedError(
                    f"{self.what} is being written by another process ({holder}); "
                    f"lock file {self.path}. Wait for it, or write a different --shard."
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder deleted on release: lock the one at the path now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            if _same_file(self._fd, self.path):
                try:
                    self.path.unlink()  # while still holding it, so nobody locks the file being deleted
                except OSError:
                    pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


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
