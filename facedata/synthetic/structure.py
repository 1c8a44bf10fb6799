"""Template/media/frame structure and labelled template pairs shared by the image dataset and the store.

Layout as in IJB-C 1:1: subject s has one enrolment template (index s); the other templates are probes.
A template holds several medias (stills have one frame, videos several near-identical frames).
Genuine pairs join a probe to its subject's enrolment template; impostor pairs join a probe to another
subject's enrolment template, sampled without duplicates and exactly as many as asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def child_rng(seed: int, *key: int) -> np.random.Generator:
    """A Generator determined only by (seed, key...), so any part can be regenerated alone or in parallel."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *map(int, key)])))


@dataclass
class Structure:
    """Who is in which template and media. Template and media ids are 1-based (as IJB-C), rows are images."""

    template_subject: np.ndarray  # (T,) subject of template index t (id t + 1)
    n_enrol: int  # templates 0..n_enrol-1 are enrolment templates, template s belongs to subject s
    media_template: np.ndarray  # (M,) template index of media index m (id m + 1)
    media_frames: np.ndarray  # (M,) frames (images) of each media
    media_is_video: np.ndarray  # (M,) bool

    @property
    def n_images(self) -> int:
        return int(self.media_frames.sum())

    def image_media(self) -> np.ndarray:
        """(N,) media index of each image row; rows are ordered by template, media, frame."""
        return np.repeat(np.arange(len(self.media_frames), dtype=np.int64), self.media_frames)

    def image_frame(self) -> np.ndarray:
        """(N,) frame number of each image inside its media (0 for stills)."""
        starts = np.cumsum(self.media_frames) - self.media_frames
        return np.arange(self.n_images, dtype=np.int64) - np.repeat(starts, self.media_frames)


def plan_templates(n_subjects: int, n_probes: int, rng: np.random.Generator) -> np.ndarray:
    """Subject of each template: subjects 0..S-1 enrol once, probes are spread so each subject gets one first."""
    if n_probes < 0 or n_subjects < 2:
        raise ValueError(f"need at least 2 subjects and 0 probes, got {n_subjects} subjects, {n_probes} probes")
    base = np.arange(min(n_probes, n_subjects), dtype=np.int64)
    rest = rng.integers(0, n_subjects, n_probes - len(base), dtype=np.int64)
    probes = rng.permutation(np.concatenate([base, rest]))
    return np.concatenate([np.arange(n_subjects, dtype=np.int64), probes])


def plan_medias(
    n_templates: int,
    mean_extra_medias: float,
    video_fraction: float,
    mean_extra_frames: float,
    rng: np.random.Generator,
    n_images: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(media_template, media_frames, media_is_video): 1 + Poisson medias per template, geometric video lengths.

    With `n_images`, frames are added to or removed from videos at random until the total is exact.
    """
    n_media = 1 + rng.poisson(mean_extra_medias, n_templates)
    media_template = np.repeat(np.arange(n_templates, dtype=np.int64), n_media)
    m = len(media_template)
    is_video = rng.random(m) < video_fraction
    if n_images is not None and mean_extra_frames <= 0:
        mean_extra_frames = max((n_images / m - 1.0) / max(video_fraction, 1e-9) - 1.0, 0.0)
    extra = rng.geometric(1.0 / (1.0 + mean_extra_frames), m) - 1 if mean_extra_frames > 0 else np.zeros(m, int)
    frames = 1 + np.where(is_video, 1 + extra, 0).astype(np.int64)
    if n_images is not None:
        frames = _adjust_total(frames, is_video, n_images, rng)
    return media_template, frames, is_video


def _adjust_total(frames: np.ndarray, is_video: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Add or remove single video frames at random so that frames.sum() == total (a video keeps >= 2 frames)."""
    videos = np.flatnonzero(is_video)
    diff = total - int(frames.sum())
    frames = frames.copy()
    if diff > 0:
        if len(videos) == 0:
            raise ValueError(f"cannot reach {total} images: no video media to lengthen")
        frames += np.bincount(videos[rng.integers(0, len(videos), diff)], minlength=len(frames))
    elif diff < 0:
        spare = np.maximum(frames[videos] - 2, 0)
        if spare.sum() < -diff:
            raise ValueError(f"cannot reach {total} images: only {int(spare.sum())} removable frames")
        units = np.repeat(videos, spare)  # one entry per removable frame
        drop = units[rng.choice(len(units), -diff, replace=False)]
        frames -= np.bincount(drop, minlength=len(frames))
    return frames


def plan_structure(
    n_subjects: int,
    n_probes: int,
    mean_extra_medias: float,
    video_fraction: float,
    mean_extra_frames: float,
    rng: np.random.Generator,
    n_images: int | None = None,
) -> Structure:
    """Templates (enrolment + probes), their medias and frames, optionally with an exact image count."""
    template_subject = plan_templates(n_subjects, n_probes, rng)
    mt, mf, mv = plan_medias(len(template_subject), mean_extra_medias, video_fraction, mean_extra_frames, rng, n_images)
    return Structure(template_subject, n_subjects, mt, mf, mv)


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (sort + neighbour test: much faster than np.unique on 1e7+)."""
    x = np.sort(x)
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


def make_pairs(
    template_subject: np.ndarray, n_enrol: int, n_genuine: int, n_impostor: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (M, 2) of template indices [enrolment, probe], label (M,)), sorted by (enrolment, probe).

    `n_genuine` probes are paired with their own enrolment template; `n_impostor` distinct
    (enrolment, probe) pairs of different subjects are drawn uniformly without duplicates.
    """
    subj = np.asarray(template_subject, dtype=np.int64)
    probes = np.arange(n_enrol, len(subj), dtype=np.int64)
    n_p = len(probes)
    if not 0 <= n_genuine <= n_p:
        raise ValueError(f"n_genuine={n_genuine} must be between 0 and the {n_p} probe templates")
    possible = n_enrol * n_p - n_p
    if not 0 <= n_impostor <= possible:
        raise ValueError(f"n_impostor={n_impostor} must be between 0 and the {possible} possible impostor pairs")
    gen_p = np.sort(rng.choice(probes, n_genuine, replace=False))
    gen_key = subj[gen_p] * n_p + (gen_p - n_enrol)
    if n_impostor > possible // 2:
        # dense: enumerate every impostor key, then drop a random subset
        keys = np.arange(n_enrol * n_p, dtype=np.int64)
        keys = keys[(keys // n_p) != subj[n_enrol + keys % n_p]]
    else:
        keys = np.empty(0, dtype=np.int64)
        while len(keys) < n_impostor:
            need = n_impostor - len(keys)
            draw = rng.integers(0, n_enrol * n_p, int(need * 1.25) + 64, dtype=np.int64)
            draw = draw[(draw // n_p) != subj[n_enrol + draw % n_p]]
            keys = sorted_unique(np.concatenate([keys, draw]))
    if len(keys) > n_impostor:
        keep = np.ones(len(keys), dtype=bool)
        keep[rng.choice(len(keys), len(keys) - n_impostor, replace=False)] = False
        keys = keys[keep]
    all_keys = np.concatenate([gen_key, keys])
    label = np.concatenate([np.ones(len(gen_key), bool), np.zeros(len(keys), bool)])
    order = np.argsort(all_keys, kind="stable")
    all_keys, label = all_keys[order], label[order]
    pairs = np.stack([all_keys // n_p, n_enrol + all_keys % n_p], axis=1)
    return pairs, label


IJBC_GALLERIES = {"G1": 1_772, "G2": 1_759}
"""IJB-C's official 1:N gallery sizes (templates = subjects: one gallery template per subject); 19,593 probes."""

IDENTIFICATION_RNG_KEY = 30
"""The 1:N assignment's own random stream: drawing it leaves every 1:1 output unchanged."""


def plan_galleries(n_enrol: int, seed: int) -> dict[str, np.ndarray]:
    """Split the enrolment templates (template index s = subject s) into IJB-C's two galleries, in
    IJB-C's proportion (exactly 1,772 and 1,759 for its 3,531 subjects), disjoint in subjects; each
    gallery's template indices ascending. The probes are every other template: each is mated in the
    gallery holding its subject and non-mated in the other."""
    if n_enrol < 2:
        raise ValueError(f"two galleries need at least 2 subjects, got {n_enrol}")
    total = sum(IJBC_GALLERIES.values())
    n_g1 = min(max(round(n_enrol * IJBC_GALLERIES["G1"] / total), 1), n_enrol - 1)
    perm = child_rng(seed, IDENTIFICATION_RNG_KEY).permutation(n_enrol)
    return {"G1": np.sort(perm[:n_g1]), "G2": np.sort(perm[n_g1:])}
