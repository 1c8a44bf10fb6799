"""NIST IJB-C 1:1 protocol CSVs (test1: enroll_templates.csv, verif_templates.csv, match.csv) over
images aligned beforehand; a pair is genuine when its two templates have the same SUBJECT_ID.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import check_relative_names
from facedata.readers._text import locate_bad_csv_line, read_columns, require_file
from facedata.readers.common import join_rel_array, known_ids, line_finder, locate
from featurestore.schema import DatasetTables, ImageTable, Protocol

_COLUMNS = ("TEMPLATE_ID", "SUBJECT_ID", "FILENAME")


def read_template_csv(path: Path, display: str) -> pd.DataFrame:
    """TEMPLATE_ID, SUBJECT_ID, FILENAME of a NIST template CSV (one row per template member)."""
    require_file(path, display)
    try:
        df = pd.read_csv(
            path,
            usecols=list(_COLUMNS),
            dtype={"TEMPLATE_ID": np.int64, "SUBJECT_ID": np.int64, "FILENAME": object},
            engine="c",
            keep_default_na=False,
            skipinitialspace=True,
        )
    except (ValueError, pd.errors.ParserError) as exc:
        locate_bad_csv_line(path, display, int_columns=("TEMPLATE_ID", "SUBJECT_ID"), str_columns=("FILENAME",))
        raise DataError(f"cannot parse: {exc}", path=display) from exc
    empty = df["FILENAME"].astype(str).str.strip() == ""
    if empty.any():
        locate_bad_csv_line(path, display, int_columns=("TEMPLATE_ID", "SUBJECT_ID"), str_columns=("FILENAME",))
    return df


def media_keys(filenames: pd.Series) -> pd.Series:
    """The media a NIST FILENAME belongs to: `img/12.jpg` -> `img/12`, `frames/345_6789.png` -> `frames/345`."""
    s = filenames.astype(str)
    stem = s.str.replace(r"\.[^./]*$", "", regex=True)
    is_frame = s.str.startswith("frames/")
    video = stem.str.replace(r"_[^_/]*$", "", regex=True)
    return stem.where(~is_frame, video)


def format_image_paths(df: pd.DataFrame, pattern: str, display: str) -> np.ndarray:
    """Apply the manifest's `options.image_path` pattern to each row (fields: filename, stem, flat,
    flat_stem, ext, subject, template), giving paths relative to files.images."""
    filename = df["FILENAME"].astype(str)
    stem = filename.str.replace(r"\.[^./]*$", "", regex=True)
    fields = {
        "filename": filename,
        "stem": stem,
        "flat": filename.str.replace("/", "_", regex=False),
        "flat_stem": stem.str.replace("/", "_", regex=False),
        "ext": filename.str.extract(r"(\.[^./]*)$", expand=False).fillna(""),
        "subject": df["SUBJECT_ID"].astype(str),
        "template": df["TEMPLATE_ID"].astype(str),
    }
    try:
        pattern.format(**{k: "x" for k in fields})
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join(fields)
        raise DataError(f"options.image_path {pattern!r}: unknown field {exc} (known: {known})", path=display) from None
    cols = [fields[k].tolist() for k in fields]
    keys = list(fields)
    return np.asarray([pattern.format(**dict(zip(keys, row))) for row in zip(*cols)], dtype=object)


def read_nist_ijbc(root: Path, manifest: Manifest) -> DatasetTables:
    """Rows of enroll_templates.csv then verif_templates.csv; template pairs from each protocol's
    headerless match file (enroll_tid,verif_tid), labelled genuine when the subjects are equal."""
    frames = []
    for key in ("enroll_templates", "verif_templates"):
        path, disp = locate(root, manifest, manifest.file(key), f"files.{key}")
        df = read_template_csv(path, disp)
        check_relative_names(df["FILENAME"].to_numpy(), disp, first_line=2)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    rel = format_image_paths(table, str(manifest.options.get("image_path", "{filename}")), manifest.source)
    check_relative_names(rel, f"{manifest.source}: options.image_path")
    media, _ = pd.factorize(media_keys(table["FILENAME"]))

    per_template = table.drop_duplicates("TEMPLATE_ID")
    subject_of = pd.Series(per_template["SUBJECT_ID"].to_numpy(), index=per_template["TEMPLATE_ID"].to_numpy())
    clash = table.groupby("TEMPLATE_ID")["SUBJECT_ID"].nunique()
    if (clash > 1).any():
        raise DataError(
            f"template {int(clash[clash > 1].index[0])} has rows with different SUBJECT_IDs",
            path=", ".join((manifest.file("enroll_templates"), manifest.file("verif_templates"))),
        )
    images = ImageTable(
        path=join_rel_array(manifest.file("images"), rel),
        subject=table["SUBJECT_ID"].to_numpy(),
        template=table["TEMPLATE_ID"].to_numpy(),
        media=media,
    )
    known = subject_of.index.to_numpy()
    protocols: dict[str, Protocol] = {}
    for name, spec in manifest.protocols.items():
        p_path, p_disp = locate(root, manifest, spec.pairs, f"protocols.{name}.pairs")
        df = read_columns(p_path, p_disp, ("int", "int"), sep=",")
        pairs = df.to_numpy(dtype=np.int64)
        line_of = line_finder(p_path)
        for col in (0, 1):
            known_ids(pairs[:, col], known, "template", p_disp, line_of)
        s = subject_of.to_numpy()
        idx = pd.Index(known)
        label = s[idx.get_indexer(pairs[:, 0])] == s[idx.get_indexer(pairs[:, 1])]
        protocols[name] = Protocol(name, pairs, label, level="template", description=spec.description)
    return DatasetTables(name=manifest.name, images=images, protocols=protocols, extra={"aligned": manifest.aligned})
