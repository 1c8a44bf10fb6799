"""Helpers shared by the layout readers: locating manifest files under the root, mapping paths to rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import real_under
from facedata.readers._text import data_line_numbers


def locate(root: Path, manifest: Manifest, rel: str, key: str) -> tuple[Path, str]:
    """Resolved path (the one to open) and display name (relative to the data root) of a manifest file,
    escape-checked."""
    path = real_under(root, rel, source=f"{manifest.source}: {key}")
    return path, rel


def join_rel(base: str, name: str) -> str:
    """`base/name` as a POSIX relative path ('.' or '' base gives `name`)."""
    base = base.strip("/")
    return name if base in ("", ".") else f"{base}/{name}"


def join_rel_array(base: str, names: np.ndarray) -> np.ndarray:
    """Vectorised `join_rel` over an array of names."""
    base = base.strip("/")
    s = pd.Series(np.asarray(names, dtype=object)).astype(str)
    if base not in ("", "."):
        s = base + "/" + s
    return s.to_numpy(dtype=object)


LineOf = Callable[[int], int]
"""Maps a 0-based data row to its 1-based line in the file (computed only when an error is reported)."""


def line_finder(path: Path, header: bool = False, data: bytes | None = None) -> LineOf:
    """A LineOf for a text file (or its bytes `data`) read with blank lines skipped (and an optional header line)."""

    def line_of(row: int) -> int:
        lines = data_line_numbers(path, header=header, data=data)
        return int(lines[row]) if row < len(lines) else row + 1 + int(header)

    return line_of


def rows_for_paths(paths: np.ndarray, lookup: pd.Series, display: str, line_of: LineOf) -> np.ndarray:
    """Row index of each path via `lookup` (path -> row); DataError naming the line of the first unknown path."""
    idx = pd.Index(lookup.index).get_indexer(pd.Index(np.asarray(paths, dtype=object)))
    if (idx < 0).any():
        i = int(np.flatnonzero(idx < 0)[0])
        raise DataError(
            f"unknown image path {paths[i]!r} (not in the dataset's image list)", path=display, line=line_of(i)
        )
    return lookup.to_numpy()[idx]


def labels_01(values: np.ndarray, display: str, line_of: LineOf) -> np.ndarray:
    """Convert 0/1 labels to bool; DataError at the first line holding anything else."""
    v = np.asarray(values)
    bad = ~np.isin(v, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"label must be 0 or 1, got {_show(v[i])}", path=display, line=line_of(i))
    return v.astype(bool)


def known_ids(values: np.ndarray, known: np.ndarray, what: str, display: str, line_of: LineOf) -> None:
    """DataError at the first line whose id (e.g. a template in a pair) is not among `known`."""
    bad = ~np.isin(values, known)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"unknown {what} {_show(values[i])}", path=display, line=line_of(i))


def _show(value: object) -> str:
    """A value for an error message: numpy scalars as plain Python values."""
    return repr(value.item() if isinstance(value, np.generic) else value)
