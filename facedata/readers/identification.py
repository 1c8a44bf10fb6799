"""1:N identification protocols from IJB template CSVs (insightface's `meta/ijbc_1N_gallery_G1.csv`, ...,
`ijbc_1N_probe_mixed.csv`; NIST's IJB-C `protocols/test4/gallery_G1.csv`, ...): one row per template
member with TEMPLATE_ID and SUBJECT_ID (FILENAME and the other columns are not needed).

The templates are those of the images table the layout reader already read (the 1:1 one): a template
with no image there, a template given two subjects, a subject that contradicts the images table, or a
template in two sets is an error naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from facedata.errors import DataError
from facedata.manifest import IdentificationSpec, Manifest
from facedata.paths import resolve_under
from facedata.readers._text import data_line_numbers
from facedata.readers.common import locate
from facedata.readers.insightface_ijb import read_template_subject_csv
from featurestore.schema import PROBE_SET, Identification, ImageTable, TemplateSet


def absent_identification(manifest: Manifest, root: Path) -> list[str]:
    """The optional 1:N protocols of which some file is not under `root` (they are left out, and named)."""
    out = []
    for name, spec in manifest.identification.items():
        files = [*spec.galleries.values(), spec.probes]
        if spec.optional and not all(resolve_under(root, f, source=manifest.source).exists() for f in files):
            out.append(name)
    return out


def read_identification(
    root: Path, manifest: Manifest, images: ImageTable, skip: list[str]
) -> dict[str, Identification]:
    """Every identification protocol of the manifest (except `skip`) over `images`."""
    return {
        name: read_one(root, manifest, spec, images)
        for name, spec in manifest.identification.items()
        if name not in skip
    }


def read_one(root: Path, manifest: Manifest, spec: IdentificationSpec, images: ImageTable) -> Identification:
    """One protocol: each gallery CSV and the probe CSV as a set of distinct templates with subjects."""
    known = pd.Series(images.subject, index=images.template).groupby(level=0).first()
    sets: dict[str, TemplateSet] = {}
    seen: dict[int, str] = {}
    for set_name, rel in [*spec.galleries.items(), (PROBE_SET, spec.probes)]:
        key = f"identification.{spec.name}." + (f"galleries.{set_name}" if set_name != PROBE_SET else "probes")
        path, disp = locate(root, manifest, rel, key)
        sets[set_name] = _template_set(path, disp, known, seen, set_name)
    probe = sets.pop(PROBE_SET)
    return Identification(spec.name, sets, probe, spec.description)


def _template_set(path: Path, disp: str, known: pd.Series, seen: dict[int, str], set_name: str) -> TemplateSet:
    df = read_template_subject_csv(path, disp)
    t = df["template"].to_numpy(dtype=np.int64)
    s = df["subject"].to_numpy(dtype=np.int64)

    def line(row: int) -> int:
        return int(data_line_numbers(path, header=True)[row])

    first = ~pd.Series(t).duplicated().to_numpy()
    u_t, u_s = t[first], s[first]
    subj_of = pd.Series(u_s, index=u_t)
    clash = np.flatnonzero(subj_of.reindex(t).to_numpy() != s)
    if clash.size:
        i = int(clash[0])
        raise DataError(
            f"template {t[i]} has SUBJECT_ID {s[i]} here and {subj_of[t[i]]} on an earlier line",
            path=disp,
            line=line(i),
        )
    idx = known.index.get_indexer(u_t)
    rows = np.flatnonzero(first)
    if (idx < 0).any():
        i = int(rows[np.flatnonzero(idx < 0)[0]])
        raise DataError(
            f"template {t[i]} has no image in the dataset's image list (the 1:1 templates); "
            "1:N templates must be among them",
            path=disp,
            line=line(i),
        )
    img_subject = known.to_numpy()[idx]
    bad = np.flatnonzero((img_subject >= 0) & (img_subject != u_s))
    if bad.size:
        j = int(bad[0])
        raise DataError(
            f"template {u_t[j]} has SUBJECT_ID {u_s[j]}, but its images have subject {img_subject[j]}",
            path=disp,
            line=line(int(rows[j])),
        )
    for j, tid in enumerate(u_t.tolist()):
        other = seen.get(tid)
        if other is not None:
            raise DataError(
                f"template {tid} is in set {set_name!r} and already in {other!r} (the sets of a 1:N protocol "
                "are disjoint)",
                path=disp,
                line=line(int(rows[j])),
            )
    seen.update(dict.fromkeys(u_t.tolist(), set_name))
    return TemplateSet(u_t, u_s)
