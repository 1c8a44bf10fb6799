"""insightface's IJB-B/IJB-C release: loose_crop/ images plus meta/*_face_tid_mid.txt,
*_name_5pts_score.txt and *_template_pair_label.txt (parsed as recognition/_evaluation_/ijb does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import check_relative_names
from facedata.readers._text import locate_bad_csv_line, read_columns, require_file
from facedata.readers.common import join_rel_array, known_ids, labels_01, line_finder, locate, rows_for_paths
from featurestore.schema import DatasetTables, ImageTable, Protocol


def read_insightface_ijb(root: Path, manifest: Manifest) -> DatasetTables:
    """One image row per line of face_tid_mid (name, template, media) with landmarks and detector
    score from name_5pts_score (same line order, names checked); template-level pair protocols."""
    tid_path, tid_disp = locate(root, manifest, manifest.file("face_tid_mid"), "files.face_tid_mid")
    meta = read_columns(tid_path, tid_disp, ("str", "int", "int"))
    names = meta[0].to_numpy(dtype=object)
    check_relative_names(names, tid_disp)

    pts_path, pts_disp = locate(root, manifest, manifest.file("name_5pts_score"), "files.name_5pts_score")
    pts = read_columns(pts_path, pts_disp, ("str",) + ("float",) * 11)
    if len(pts) != len(meta):
        raise DataError(f"{len(pts)} lines, but {tid_disp} has {len(meta)}", path=pts_disp)
    pts_names = pts[0].to_numpy(dtype=object)
    differ = pts_names != names
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise DataError(
            f"image name {pts_names[i]!r} differs from {names[i]!r} on the same line of {tid_disp}",
            path=pts_disp,
            line=line_finder(pts_path)(i),
        )
    landmarks = pts.iloc[:, 1:11].to_numpy(dtype=np.float32).reshape(-1, 5, 2)
    score = pts[11].to_numpy(dtype=np.float32)

    templates = meta[1].to_numpy(dtype=np.int64)
    subject = _template_subjects(root, manifest, templates)
    images = ImageTable(
        path=join_rel_array(manifest.file("images"), names),
        subject=subject,
        template=templates,
        media=meta[2].to_numpy(dtype=np.int64),
        detector_score=score,
        landmarks=landmarks,
    )

    unique_templates = np.unique(templates)
    protocols: dict[str, Protocol] = {}
    for name, spec in manifest.protocols.items():
        p_path, p_disp = locate(root, manifest, spec.pairs, f"protocols.{name}.pairs")
        if spec.level == "image":
            protocols[name] = _image_pairs(name, spec, p_path, p_disp, names)
            continue
        df = read_columns(p_path, p_disp, ("int", "int", "int"))
        pairs = df[[0, 1]].to_numpy(dtype=np.int64)
        line_of = line_finder(p_path)
        label = labels_01(df[2].to_numpy(), p_disp, line_of)
        for col in (0, 1):
            known_ids(pairs[:, col], unique_templates, "template", p_disp, line_of)
        protocols[name] = Protocol(name, pairs, label, level="template", description=spec.description)
    return DatasetTables(name=manifest.name, images=images, protocols=protocols, extra={"aligned": manifest.aligned})


def _image_pairs(name: str, spec, path: Path, display: str, names: np.ndarray) -> Protocol:
    """An image-level protocol `name1 name2 label` over the face_tid_mid image names (unique names only)."""
    df = read_columns(path, display, ("str", "str", "int"))
    line_of = line_finder(path)
    lookup = pd.Series(np.arange(len(names)), index=pd.Index(names))
    if lookup.index.has_duplicates:
        raise DataError(f"image-level protocol {name!r} needs unique image names in face_tid_mid", path=display)
    rows = np.stack([rows_for_paths(df[c].to_numpy(dtype=object), lookup, display, line_of) for c in (0, 1)], axis=1)
    label = labels_01(df[2].to_numpy(), display, line_of)
    return Protocol(name, rows, label, level="image", description=spec.description)


def _template_subjects(root: Path, manifest: Manifest, templates: np.ndarray) -> np.ndarray:
    """Subject of each row from the optional 1:N CSVs (TEMPLATE_ID,SUBJECT_ID,...); -1 where unknown."""
    files = manifest.files.get("template_subjects")
    if not files:
        return np.full(len(templates), -1, dtype=np.int64)
    frames = []
    for rel in files if isinstance(files, list) else [files]:
        path, disp = locate(root, manifest, rel, "files.template_subjects")
        frames.append(read_template_subject_csv(path, disp))
    table = pd.concat(frames, ignore_index=True).drop_duplicates()
    clash = table["template"].duplicated(keep=False)
    if clash.any():
        t = int(table.loc[clash, "template"].iloc[0])
        raise DataError(f"template {t} is given more than one subject", path=", ".join(map(str, files)))
    lookup = pd.Series(table["subject"].to_numpy(), index=table["template"].to_numpy())
    idx = pd.Index(lookup.index).get_indexer(templates)
    return np.where(idx >= 0, lookup.to_numpy()[np.maximum(idx, 0)], -1).astype(np.int64)


def read_template_subject_csv(path: Path, display: str) -> pd.DataFrame:
    """(template, subject) rows of an IJB CSV whose header has TEMPLATE_ID and SUBJECT_ID columns."""
    require_file(path, display)
    try:
        df = pd.read_csv(path, usecols=["TEMPLATE_ID", "SUBJECT_ID"], dtype=np.int64, engine="c")
    except (ValueError, pd.errors.ParserError) as exc:
        locate_bad_csv_line(path, display, int_columns=("TEMPLATE_ID", "SUBJECT_ID"))
        raise DataError(f"cannot parse: {exc}", path=display) from exc
    return df.rename(columns={"TEMPLATE_ID": "template", "SUBJECT_ID": "subject"})[["template", "subject"]]
