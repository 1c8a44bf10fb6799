"""Write the synthetic face benchmark in insightface's IJB-C layout (dataset name `ijbc`).

Files under the output folder (names as insightface's recognition/_evaluation_/ijb reads them):

- ``loose_crop/<n>.jpg``: loose face crops, n = 1..N
- ``meta/ijbc_face_tid_mid.txt``: ``<n>.jpg template media`` per image
- ``meta/ijbc_name_5pts_score.txt``: ``<n>.jpg x1 y1 ... x5 y5 score``, true landmarks, detector score
- ``meta/ijbc_template_pair_label.txt``: ``template1 template2 label``
- ``meta/ijbc_template_subjects.csv``: ``TEMPLATE_ID,SUBJECT_ID`` (the truth insightface's 1:N CSVs carry)
- ``meta/ijbc_1N_gallery_G1.csv``, ``meta/ijbc_1N_gallery_G2.csv``, ``meta/ijbc_1N_probe_mixed.csv``: the 1:N
  protocol as insightface's updated meta holds it, ``TEMPLATE_ID,SUBJECT_ID,FILENAME`` per image; the
  enrolment templates split into two galleries in IJB-C's proportion (structure.plan_galleries), every
  other template a probe
- ``meta/ijbc_degradations.csv``: true degradation strengths and severity per image
- ``synthetic.json``: preset, seed and counts

Every image is rendered from generators seeded by (seed, image/media/subject number) only, so any
subset, in any order or in parallel, gives the same bytes.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from facedata.errors import DataError

from . import degrade
from .faces import View, W, make_identity, render_crop
from .presets import DATASET_NAME, DatasetPreset, dataset_preset
from .structure import Structure, child_rng, make_pairs, plan_galleries, plan_structure

JPEG_QUALITY = 92
FORMAT_VERSION = 3
"""Bumped whenever the generator's output bytes change; part of the cache folder's marker (3: the 1:N CSVs)."""
MARKER = ".complete"
INFO = "synthetic.json"
"""Written first (claiming the folder) and rewritten last with the counts."""


@dataclass
class SynthSummary:
    """What `synthesize_dataset` wrote."""

    root: Path
    preset: str
    seed: int
    n_images: int
    n_subjects: int
    n_templates: int
    n_medias: int
    n_pairs: int
    n_genuine: int
    seconds: float

    def format(self) -> str:
        """A readable summary for the terminal (what `datasets synthesize` prints)."""
        return "\n".join(
            [
                f"wrote synthetic dataset {self.root} (preset {self.preset}, seed {self.seed}) in {self.seconds:.1f} s",
                f"  images {self.n_images:,}  subjects {self.n_subjects:,}  templates {self.n_templates:,}  "
                f"medias {self.n_medias:,}",
                f"  pairs {self.n_pairs:,}  genuine {self.n_genuine:,}  impostor {self.n_pairs - self.n_genuine:,}",
                f"  next: datasets check --dataset ijbc --data-root {self.root}",
            ]
        )


@dataclass
class DatasetPlan:
    """The whole structure of a synthetic dataset, computed without rendering anything."""

    preset: DatasetPreset
    seed: int
    structure: Structure
    pairs: np.ndarray  # (M, 2) template indices (0-based)
    label: np.ndarray  # (M,) bool

    def __post_init__(self) -> None:
        s = self.structure
        self.image_media = s.image_media()
        self.image_frame = s.image_frame()
        self.image_template = s.media_template[self.image_media]
        self.image_subject = s.template_subject[self.image_template]

    @property
    def n_images(self) -> int:
        return len(self.image_media)

    def image_name(self, i: int) -> str:
        """File name of image row i (1-based numbering, as in IJB-C's loose_crop)."""
        return f"{i + 1}.jpg"

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, degrade.Degradation, float]:
        """(uint8 BGR crop, true landmarks (5, 2), true degradation, detector score) of image row i."""
        if not 0 <= i < self.n_images:
            raise IndexError(f"image {i} out of range 0..{self.n_images - 1}")
        m = int(self.image_media[i])
        ident = make_identity(self.seed, int(self.image_subject[i]))
        base_view, base_deg, occluder, bg_noise = _media_view(
            self.seed, m, self.preset.crop_min, self.preset.crop_max, ident.face_w
        )
        rng = child_rng(self.seed, 3, i)
        frame = int(self.image_frame[i])
        view = _frame_view(base_view, rng) if frame else base_view
        deg = degrade.jitter(base_deg, rng) if frame else base_deg
        clean, landmarks = render_crop(ident, view, bg_noise)
        sw, sh = ident.face_w * W * view.scale, ident.face_h * W * view.scale
        cx, cy = view.centre
        img = degrade.apply(clean, deg, (cx - sw, cy - sh, cx + sw, cy + sh), occluder, rng)
        return img, landmarks, deg, degrade.detector_score(deg.severity, rng)


def plan_dataset(preset: str = "tiny", seed: int = 0) -> DatasetPlan:
    """Templates, medias, frames and labelled pairs of a preset, without rendering images."""
    p = dataset_preset(preset)
    rng = child_rng(seed, 0)
    s = plan_structure(
        p.n_subjects,
        p.n_subjects * p.probe_templates_per_subject,
        p.mean_extra_medias,
        p.video_fraction,
        p.mean_extra_frames,
        rng,
    )
    n_probes = len(s.template_subject) - s.n_enrol
    n_impostor = min(n_probes * (s.n_enrol - 1), n_probes * p.max_impostors_per_probe)
    pairs, label = make_pairs(s.template_subject, s.n_enrol, n_probes, n_impostor, rng)
    return DatasetPlan(p, seed, s, pairs, label)


@lru_cache(maxsize=256)
def _media_view(
    seed: int, media: int, crop_min: int, crop_max: int, face_w: float
) -> tuple[View, degrade.Degradation, degrade.Occluder, np.ndarray]:
    """The pose, lighting, placement, degradation and background of one media (shared by its frames)."""
    rng = child_rng(seed, 2, media)
    crop = int(rng.integers(crop_min, crop_max + 1))
    face_frac = rng.uniform(0.4, 0.62)  # face width / crop side
    scale = face_frac * crop / (2 * face_w * W)
    view = View(
        yaw=float(rng.uniform(-1, 1)),
        pitch=float(rng.uniform(-1, 1)),
        smile=float(rng.uniform(-1, 1)),
        mouth_open=float(max(rng.uniform(-0.5, 1), 0)),
        eye_open=float(rng.uniform(0.5, 1)),
        light_dir=float(rng.uniform(0, 2 * np.pi)),
        light_amp=float(rng.uniform(0, 0.45)),
        brightness=float(rng.uniform(0.7, 1.15)),
        background=tuple(float(c) for c in rng.uniform(20, 235, 3)),
        crop=crop,
        scale=float(scale),
        angle=float(rng.uniform(-20, 20)),
        centre=(float(crop * (0.5 + rng.uniform(-0.08, 0.08))), float(crop * (0.5 + rng.uniform(-0.08, 0.08)))),
    )
    deg = degrade.draw_degradation(rng)
    occluder = degrade.draw_occluder(rng)
    bg_noise = rng.uniform(-1, 1, (6, 6)).astype(np.float32)
    return view, deg, occluder, bg_noise


def _frame_view(v: View, rng: np.random.Generator) -> View:
    """The next frame of a video: the media's view moved very slightly."""
    n = rng.standard_normal(7)
    return replace(
        v,
        yaw=float(np.clip(v.yaw + 0.04 * n[0], -1, 1)),
        pitch=float(np.clip(v.pitch + 0.04 * n[1], -1, 1)),
        smile=float(np.clip(v.smile + 0.05 * n[2], -1, 1)),
        angle=v.angle + 0.8 * float(n[3]),
        scale=v.scale * (1 + 0.01 * float(n[4])),
        centre=(v.centre[0] + float(n[5]), v.centre[1] + float(n[6])),
    )


def _render_range(args: tuple[str, int, str, int, int]) -> list[tuple[np.ndarray, degrade.Degradation, float]]:
    """Render and write images [start, stop) into out_dir/loose_crop; their landmarks, degradations, scores."""
    out_dir, seed, preset, start, stop = args
    plan = _cached_plan(preset, seed)
    rows = []
    crop_dir = Path(out_dir) / "loose_crop"
    for i in range(start, stop):
        img, lm, deg, score = plan.render(i)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for image {i}")
        (crop_dir / plan.image_name(i)).write_bytes(buf.tobytes())
        rows.append((lm, deg, score))
    return rows


@lru_cache(maxsize=4)
def _cached_plan(preset: str, seed: int) -> DatasetPlan:
    return plan_dataset(preset, seed)


def synthesize_dataset(out_dir: str | Path, preset: str = "tiny", seed: int = 0, workers: int = 1) -> SynthSummary:
    """Render the preset's images and write the IJB-C-layout files under `out_dir` (same seed, same bytes).

    `workers` > 1 renders in that many processes; the output does not depend on it.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    plan = _cached_plan(preset, seed)
    refuse_foreign_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    # claim the folder before writing anything, so a rerun after an interruption may write it again
    (out / INFO).write_text(
        json.dumps({"dataset": DATASET_NAME, "format_version": FORMAT_VERSION, "status": "writing"}) + "\n"
    )
    (out / "loose_crop").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    n = plan.n_images
    step = max(64, -(-n // (8 * max(workers, 1))))
    tasks = [(str(out), seed, preset, a, min(a + step, n)) for a in range(0, n, step)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_render_range, tasks))
    else:
        parts = [_render_range(t) for t in tasks]
    rows = [r for part in parts for r in part]
    _write_meta(out, plan, rows)
    s = plan.structure
    summary = SynthSummary(
        root=out,
        preset=preset,
        seed=seed,
        n_images=n,
        n_subjects=int(s.n_enrol),
        n_templates=len(s.template_subject),
        n_medias=len(s.media_frames),
        n_pairs=len(plan.label),
        n_genuine=int(plan.label.sum()),
        seconds=0.0,
    )
    info = {k: v for k, v in asdict(summary).items() if k not in ("root", "seconds")}
    info.update(format_version=FORMAT_VERSION, dataset=DATASET_NAME)
    (out / INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    summary.seconds = time.perf_counter() - t0
    return summary


def refuse_foreign_folder(out: Path) -> None:
    """DataError unless `out` is absent, an empty folder, or a folder an earlier synthesize wrote (its
    synthetic.json says so): the generator's file names are IJB-C's, so a real dataset must never be written over."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise DataError("exists and is not a folder; refusing to write the synthetic dataset there", path=out)
    if not any(out.iterdir()):
        return
    try:
        info = json.loads((out / INFO).read_text(encoding="utf-8"))
        ours = isinstance(info, dict) and info.get("dataset") == DATASET_NAME and "format_version" in info
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise DataError(
            f"is not empty and holds no {INFO} of an earlier `datasets synthesize`; refusing to write over files "
            "it did not make (choose an empty or new folder)",
            path=out,
        )


def _write_meta(out: Path, plan: DatasetPlan, rows: list[tuple[np.ndarray, degrade.Degradation, float]]) -> None:
    """The four text tables of the layout plus the degradation truth."""
    meta = out / "meta"
    names = [plan.image_name(i) for i in range(plan.n_images)]
    tid = plan.image_template + 1
    mid = plan.image_media + 1
    _write_lines(meta / f"{DATASET_NAME}_face_tid_mid.txt", (f"{a} {t} {m}" for a, t, m in zip(names, tid, mid)))
    _write_lines(
        meta / f"{DATASET_NAME}_name_5pts_score.txt",
        (
            f"{a} " + " ".join(f"{v:.3f}" for v in lm.reshape(-1)) + f" {score:.4f}"
            for a, (lm, _, score) in zip(names, rows)
        ),
    )
    pairs = plan.pairs + 1
    _write_lines(
        meta / f"{DATASET_NAME}_template_pair_label.txt",
        (f"{a} {b} {int(lab)}" for (a, b), lab in zip(pairs.tolist(), plan.label.tolist())),
    )
    _write_lines(
        meta / f"{DATASET_NAME}_image_pair_label.txt",
        (f"{a} {b} {int(lab)}" for a, b, lab in image_pairs(plan, names)),
    )
    subj = plan.structure.template_subject + 1
    _write_lines(
        meta / f"{DATASET_NAME}_template_subjects.csv",
        ["TEMPLATE_ID,SUBJECT_ID", *(f"{t + 1},{s}" for t, s in enumerate(subj.tolist()))],
    )
    _write_identification(meta, plan, names)
    _write_lines(
        meta / f"{DATASET_NAME}_degradations.csv",
        [
            "name,blur,noise,lowres,occlusion,severity",
            *(
                f"{a},{d.blur:.6f},{d.noise:.6f},{d.lowres:.6f},{d.occlusion:.6f},{d.severity:.6f}"
                for a, (_, d, _) in zip(names, rows)
            ),
        ],
    )


def _write_identification(meta: Path, plan: DatasetPlan, names: list[str]) -> None:
    """The 1:N CSVs: one line per image of each gallery's templates, and of the probe templates."""
    s = plan.structure
    galleries = plan_galleries(s.n_enrol, plan.seed)
    probes = np.arange(s.n_enrol, len(s.template_subject))
    sets = {**{f"gallery_{g}": t for g, t in galleries.items()}, "probe_mixed": probes}
    for set_name, templates in sets.items():
        rows = np.flatnonzero(np.isin(plan.image_template, templates))
        _write_lines(
            meta / f"{DATASET_NAME}_1N_{set_name}.csv",
            [
                "TEMPLATE_ID,SUBJECT_ID,FILENAME",
                *(f"{plan.image_template[i] + 1},{plan.image_subject[i] + 1},{names[i]}" for i in rows.tolist()),
            ],
        )


def image_pairs(plan: DatasetPlan, names: list[str]) -> list[tuple[str, str, bool]]:
    """An image-level protocol derived from the template pairs: the first image of each template of
    every template pair (an image-pair benchmark with the same genuine/impostor balance)."""
    first = {}
    for i, t in enumerate(plan.image_template.tolist()):
        first.setdefault(t, i)
    return [
        (names[first[a]], names[first[b]], bool(lab)) for (a, b), lab in zip(plan.pairs.tolist(), plan.label.tolist())
    ]


def _write_lines(path: Path, lines) -> None:
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def synthetic_cache_dir(preset: str = "tiny", seed: int = 0) -> Path:
    """Where `ensure_synthetic` keeps a generated dataset: $SCALEFACE_CACHE or ~/.cache/scaleface-toolkit."""
    dataset_preset(preset)
    base = os.environ.get("SCALEFACE_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "scaleface-toolkit"
    return root / f"synthetic-{preset}-{seed}"


def ensure_synthetic(
    preset: str = "tiny", seed: int = 0, cache_dir: str | Path | None = None, workers: int = 1
) -> Path:
    """The data root of the synthetic dataset, generating it first unless a complete copy is cached.

    A marker file written last (holding the format version) tells a complete folder from an interrupted one.
    """
    root = Path(cache_dir) if cache_dir is not None else synthetic_cache_dir(preset, seed)
    marker = root / MARKER
    want = f"format={FORMAT_VERSION} preset={preset} seed={seed}\n"
    if marker.is_file() and marker.read_text() == want:
        return root
    if marker.exists():
        marker.unlink()
    synthesize_dataset(root, preset=preset, seed=seed, workers=workers)
    marker.write_text(want)
    return root
