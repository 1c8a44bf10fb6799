"""Errors raised while reading datasets: they always name the file (and line) at fault."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Bad or missing dataset input, located by `path` and, where it applies, a 1-based `line`.

    `str(err)` reads like ``meta/ijbc_face_tid_mid.txt:17: expected 3 fields, got 2``.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class MissingFileError(DataError):
    """A file the dataset names is absent or not a regular file (extract records such rows as missing)."""
