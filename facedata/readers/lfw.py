"""LFW's pairs.txt (header `folds pairs`, then per fold `name i j` matched and `name1 i name2 j`
mismatched lines) over the aligned `<name>/<name>_<iiii>.jpg` images: an image-level protocol.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import check_relative_names
from facedata.readers._text import check_field, require_file
from facedata.readers.common import join_rel, locate
from featurestore.schema import DatasetTables, ImageTable, Protocol

_NAME = re.compile(r"^[^/\\]+$")


def _index(value: str, display: str, lineno: int) -> int:
    if check_field(value, "int") is not None:  # ASCII digits only (int() also takes '1_0', '١')
        raise DataError(f"image number {value!r} is not an integer", path=display, line=lineno)
    i = int(value)
    if i < 1:
        raise DataError(f"image number {i} must be at least 1", path=display, line=lineno)
    return i


def parse_pairs_txt(path: Path, display: str) -> tuple[list[tuple[str, int, str, int]], np.ndarray, np.ndarray]:
    """Pairs (name1, i1, name2, i2), genuine flags and fold numbers of an LFW-style pairs.txt.

    The header's fold and pair counts are checked against the lines that follow.
    """
    require_file(path, display)
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(n, raw.split()) for n, raw in enumerate(f, start=1) if raw.strip()]
    if not lines:
        raise DataError("empty file (expected a header line `folds pairs_per_fold`)", path=display)
    hline, head = lines[0]
    if len(head) != 2 or not all(h.isascii() and h.isdigit() for h in head):
        raise DataError(f"header must be `folds pairs_per_fold`, got {' '.join(head)!r}", path=display, line=hline)
    folds, per = int(head[0]), int(head[1])
    body = lines[1:]
    if len(body) != 2 * folds * per:
        raise DataError(
            f"header says {folds} folds x {per} matched + {per} mismatched = {2 * folds * per} pairs, "
            f"file has {len(body)}",
            path=display,
            line=hline,
        )
    pairs: list[tuple[str, int, str, int]] = []
    genuine = np.zeros(len(body), dtype=bool)
    fold = np.repeat(np.arange(folds), 2 * per) if per else np.zeros(0, dtype=np.int64)
    for k, (lineno, f) in enumerate(body):
        if len(f) == 3:
            name, i, j = f[0], _index(f[1], display, lineno), _index(f[2], display, lineno)
            pairs.append((name, i, name, j))
            genuine[k] = True
        elif len(f) == 4:
            pairs.append((f[0], _index(f[1], display, lineno), f[2], _index(f[3], display, lineno)))
        else:
            why = f"expected 3 fields (same) or 4 fields (different), got {len(f)}"
            raise DataError(why, path=display, line=lineno)
        for name in (pairs[-1][0], pairs[-1][2]):
            if not _NAME.match(name) or name in (".", ".."):
                raise DataError(f"person name {name!r} is not a plain folder name", path=display, line=lineno)
    return pairs, genuine, fold


def lfw_image_name(name: str, number: int, ext: str = ".jpg") -> str:
    """`George_W_Bush`, 10 -> `George_W_Bush/George_W_Bush_0010.jpg` (LFW's naming)."""
    return f"{name}/{name}_{number:04d}{ext}"


def read_lfw(root: Path, manifest: Manifest) -> DatasetTables:
    """Images = every image any protocol's pairs.txt names (first-appearance order); subjects number
    the person names in sorted order; pairs are image row indices; folds go to `extra['folds']`."""
    ext = str(manifest.options.get("image_ext", ".jpg"))
    images_dir = manifest.file("images")
    parsed = {}
    for name, spec in manifest.protocols.items():
        path, disp = locate(root, manifest, spec.pairs, f"protocols.{name}.pairs")
        parsed[name] = parse_pairs_txt(path, disp)
    row_of: dict[tuple[str, int], int] = {}
    for pairs, _, _ in parsed.values():
        for n1, i1, n2, i2 in pairs:
            row_of.setdefault((n1, i1), len(row_of))
            row_of.setdefault((n2, i2), len(row_of))
    keys = list(row_of)
    people = sorted({k[0] for k in keys})
    subject_of = {p: s for s, p in enumerate(people)}
    paths = np.asarray([join_rel(images_dir, lfw_image_name(n, i, ext)) for n, i in keys], dtype=object)
    check_relative_names(paths, f"{manifest.source}: files.images")
    images = ImageTable(path=paths, subject=np.asarray([subject_of[n] for n, _ in keys], dtype=np.int64))
    protocols = {}
    folds = {}
    for name, (pairs, genuine, fold) in parsed.items():
        idx = np.asarray([(row_of[(a, i)], row_of[(b, j)]) for a, i, b, j in pairs], dtype=np.int64)
        protocols[name] = Protocol(
            name, idx.reshape(-1, 2), genuine, level="image", description=manifest.protocols[name].description
        )
        folds[name] = fold
    return DatasetTables(
        name=manifest.name,
        images=images,
        protocols=protocols,
        extra={"aligned": manifest.aligned, "folds": folds, "subject_names": people},
    )
