"""Resolve dataset-relative paths under a data root, refusing any that escape it."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import pandas as pd

from facedata.errors import DataError, MissingFileError

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_ESCAPE = re.compile(r"(?:^|[\\/])\.\.(?:[\\/]|$)")


def _escape_reason(rel: str) -> str | None:
    if rel == "":
        return "empty path"
    if rel.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(rel):
        return "absolute paths are not allowed"
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    depth = 0
    for part in parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return "escapes the data root"
        elif part not in (".", ""):
            depth += 1
    return None


def _inside(real_root: str, real: str) -> bool:
    """The one containment rule: `real` (a resolved path) is the resolved root or lies below it."""
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _resolve(root: str | Path, rel: str | Path, source: str | None) -> tuple[Path, Path]:
    """(joined, resolved) path of `rel` under `root`; DataError if `rel` is absolute or escapes the root."""
    rel_s = str(rel)
    where = f" (from {source})" if source else ""
    reason = _escape_reason(rel_s)
    if reason is not None:
        raise DataError(f"path {rel_s!r}{where}: {reason}", path=source)
    root_p = Path(root)
    joined = root_p / rel_s
    real_root = os.path.realpath(root_p)
    real = os.path.realpath(joined)
    if not _inside(real_root, real):
        raise DataError(f"path {rel_s!r}{where} resolves to {real}, outside the data root {real_root}", path=source)
    return joined, Path(real)


def resolve_under(root: str | Path, rel: str | Path, source: str | None = None) -> Path:
    """Join `rel` onto `root`, refusing absolute paths and `..` or symlink escapes from the root.

    Returns the joined (unresolved) path, for display and existence tests; to read a file use
    `real_under` (the resolved path) or, better, `open_under`, which also verifies what it opened.
    `source` (e.g. ``"data_manifests/ijbc.yaml: files.images"``) names where `rel` was read, for the error.
    """
    return _resolve(root, rel, source)[0]


def real_under(root: str | Path, rel: str | Path, source: str | None = None) -> Path:
    """The resolved (symlink-free) path of `rel` under `root`, with the checks of `resolve_under`."""
    return _resolve(root, rel, source)[1]


_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO planted in the tree must not block the open
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def open_under(root: str | Path, rel: str | Path, source: str | None = None, display: str | None = None) -> BinaryIO:
    """Open `rel` under `root` for binary reading so that no swapped symlink can make it read outside the root.

    The path is resolved and checked, the *resolved* path is opened (final component not followed), and
    the opened descriptor itself is verified to lie inside the root (`verify_open_file`). A missing or
    non-regular file raises MissingFileError naming `display` (default `rel`).
    """
    real = real_under(root, rel, source)
    return open_resolved(root, real, display if display is not None else str(rel))


def open_resolved(root: str | Path, real: str | Path, display: str) -> BinaryIO:
    """Open an already resolved path `real` and verify the descriptor is a regular file inside `root`."""
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        raise MissingFileError("file not found", path=display) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the resolved path became a symlink after it was checked
            raise DataError(f"became a symlink after the containment check ({real})", path=display) from None
        raise DataError(f"cannot open: {exc.strerror or exc}", path=display) from exc
    try:
        verify_open_file(fd, root, real, display)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MissingFileError("not a regular file", path=display)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def verify_open_file(fd: int, root: str | Path, real: str | Path, display: str) -> None:
    """DataError unless open descriptor `fd` lies inside `root`: on Linux the kernel's own path of the
    descriptor (/proc/self/fd) is checked; elsewhere fstat(fd) must be the same file as the resolved `real`."""
    real_root = os.path.realpath(root)
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        opened = None
    if opened is not None and opened.startswith(os.sep):
        if opened.endswith(" (deleted)") and not os.path.lexists(opened):
            opened = opened[: -len(" (deleted)")]
        if not _inside(real_root, opened):
            raise DataError(f"opened {opened}, outside the data root {real_root} (a symlink changed)", path=display)
        return
    st = os.fstat(fd)
    try:
        want = os.stat(real, follow_symlinks=False)
    except OSError:
        want = None
    if want is None or (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino):
        raise DataError(f"{real} changed while it was opened (a symlink changed)", path=display)
    if not _inside(real_root, os.path.realpath(real)):
        raise DataError(f"{real} now resolves outside the data root {real_root}", path=display)


def scan_under(root: str | Path, rels: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Check each distinct relative file name once without opening it: (missing names, [(name, resolved)]
    of names resolving outside the root through a symlinked file or folder), both sorted.

    Same rule as `resolve_under` (the root and every folder are resolved, then `_inside`); each folder is
    resolved once and each file costs one lstat, so IJB-C's 469k names take seconds.
    """
    root_s = os.fspath(root)
    real_root = os.path.realpath(root_s)
    dir_real: dict[str, tuple[str, bool]] = {}  # folder -> (resolved folder, inside the root)
    missing: list[str] = []
    outside: list[tuple[str, str]] = []
    lstat, is_link, sep = os.lstat, stat.S_ISLNK, os.sep
    for rel in sorted(set(rels)):
        if os.altsep:
            folder, name = os.path.split(rel)
        else:
            folder, _, name = rel.rpartition(sep)
        known = dir_real.get(folder)
        if known is None:
            rd = os.path.realpath(os.path.join(root_s, folder)) if folder else real_root
            known = dir_real[folder] = (rd, _inside(real_root, rd))
        rd, folder_inside = known
        if name in ("", ".", ".."):
            full = os.path.normpath(os.path.join(rd, name))
            inside = _inside(real_root, full)
        else:
            full, inside = (rd.rstrip(sep) + sep + name), folder_inside
        try:
            st = lstat(full)
        except OSError:
            st = None
        if st is not None and is_link(st.st_mode):
            full = os.path.realpath(full)
            exists, inside = os.path.exists(full), _inside(real_root, full)
        else:
            exists = st is not None
        if not inside:
            outside.append((rel, full))
        elif not exists:
            missing.append(rel)
    return missing, outside


def check_relative_names(names: pd.Series | np.ndarray, source: str, first_line: int = 1) -> None:
    """Refuse (vectorised, for 100k+ rows) any name that is absolute or contains a `..` component.

    `source` names the file the names came from; row i is reported as line `first_line + i`.
    """
    s = pd.Series(np.asarray(names, dtype=object)).astype(str)
    bad = s.str.match(r"^(?:[\\/]|[A-Za-z]:[\\/])") | s.str.contains(_ESCAPE.pattern, regex=True) | (s == "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        name = s.iloc[i]
        reason = _escape_reason(name) or "contains '..'"
        raise DataError(f"image path {name!r}: {reason}", path=source, line=first_line + i)
