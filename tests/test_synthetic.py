"""The synthetic IJB-C-layout dataset: files, determinism, true landmarks and degradations, structure, pairs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from facedata.manifest import load_manifest, manifest_from_dict
from facedata.readers import read_dataset
from facedata.synthetic import degrade
from facedata.synthetic.faces import View, make_identity, render_crop
from facedata.synthetic.layout import ensure_synthetic, plan_dataset, synthesize_dataset, synthetic_cache_dir
from facedata.synthetic.structure import _adjust_total, child_rng, make_pairs, plan_structure

META = (
    "ijbc_face_tid_mid.txt",
    "ijbc_name_5pts_score.txt",
    "ijbc_template_pair_label.txt",
    "ijbc_template_subjects.csv",
    "ijbc_degradations.csv",
)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "ijbc"
    synthesize_dataset(root, "tiny", seed=0)
    return root


def test_layout_files_and_line_formats(tiny: Path) -> None:
    plan = plan_dataset("tiny", 0)
    n = plan.n_images
    assert 80 <= n <= 150
    assert sorted(p.name for p in (tiny / "loose_crop").iterdir()) == sorted(f"{i}.jpg" for i in range(1, n + 1))
    for name in META:
        assert (tiny / "meta" / name).is_file()
    tid = (tiny / "meta/ijbc_face_tid_mid.txt").read_text().splitlines()
    pts = (tiny / "meta/ijbc_name_5pts_score.txt").read_text().splitlines()
    assert len(tid) == len(pts) == n
    for i, (a, b) in enumerate(zip(tid, pts)):
        fa, fb = a.split(" "), b.split(" ")  # insightface splits on single spaces
        assert fa[0] == fb[0] == f"{i + 1}.jpg" and len(fa) == 3 and len(fb) == 12
        assert 0 < float(fb[-1]) < 1
    for line in (tiny / "meta/ijbc_template_pair_label.txt").read_text().splitlines():
        t1, t2, lab = line.split(" ")
        assert lab in ("0", "1") and int(t1) >= 1 and int(t2) >= 1
    img = cv2.imread(str(tiny / "loose_crop/1.jpg"))
    assert img is not None and 150 <= img.shape[0] == img.shape[1] <= 250


def test_same_seed_same_bytes_serial_or_parallel(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synthesize_dataset(again, "tiny", seed=0, workers=2)
    assert _digests(again) == _digests(tiny)
    other = tmp_path / "other"
    synthesize_dataset(other, "tiny", seed=1)
    assert _digests(other)["loose_crop/1.jpg"] != _digests(tiny)["loose_crop/1.jpg"]


def test_standard_reader_reads_it(tiny: Path) -> None:
    raw = dict(load_manifest("synthetic").raw)
    raw["files"] = {**raw["files"], "template_subjects": "meta/ijbc_template_subjects.csv"}
    tables = read_dataset(manifest_from_dict(raw), tiny)
    plan = plan_dataset("tiny", 0)
    assert len(tables.images) == plan.n_images
    np.testing.assert_array_equal(tables.images.template, plan.image_template + 1)
    np.testing.assert_array_equal(tables.images.media, plan.image_media + 1)
    np.testing.assert_array_equal(tables.images.subject, plan.image_subject + 1)
    proto = tables.protocols["verification_11"]
    np.testing.assert_array_equal(proto.pairs, plan.pairs + 1)
    np.testing.assert_array_equal(proto.label, plan.label)


def test_file_landmarks_are_the_rendered_ones(tiny: Path) -> None:
    plan = plan_dataset("tiny", 0)
    pts = pd.read_csv(tiny / "meta/ijbc_name_5pts_score.txt", sep=" ", header=None)
    for i in (0, 5, plan.n_images - 1):
        img, lm, _, score = plan.render(i)
        np.testing.assert_allclose(pts.iloc[i, 1:11].to_numpy(float).reshape(5, 2), lm, atol=6e-4)
        assert abs(pts.iloc[i, 11] - score) < 6e-5
        assert (lm >= 0).all() and (lm < img.shape[0]).all()


@pytest.mark.parametrize("angle,scale,yaw", [(0.0, 1.0, 0.0), (17.0, 0.8, 0.6), (-12.0, 1.2, -0.9)])
def test_pupils_are_drawn_at_the_eye_landmarks(angle: float, scale: float, yaw: float) -> None:
    ident = make_identity(0, 3)
    view = View(
        yaw=yaw,
        pitch=0.3,
        smile=0.2,
        mouth_open=0.0,
        eye_open=1.0,
        light_dir=0.0,
        light_amp=0.0,
        brightness=1.0,
        background=(200.0, 200.0, 200.0),
        crop=220,
        scale=scale,
        angle=angle,
        centre=(105.0, 118.0),
    )
    img, lm = render_crop(ident, view, np.zeros((4, 4), np.float32))
    gray = img.mean(axis=2)
    for k in (0, 1):  # the pupil (grey 15) is the darkest blob around each eye landmark
        x, y = lm[k]
        r = 6  # pupil and iris are concentric discs; the brow is further away
        x0, y0 = int(x) - r, int(y) - r
        win = gray[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
        weight = np.clip(40.0 - win, 0, None)
        yy, xx = np.mgrid[0 : win.shape[0], 0 : win.shape[1]]
        cx, cy = (weight * xx).sum() / weight.sum() + x0, (weight * yy).sum() / weight.sum() + y0
        assert abs(cx - x) < 0.35 and abs(cy - y) < 0.35, (k, cx, cy, x, y)
    assert lm[0, 0] < lm[1, 0] or abs(angle) > 45  # left eye has the smaller x (insightface order)
    assert lm[3, 1] > lm[2, 1] > lm[0, 1] - 5


def _laplacian_var(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_each_degradation_is_monotone_in_its_strength() -> None:
    ident = make_identity(0, 1)
    view = View(0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, (120.0, 90.0, 60.0), 200, 1.0, 0.0, (100.0, 100.0))
    clean, _ = render_crop(ident, view, np.zeros((4, 4), np.float32))
    box = (40.0, 20.0, 160.0, 190.0)
    occ = degrade.Occluder(False, 0.5, 0.5, (0.0, 255.0, 0.0))
    levels = (0.0, 0.25, 0.5, 0.75, 1.0)

    def run(**kw: float) -> list[np.ndarray]:
        return [
            degrade.apply(clean, degrade.Degradation(**{k: s for k in kw}), box, occ, child_rng(0, 5)) for s in levels
        ]

    sharp = [_laplacian_var(x) for x in run(blur=1)]
    assert all(a > b for a, b in zip(sharp, sharp[1:]))
    sharp = [_laplacian_var(x) for x in run(lowres=1)]
    assert all(a > b for a, b in zip(sharp, sharp[1:]))
    ref = np.clip(np.rint(clean), 0, 255)
    resid = [float((x - ref).std()) for x in run(noise=1)]
    assert all(a < b for a, b in zip(resid, resid[1:]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    for s, x in zip(levels, run(occlusion=1)):
        covered = np.all(x == (0, 255, 0), axis=2).sum()
        assert abs(covered - degrade.MAX_OCCLUDED * s * area) <= 0.03 * area + 2
    assert degrade.Degradation().severity == 0.0
    d = degrade.Degradation(0.5, 0.5, 0.0, 0.0)
    assert d.severity == pytest.approx(0.75)


def test_degradation_table_matches_images(tiny: Path) -> None:
    deg = pd.read_csv(tiny / "meta/ijbc_degradations.csv")
    pts = pd.read_csv(tiny / "meta/ijbc_name_5pts_score.txt", sep=" ", header=None)
    assert list(deg.columns) == ["name", "blur", "noise", "lowres", "occlusion", "severity"]
    assert (deg["name"] == pts[0]).all()
    kinds = deg[["blur", "noise", "lowres", "occlusion"]].to_numpy()
    assert ((kinds >= 0) & (kinds <= 1)).all()
    np.testing.assert_allclose(deg["severity"], 1 - np.prod(1 - kinds, axis=1), atol=2e-6)
    assert spearmanr(deg["severity"], pts[11]).statistic < -0.8  # detector score falls with severity
    assert (deg["severity"] == 0).sum() >= 3 and (deg["severity"] > 0.5).sum() >= 10
    # softness (blur, low resolution) against measured sharpness, among images without added noise
    quiet = deg["noise"] == 0
    sharp = np.array([_laplacian_var(cv2.imread(str(tiny / "loose_crop" / n))) for n in deg["name"][quiet]])
    soft = 1 - (1 - deg["blur"][quiet]) * (1 - deg["lowres"][quiet])
    assert spearmanr(soft, sharp).statistic < -0.6


def test_template_media_frame_structure(tiny: Path) -> None:
    plan = plan_dataset("tiny", 0)
    s = plan.structure
    tid = pd.read_csv(tiny / "meta/ijbc_face_tid_mid.txt", sep=" ", header=None)
    # each media lies in one template, with consecutive rows; every template has a media
    per_media = tid.groupby(2)[1].nunique()
    assert (per_media == 1).all()
    assert set(tid[1]) == set(range(1, len(s.template_subject) + 1))
    assert (tid.groupby(1)[2].nunique() > 1).any() and (tid.groupby(2).size() > 1).any()
    # video frames are near-identical, different medias are not
    same, diff = [], []
    for i in range(plan.n_images - 1):
        a, b = (cv2.imread(str(tiny / "loose_crop" / f"{j + 1}.jpg")).astype(float) for j in (i, i + 1))
        if a.shape != b.shape:
            continue
        (same if plan.image_media[i] == plan.image_media[i + 1] else diff).append(np.abs(a - b).mean())
    assert same and diff and np.median(same) < 0.5 * np.median(diff)


def test_pairs_labels_follow_subjects(tiny: Path) -> None:
    pairs = pd.read_csv(tiny / "meta/ijbc_template_pair_label.txt", sep=" ", header=None).to_numpy()
    subj = pd.read_csv(tiny / "meta/ijbc_template_subjects.csv").set_index("TEMPLATE_ID")["SUBJECT_ID"]
    same = subj.loc[pairs[:, 0]].to_numpy() == subj.loc[pairs[:, 1]].to_numpy()
    np.testing.assert_array_equal(pairs[:, 2] == 1, same)
    assert len({(a, b) for a, b in pairs[:, :2]}) == len(pairs)
    assert (pairs[:, 2] == 0).sum() > 3 * (pairs[:, 2] == 1).sum() > 0


@pytest.mark.parametrize("n_imp", [0, 37, 300, 479, 480])
def test_make_pairs_is_exact_against_brute_force(n_imp: int) -> None:
    rng = child_rng(4, 4)
    subj = np.concatenate([np.arange(6), rng.integers(0, 6, 96)])  # 6 enrolment templates, 96 probes
    pairs, label = make_pairs(subj, 6, 50, n_imp, rng)
    assert len(pairs) == 50 + n_imp and label.sum() == 50
    assert len(set(map(tuple, pairs))) == len(pairs)  # no duplicates
    assert ((pairs[:, 0] < 6) & (pairs[:, 1] >= 6)).all()
    np.testing.assert_array_equal(label, subj[pairs[:, 0]] == subj[pairs[:, 1]])
    assert (np.diff(pairs[:, 0] * 1000 + pairs[:, 1]) > 0).all()  # sorted
    every = {(e, p) for e in range(6) for p in range(6, 102) if subj[e] != subj[p]}
    assert len(every) == 480 and {tuple(x) for x in pairs[~label]} <= every
    with pytest.raises(ValueError, match="possible impostor"):
        make_pairs(subj, 6, 50, 481, rng)


def test_exact_image_total_and_structure_counts() -> None:
    rng = child_rng(1, 2)
    for total in (900, 1500, 4000):
        s = plan_structure(30, 120, 2.0, 0.5, 0.0, rng, n_images=total)
        assert s.n_images == total and len(s.template_subject) == 150
        assert (s.media_frames[~s.media_is_video] == 1).all() and (s.media_frames[s.media_is_video] >= 2).all()
        assert set(s.media_template) == set(range(150))
    frames = np.array([1, 5, 2, 9])
    video = np.array([False, True, True, True])
    assert _adjust_total(frames, video, 10, rng).tolist()[0] == 1
    assert _adjust_total(frames, video, 10, rng).sum() == 10
    with pytest.raises(ValueError, match="removable"):
        _adjust_total(frames, video, 6, rng)


def test_ensure_synthetic_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEFACE_CACHE", str(tmp_path / "cache"))
    assert synthetic_cache_dir("tiny", 3) == tmp_path / "cache" / "synthetic-tiny-3"
    root = ensure_synthetic("tiny", 3)
    assert root == synthetic_cache_dir("tiny", 3) and (root / ".complete").is_file()
    stamp = (root / "loose_crop/1.jpg").stat().st_mtime_ns
    assert ensure_synthetic("tiny", 3) == root
    assert (root / "loose_crop/1.jpg").stat().st_mtime_ns == stamp  # not regenerated
    (root / ".complete").unlink()  # an interrupted run is redone
    ensure_synthetic("tiny", 3)
    assert (root / ".complete").is_file()
    with pytest.raises(ValueError, match="unknown synthetic dataset preset"):
        synthetic_cache_dir("huge", 0)
