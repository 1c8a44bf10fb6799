"""A CSV or Parquet image list (columns path, subject, optional template and media) with optional
pairs tables (`left,right,label`: image paths for level image, template ids for level template).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import check_relative_names
from facedata.readers._text import require_file
from facedata.readers.common import _show, known_ids, labels_01, locate, rows_for_paths
from featurestore.schema import DatasetTables, ImageTable, Protocol


def _load(path: Path, display: str, header_line: bool = True) -> tuple[pd.DataFrame, int]:
    """The table and the file line of its first row (CSV: 2 after the header; Parquet rows count from 1)."""
    require_file(path, display)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path), 1
        return pd.read_csv(path, engine="c", keep_default_na=False, dtype=str, skipinitialspace=True), 2
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise DataError(f"cannot read table: {exc}", path=display) from exc


def _int_column(df: pd.DataFrame, col: str, display: str, first: int) -> np.ndarray:
    s = df[col]
    if pd.api.types.is_integer_dtype(s):
        return s.to_numpy(dtype=np.int64)
    num = pd.to_numeric(s.astype(str).str.strip(), errors="coerce")
    bad = num.isna() | (num != np.round(num))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{col} {_show(s.iloc[i])} is not an integer", path=display, line=first + i)
    return num.to_numpy(dtype=np.int64)


def _need(df: pd.DataFrame, cols: tuple[str, ...], display: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column {missing[0]!r} (found: {', '.join(map(str, df.columns))})", path=display, line=1
        )


def read_table(root: Path, manifest: Manifest) -> DatasetTables:
    """Rows of the list in file order; subject is used as given when integer, else numbered in
    sorted order of the names (kept in `extra['subject_names']`)."""
    path, disp = locate(root, manifest, manifest.file("list"), "files.list")
    df, first = _load(path, disp)
    _need(df, ("path", "subject"), disp)
    paths = df["path"].astype(str).str.strip().to_numpy(dtype=object)
    check_relative_names(paths, disp, first_line=first)
    dup = pd.Series(paths).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"path {paths[i]!r} listed twice", path=disp, line=first + i)
    extra: dict = {"aligned": manifest.aligned}
    subj = df["subject"]
    as_num = (
        pd.to_numeric(subj.astype(str).str.strip(), errors="coerce")
        if not pd.api.types.is_integer_dtype(subj)
        else subj
    )
    if pd.api.types.is_integer_dtype(subj) or (as_num.notna().all() and (as_num == np.round(as_num)).all()):
        subject = np.asarray(as_num, dtype=np.int64)
    else:
        names = sorted(set(subj.astype(str)))
        extra["subject_names"] = names
        subject = pd.Index(names).get_indexer(subj.astype(str))
    template = _int_column(df, "template", disp, first) if "template" in df.columns else None
    media = _int_column(df, "media", disp, first) if "media" in df.columns else None
    images = ImageTable(path=paths, subject=subject, template=template, media=media)
    lookup = pd.Series(np.arange(len(paths)), index=paths)
    protocols = {}
    for name, spec in manifest.protocols.items():
        p_path, p_disp = locate(root, manifest, spec.pairs, f"protocols.{name}.pairs")
        pdf, pfirst = _load(p_path, p_disp)
        _need(pdf, ("left", "right", "label"), p_disp)

        def line_of(i: int, pfirst: int = pfirst) -> int:
            return pfirst + i

        if spec.level == "image":
            left = pdf["left"].astype(str).str.strip().to_numpy(dtype=object)
            right = pdf["right"].astype(str).str.strip().to_numpy(dtype=object)
            pairs = np.stack(
                [rows_for_paths(left, lookup, p_disp, line_of), rows_for_paths(right, lookup, p_disp, line_of)], axis=1
            )
        else:
            if template is None:
                raise DataError(f"protocol {name!r} is template-level but the list has no 'template' column", path=disp)
            pairs = np.stack([_int_column(pdf, c, p_disp, pfirst) for c in ("left", "right")], axis=1)
            known = np.unique(template)
            for col in (0, 1):
                known_ids(pairs[:, col], known, "template", p_disp, line_of)
        label = labels_01(_int_column(pdf, "label", p_disp, pfirst), p_disp, line_of)
        protocols[name] = Protocol(name, pairs, label, level=spec.level, description=spec.description)
    return DatasetTables(name=manifest.name, images=images, protocols=protocols, extra=extra)
