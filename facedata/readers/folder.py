"""A tree `<identity>/<image>` of aligned faces, with an optional headerless pairs CSV
(`left,right,label`, paths relative to the data root) giving an image-level protocol.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import check_relative_names
from facedata.readers._text import read_columns
from facedata.readers.common import join_rel, labels_01, line_finder, locate, rows_for_paths
from featurestore.schema import DatasetTables, ImageTable, Protocol

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_pairs_csv(root: Path, manifest: Manifest, lookup: pd.Series) -> dict[str, Protocol]:
    """Each protocol's `left,right,label` CSV (paths relative to the root) as image-row pairs."""
    protocols = {}
    for name, spec in manifest.protocols.items():
        path, disp = locate(root, manifest, spec.pairs, f"protocols.{name}.pairs")
        df = read_columns(path, disp, ("str", "str", "int"), sep=",")
        line_of = line_finder(path)
        left = df[0].str.strip().to_numpy(dtype=object)
        right = df[1].str.strip().to_numpy(dtype=object)
        for col in (left, right):
            check_relative_names(col, disp)
        pairs = np.stack(
            [rows_for_paths(left, lookup, disp, line_of), rows_for_paths(right, lookup, disp, line_of)], axis=1
        )
        label = labels_01(df[2].to_numpy(), disp, line_of)
        protocols[name] = Protocol(name, pairs, label, level="image", description=spec.description)
    return protocols


def read_folder(root: Path, manifest: Manifest) -> DatasetTables:
    """Rows = image files two levels below files.images (default the root), sorted by identity then
    name; subject = rank of the identity folder name; identity names go to `extra['subject_names']`."""
    images_rel = manifest.files.get("images", ".")
    base, disp = locate(root, manifest, images_rel, "files.images")
    if not base.is_dir():
        raise DataError("image folder not found" if not base.exists() else "not a directory", path=disp)
    exts = tuple(e.lower() for e in manifest.options.get("extensions", IMAGE_EXTENSIONS))
    identities = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
    paths: list[str] = []
    subjects: list[int] = []
    for s, ident in enumerate(identities):
        files = sorted(
            e.name
            for e in os.scandir(base / ident)
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(exts)
        )
        paths.extend(join_rel(images_rel, f"{ident}/{f}") for f in files)
        subjects.extend([s] * len(files))
    path_arr = np.asarray(paths, dtype=object)
    images = ImageTable(path=path_arr, subject=np.asarray(subjects, dtype=np.int64))
    lookup = pd.Series(np.arange(len(path_arr)), index=path_arr)
    protocols = read_pairs_csv(root, manifest, lookup)
    return DatasetTables(
        name=manifest.name,
        images=images,
        protocols=protocols,
        extra={"aligned": manifest.aligned, "subject_names": identities},
    )
