"""Resolve dataset-relative paths under a data root, refusing any that escape it."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from facedata.errors import DataError

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


def resolve_under(root: str | Path, rel: str | Path, source: str | None = None) -> Path:
    """Join `rel` onto `root`, refusing absolute paths and `..` or symlink escapes from the root.

    `source` (e.g. ``"data_manifests/ijbc.yaml: files.images"``) names where `rel` was read, for the error.
    """
    rel_s = str(rel)
    where = f" (from {source})" if source else ""
    reason = _escape_reason(rel_s)
    if reason is not None:
        raise DataError(f"path {rel_s!r}{where}: {reason}", path=source)
    root_p = Path(root)
    joined = root_p / rel_s
    real_root = Path(os.path.realpath(root_p))
    real = Path(os.path.realpath(joined))
    if real != real_root and real_root not in real.parents:
        raise DataError(f"path {rel_s!r}{where} resolves to {real}, outside the data root {real_root}", path=source)
    return joined


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
