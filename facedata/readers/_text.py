"""Fast typed parsing of delimited text files, with a slow exact scan only to locate a bad line."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from facedata.errors import DataError

WHITESPACE = r"\s+"
_PANDAS_KIND = {"str": object, "int": np.int64, "float": np.float64}


def require_file(path: Path, display: str) -> None:
    """Raise a DataError naming `display` when `path` is not an existing file."""
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a regular file", path=display)


def _text(path: Path, data: bytes | None) -> TextIO:
    """The file's text for the line scans: from `data` when the bytes were already read, else from `path`."""
    if data is not None:
        return io.StringIO(data.decode("utf-8", errors="replace"), newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def read_columns(
    path: Path,
    display: str,
    kinds: tuple[str, ...],
    sep: str = WHITESPACE,
    header: bool = False,
    data: bytes | None = None,
) -> pd.DataFrame:
    """Read a headerless (or one-header-line) delimited file whose rows have exactly `kinds` fields.

    `kinds` entries are "str", "int" or "float". Parsing is pandas' C engine; on any failure the
    file is scanned line by line to report the first malformed line as `display:line`. `data`, when
    given, is the file's content already read (from a verified descriptor); `path` is then not opened.
    """
    if data is None:
        require_file(path, display)
    n = len(kinds)
    dtype = {i: _PANDAS_KIND[k] for i, k in enumerate(kinds)}
    try:
        df = pd.read_csv(
            io.BytesIO(data) if data is not None else path,
            sep=sep,
            header=None,
            skiprows=1 if header else 0,
            dtype=dtype,
            engine="c",
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=True,
            # whitespace-separated files are split like str.split() (as insightface reads them): a quote is
            # an ordinary character; comma-separated files follow CSV quoting, as the line scan does
            quoting=csv.QUOTE_NONE if sep == WHITESPACE else csv.QUOTE_MINIMAL,
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame({i: pd.Series([], dtype=_PANDAS_KIND[k]) for i, k in enumerate(kinds)})
    except (ValueError, pd.errors.ParserError, OverflowError) as exc:
        locate_bad_line(path, display, kinds, sep, header, data)
        raise DataError(f"cannot parse: {exc}", path=display) from exc
    if df.shape[1] != n:
        locate_bad_line(path, display, kinds, sep, header, data)
        raise DataError(f"expected {n} fields per line, got {df.shape[1]}", path=display)
    return df


def _split(line: str, sep: str) -> list[str]:
    """The fields of one line as `read_columns` parses them: str.split() for whitespace, else CSV rules."""
    if sep == WHITESPACE:
        return line.split()
    return next(csv.reader([line], delimiter=sep), [])


# what pandas' C parser accepts (ASCII digits only: Python's int()/float() also take '1_0' and other scripts' digits)
_INT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_FLOAT = re.compile(r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)\s*", re.ASCII | re.I)


def check_field(value: str, kind: str) -> str | None:
    """Why `value` is not a valid `kind` field (as the fast parser reads it), or None when it is."""
    if kind == "int":
        if not _INT.fullmatch(value):
            return f"{value!r} is not an integer"
        v = value.strip()
        if len(v.lstrip("+-").lstrip("0")) > 19 or not -(2**63) <= int(v) < 2**63:
            return f"{value!r} is out of the 64-bit integer range"
    elif kind == "float":
        if not _FLOAT.fullmatch(value) or math.isnan(float(value)):
            return f"{value!r} is not a number"
    elif value == "":
        return "empty field"
    return None


def locate_bad_line(
    path: Path, display: str, kinds: tuple[str, ...], sep: str, header: bool, data: bytes | None = None
) -> None:
    """Scan the file (or `data`) and raise a DataError at the first line whose field count or types are wrong."""
    with _text(path, data) as f:
        for lineno, raw in enumerate(f, start=1):
            if header and lineno == 1:
                continue
            line = raw.rstrip("\r\n")
            if line.strip() == "":
                continue
            fields = _split(line, sep)
            if len(fields) != len(kinds):
                raise DataError(f"expected {len(kinds)} fields, got {len(fields)}", path=display, line=lineno)
            for col, (value, kind) in enumerate(zip(fields, kinds), start=1):
                why = check_field(value, kind)
                if why is not None:
                    raise DataError(f"field {col}: {why}", path=display, line=lineno)


def data_line_numbers(path: Path, header: bool = False, data: bytes | None = None) -> np.ndarray:
    """1-based physical line numbers of the non-blank data lines (for error messages only)."""
    out = []
    with _text(path, data) as f:
        for lineno, raw in enumerate(f, start=1):
            if header and lineno == 1:
                continue
            if raw.strip():
                out.append(lineno)
    return np.asarray(out, dtype=np.int64)


def locate_bad_csv_line(
    path: Path, display: str, int_columns: tuple[str, ...] = (), str_columns: tuple[str, ...] = ()
) -> None:
    """Scan a CSV with a header line; raise at the first line with a wrong field count, an empty
    `str_columns` field or a non-integer `int_columns` field (or at line 1 for a missing column)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in int_columns + str_columns if c not in header]
        if missing:
            raise DataError(f"header lacks column {missing[0]} (found: {','.join(header)})", path=display, line=1)
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise DataError(f"expected {len(header)} fields, got {len(row)}", path=display, line=line)
            for c in int_columns:
                value = row[header.index(c)]
                if check_field(value, "int") is not None:
                    raise DataError(f"{c} {value!r} is not an integer", path=display, line=line)
            for c in str_columns:
                if row[header.index(c)].strip() == "":
                    raise DataError(f"{c} is empty", path=display, line=line)
