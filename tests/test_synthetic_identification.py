"""The synthetic 1:N protocol: IJB-C's official sizes for the ijbc preset, proportional ones otherwise,
galleries disjoint in subjects, mated and non-mated probes, read back by the standard reader and stored by
synthesize-store; the 1:1 outputs stay byte-identical to those of the code before 1:N (golden digests
recorded with that code, commit 4bfb79d)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from facedata.manifest import load_manifest
from facedata.readers import read_dataset
from facedata.synthetic.layout import INFO, plan_dataset, synthesize_dataset
from facedata.synthetic.store import IDENTIFICATION, PROTOCOL, identification_protocol, plan_store, synthesize_store
from facedata.synthetic.structure import plan_galleries
from featurestore.store import FeatureStore

DATASET_TINY_1TO1 = "8e4d20bbb6cf27c631de07bdce5d9664228d0df72bf401df23a83626ed7cd104"
"""Every 1:1 file of the tiny dataset (images, meta CSVs), synthetic.json left out: its format_version moves with
the format (3 since the 1:N CSVs). Recorded from the code before the 1:N change (4bfb79d) and equal now."""
"""sha256 over (relative path, sha256) of every file `synthesize_dataset(tiny, seed 0)` wrote before 1:N."""
STORE_TINY_1TO1 = "f3e41b4576eb22ddc2fc26b0b46c5d73b30a7eea413af2b9dfcf13bd277aea80"
"""`_store_digest` of `synthesize_store(tiny-store, seed 0, chunk_rows 512)` before 1:N."""
NEW_FILES = ("ijbc_1N_gallery_G1.csv", "ijbc_1N_gallery_G2.csv", "ijbc_1N_probe_mixed.csv")


def _folder_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in NEW_FILES and p.name != INFO:
            h.update(str(p.relative_to(root)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _store_digest(path: Path) -> str:
    h = hashlib.sha256()
    with FeatureStore.open(path) as s:
        h.update(s.attrs["images_digest"].encode())
        im = s.images()
        for a in (im.detector_score, im.landmarks):
            h.update(np.ascontiguousarray(a).tobytes())
        p = s.protocol(PROTOCOL)
        h.update(p.pairs.tobytes())
        h.update(p.label.tobytes())
        for m, spec in s.models.items():
            for o in spec.outputs:
                h.update(m.encode() + o.encode())
                h.update(np.ascontiguousarray(s.read(m, o)).tobytes())
    return h.hexdigest()


def _check_protocol(idp, template_subject_of: dict[int, int]) -> None:
    g1, g2 = idp.galleries["G1"], idp.galleries["G2"]
    assert set(g1.subject).isdisjoint(g2.subject)
    for ts in (g1, g2, idp.probe):
        assert all(template_subject_of[t] == s for t, s in zip(ts.template.tolist(), ts.subject.tolist()))
    assert len(set(g1.subject)) == len(g1) and len(set(g2.subject)) == len(g2)  # one template per subject
    for g in (g1, g2):
        mated = np.isin(idp.probe.subject, g.subject)
        assert 0 < mated.sum() < len(idp.probe)  # mated and non-mated probes in each gallery
    assert np.isin(idp.probe.subject, np.concatenate([g1.subject, g2.subject])).all()


def test_official_ijbc_sizes() -> None:
    g = plan_galleries(3_531, seed=0)
    assert (len(g["G1"]), len(g["G2"])) == (1_772, 1_759)
    assert np.array_equal(np.sort(np.concatenate([g["G1"], g["G2"]])), np.arange(3_531))
    idp = identification_protocol(plan_store("ijbc", 0, with_pairs=False), "ijbc")
    assert (len(idp.galleries["G1"]), len(idp.galleries["G2"]), len(idp.probe)) == (1_772, 1_759, 19_593)
    assert plan_galleries(3_531, seed=1)["G1"].tolist() != g["G1"].tolist()
    assert {k: len(v) for k, v in plan_galleries(8, 0).items()} == {"G1": 4, "G2": 4}
    assert {k: len(v) for k, v in plan_galleries(3, 0).items()} == {"G1": 2, "G2": 1}
    with pytest.raises(ValueError, match="at least 2 subjects"):
        plan_galleries(1, 0)


def test_dataset_writes_1n_csvs_and_keeps_1to1_bytes(tmp_path: Path) -> None:
    root = tmp_path / "ijbc"
    synthesize_dataset(root, "tiny", seed=0)
    assert _folder_digest(root) == DATASET_TINY_1TO1
    plan = plan_dataset("tiny", 0)
    lines = sum(len((root / "meta" / f).read_text().splitlines()) - 1 for f in NEW_FILES)
    assert lines == plan.n_images  # every image is in exactly one set, one line each
    tables = read_dataset(load_manifest("synthetic"), root)
    idp = tables.identification[IDENTIFICATION]
    n_subjects = plan.structure.n_enrol
    assert len(idp.galleries["G1"]) + len(idp.galleries["G2"]) == n_subjects == 8
    assert len(idp.probe) == len(plan.structure.template_subject) - n_subjects
    _check_protocol(idp, dict(zip(tables.images.template.tolist(), tables.images.subject.tolist())))


def test_store_holds_the_protocol_and_keeps_1to1_arrays(tmp_path: Path) -> None:
    path = tmp_path / "tiny.zarr"
    synthesize_store(path, "tiny-store", seed=0, chunk_rows=512, progress=False)
    assert _store_digest(path) == STORE_TINY_1TO1
    with FeatureStore.open(path) as s:
        idp = s.identification(IDENTIFICATION)
        im = s.images()
        assert len(idp.galleries["G1"]) + len(idp.galleries["G2"]) == 40 and len(idp.probe) == 160
        assert (len(idp.galleries["G1"]), len(idp.galleries["G2"])) == (20, 20)
        _check_protocol(idp, dict(zip(im.template.tolist(), im.subject.tolist())))
