"""TAR at fixed FAR under the ScaleFace paper's exact convention and insightface's nearest-ROC-point one.

Both conventions are reproduced to the tie and the off-by-one (see docs/metrics.md, "TAR@FAR");
every table built from these functions must say which convention it used. ROC points and `auc` come
from analyze.curves (re-exported here). numpy only (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from analyze.curves import Counts, auc, roc_curve_points
from analyze.rows import check_unit_interval

__all__ = [
    "TarFarResult",
    "auc",
    "check_far_resolution",
    "check_fars",
    "check_scores_labels",
    "far_ranks",
    "k0_threshold",
    "roc_curve_points",
    "smallest_far",
    "tar_at_far",
]

Convention = Literal["exact", "nearest"]

#: Added to the highest impostor score for k = 0 (the paper's ``find_thresholds_by_FAR`` epsilon).
K0_EPSILON = 1e-8


@dataclass(frozen=True)
class TarFarResult:
    """TAR, threshold and achieved FAR for each requested FAR (arrays aligned with ``fars``)."""

    fars: np.ndarray
    tar: np.ndarray
    threshold: np.ndarray
    far_achieved: np.ndarray
    n_genuine: int
    n_impostor: int
    convention: str


def check_scores_labels(scores: ArrayLike, labels: ArrayLike, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1-D finite score vector and a same-length genuine mask; return (float64, bool) copies.

    Non-finite scores are an error: the caller must drop pairs without a score (e.g. failed images).
    """
    s = np.asarray(scores)
    lab = np.asarray(labels)
    if s.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {s.shape}")
    if lab.shape != s.shape:
        raise ValueError(f"labels shape {lab.shape} does not match {what} shape {s.shape}")
    if s.dtype.kind not in "fiub":
        raise ValueError(f"{what} must be numeric, got dtype {s.dtype}")
    if lab.dtype != np.bool_:
        if lab.dtype.kind not in "iu" or not np.isin(lab, (0, 1)).all():
            raise ValueError(f"labels must be bool (genuine = True) or 0/1 integers, got dtype {lab.dtype}")
        lab = lab.astype(bool)
    s = s.astype(np.float64, copy=False)
    bad = ~np.isfinite(s)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(
            f"{what} contain {int(bad.sum())} non-finite values (first at positions {first}); "
            "drop those pairs before computing TAR@FAR"
        )
    return s, lab


def check_fars(fars: ArrayLike) -> np.ndarray:
    """Validate requested FARs: a 1-D float64 array (a scalar becomes length 1) with values in [0, 1]."""
    return check_unit_interval(fars, "fars", each="FAR", show=True)


def check_far_resolution(fars: np.ndarray, n_impostor: int, allow_tiny_far: bool) -> None:
    """Raise if a FAR is below 1/n_impostor (the smallest FAR the impostor set can resolve)."""
    if allow_tiny_far or n_impostor <= 0:
        return
    floor = 1.0 / n_impostor
    tiny = fars[fars < floor]
    if tiny.size:
        raise ValueError(
            f"FAR {tiny.min():g} is below the smallest meaningful FAR 1/n_impostors = {floor:.6g} "
            f"(n_impostors = {n_impostor}); request FAR >= {floor:.6g}, or allow it (--allow-tiny-far; "
            "allow_tiny_far=True in Python) to use k = round(FAR * n_impostors) anyway (k = 0 puts the threshold "
            "just above the highest impostor)"
        )


def far_ranks(n_impostor: int, fars: np.ndarray) -> np.ndarray:
    """k = round(FAR * n_impostor) with numpy's round-half-to-even, in float64, as the paper computes it."""
    return np.round(n_impostor * fars).astype(np.int64)


def k0_threshold(top_impostor: float) -> float:
    """Threshold for k = 0: highest impostor + 1e-8 (the paper), nudged up one ulp if 1e-8 is lost."""
    thr = float(top_impostor) + K0_EPSILON
    if not thr > top_impostor:
        thr = float(np.nextafter(top_impostor, np.inf))
    return thr


def tar_at_far(
    scores: ArrayLike,
    labels: ArrayLike,
    fars: ArrayLike,
    convention: Convention = "exact",
    allow_tiny_far: bool = False,
    counts: Counts | None = None,
) -> TarFarResult:
    """TAR at each requested FAR with one sort; ``convention`` is "exact" (paper) or "nearest" (insightface).

    exact: impostors sorted high to low, threshold = k-th with k = round(FAR * n_impostor) (k = 0:
    highest + 1e-8), accept score >= threshold; ties at the threshold are all accepted, so the
    achieved FAR can exceed the requested one. nearest: sklearn ``roc_curve``, then the ROC point
    whose FPR is nearest the target (ties: the larger FPR). No genuine pairs: TAR is NaN.
    No impostor pairs: ValueError. `counts`: `binary_counts(labels, scores)` computed already; both
    conventions then read their thresholds off it instead of sorting again (the same numbers).
    """
    s, lab = check_scores_labels(scores, labels)
    f = check_fars(fars)
    n_gen = int(np.count_nonzero(lab))
    n_imp = int(s.size - n_gen)
    if n_imp == 0:
        raise ValueError("no impostor pairs: TAR@FAR is undefined (labels are all genuine)")
    check_far_resolution(f, n_imp, allow_tiny_far)
    if convention == "exact":
        return _exact(s[lab], s[~lab], f) if counts is None else _exact_counts(counts, f, n_gen, n_imp)
    if convention == "nearest":
        return _nearest(s, lab, f, n_gen, n_imp, counts)
    raise ValueError(f"unknown TAR@FAR convention {convention!r}; use 'exact' or 'nearest'")


def _exact(gen: np.ndarray, imp: np.ndarray, f: np.ndarray) -> TarFarResult:
    """Paper convention on pre-split genuine and impostor scores (float64, finite)."""
    imp_asc = np.sort(imp)
    gen_asc = np.sort(gen)
    n_imp, n_gen = imp_asc.size, gen_asc.size
    ks = far_ranks(n_imp, f)
    thr = np.empty(f.size)
    for i, k in enumerate(ks):
        thr[i] = k0_threshold(imp_asc[-1]) if k == 0 else imp_asc[n_imp - k]
    imp_acc = n_imp - np.searchsorted(imp_asc, thr, side="left")
    gen_acc = n_gen - np.searchsorted(gen_asc, thr, side="left")
    tar = gen_acc / n_gen if n_gen else np.full(f.size, np.nan)
    return TarFarResult(f, tar, thr, imp_acc / n_imp, n_gen, n_imp, "exact")


def _exact_counts(counts: Counts, f: np.ndarray, n_gen: int, n_imp: int) -> TarFarResult:
    """`_exact` read off binary_counts: the k-th highest impostor is the first distinct threshold whose
    cumulative impostor count reaches k, and the pairs accepted there are its counts (ties included)."""
    fps, tps, thr_desc = counts
    ks = far_ranks(n_imp, f)
    thr = np.empty(f.size)
    imp_acc = np.empty(f.size, dtype=np.int64)
    gen_acc = np.empty(f.size, dtype=np.int64)
    for i, k in enumerate(ks):
        if k == 0:
            top = int(np.searchsorted(fps, 1.0, side="left"))  # the highest impostor's threshold
            thr[i] = k0_threshold(float(thr_desc[top]))  # in float64, as _exact (counts may be float32)
            c = int(np.searchsorted(-thr_desc[:top], -thr[i], side="right"))  # thresholds >= thr[i], all above top
        else:
            c = int(np.searchsorted(fps, float(k), side="left")) + 1
            thr[i] = thr_desc[c - 1]
        imp_acc[i], gen_acc[i] = (int(fps[c - 1]), int(tps[c - 1])) if c else (0, 0)
    tar = gen_acc / n_gen if n_gen else np.full(f.size, np.nan)
    return TarFarResult(f, tar, thr, imp_acc / n_imp, n_gen, n_imp, "exact")


def _nearest(
    s: np.ndarray, lab: np.ndarray, f: np.ndarray, n_gen: int, n_imp: int, counts: Counts | None = None
) -> TarFarResult:
    """insightface IJB table: roc_curve (drop_intermediate on), flip, first argmin of |fpr - FAR|."""
    fpr, tpr, thr = roc_curve_points(lab, s, counts)
    fpr, tpr, thr = fpr[::-1], tpr[::-1], thr[::-1]
    idx = np.array([int(np.argmin(np.abs(fpr - x))) for x in f], dtype=np.int64)
    tar = tpr[idx] if n_gen else np.full(f.size, np.nan)
    return TarFarResult(f, tar, thr[idx].astype(np.float64), fpr[idx], n_gen, n_imp, "nearest")


def smallest_far(n_impostor: int) -> float:
    """The smallest FAR an impostor set of this size resolves, 1 / n_impostor (inf when empty)."""
    return 1.0 / n_impostor if n_impostor > 0 else math.inf
