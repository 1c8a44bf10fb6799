"""Curve primitives: one counting pass over scores, the ROC built on it, one area under a curve.

Shaped after scikit-learn's sklearn/metrics/_ranking.py, where every curve stands on one counting
primitive and one ``auc``. Naming rule of this module: ``*_counts`` return cumulative counts per
threshold (floats, like sklearn's), ``*_points`` return the rates of a curve at those thresholds,
``auc`` returns an area. TAR@FAR (analyze.tarfar), reject curves (analyze.reject), the ROC table
(analyze.experiments) and the figures' legends all take their ROC points and areas from here. numpy only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Counts", "auc", "binary_counts", "roc_curve_points"]


def binary_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, threshold) at each distinct score, thresholds descending.

    Accepting every pair with score >= thresholds[k] accepts tps[k] genuine and fps[k] impostor pairs.
    Tied scores collapse into one threshold, so their order cannot matter. Finite scores take the fast path
    (`_sorted_counts`: value sorts, no argsort); NaN or inf fall back to `_argsort_counts`, the original
    argsort construction (same numbers on finite scores, pinned by tests/test_curves.py).
    """
    s = np.asarray(scores)
    lab = np.asarray(labels).astype(bool, copy=False)
    if s.size and s.dtype.kind == "f" and np.isfinite(s).all():
        return _SharedCounts(_sorted_counts(lab, s))
    return _SharedCounts(_argsort_counts(labels, scores))


class _SharedCounts(tuple):
    """What binary_counts returns: the (fps, tps, thresholds) tuple, which also remembers the ROC points
    computed from it (`roc_curve_points`), so TAR@FAR, the plotted curve and the long table passing the same
    counts thin millions of points once. The remembered arrays are read-only."""


def _argsort_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """binary_counts by one unstable descending argsort and a cumulative sum of the labels in that order."""
    order = np.argsort(scores)[::-1]
    s_sorted = scores[order]
    distinct = np.flatnonzero(np.diff(s_sorted))
    idx = np.r_[distinct, s_sorted.size - 1]
    tps = np.cumsum(labels[order], dtype=np.float64)[idx]
    fps = 1.0 + idx - tps
    return fps, tps, s_sorted[idx]


def _sorted_counts(lab: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """binary_counts of finite scores without a permutation: one value sort of all scores gives the distinct
    thresholds and how many pairs score >= each (n - the first position of its run); the genuine scores, a
    small set, are counted per threshold by searchsorted + bincount. np.sort is several times faster than
    argsort (SIMD) and no 8-byte index per pair is gathered. Counts are integers, so the float64 results equal
    the argsort path's exactly (the threshold of a run holding both -0.0 and 0.0 may carry either sign)."""
    asc = np.sort(s)
    n = asc.size
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    np.not_equal(asc[1:], asc[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    del new_run
    thr = asc[starts][::-1]  # distinct scores, descending
    del asc
    gen_at = (starts.size - 1) - np.searchsorted(thr[::-1], s[lab], side="left")  # each genuine's threshold index
    tps = np.cumsum(np.bincount(gen_at, minlength=starts.size), dtype=np.float64)
    fps = (n - starts[::-1]).astype(np.float64)
    fps -= tps
    return fps, tps, thr


Counts = tuple[np.ndarray, np.ndarray, np.ndarray]
"""What `binary_counts` returns: (false positives, true positives, thresholds)."""


def roc_curve_points(labels: np.ndarray, scores: np.ndarray, counts: Counts | None = None) -> Counts:
    """The points of sklearn.metrics.roc_curve(labels, scores) (defaults: drop_intermediate=True).

    The same construction on `binary_counts` (one point per distinct score, descending; collinear
    points dropped; (0, 0) prepended with threshold inf). A class with no pair gives NaN rates.
    `counts`: `binary_counts(labels, scores)` computed already (one sort shared by several curves).
    """
    cached = counts.__dict__.get("roc") if isinstance(counts, _SharedCounts) else None
    if cached is not None:
        return cached
    points = _roc_points(*(binary_counts(labels, scores) if counts is None else counts))
    if isinstance(counts, _SharedCounts):
        for a in points:
            a.setflags(write=False)
        counts.__dict__["roc"] = points
    return points


def _roc_points(fps: np.ndarray, tps: np.ndarray, thresholds: np.ndarray) -> Counts:
    """roc_curve_points on counts: drop collinear points, prepend (0, 0, inf), divide by the class totals."""
    if tps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def auc(x: ArrayLike, y: ArrayLike, limit: float | None = None) -> float:
    """Trapezoid area under y(x); NaN in y gives NaN.

    Without `limit`: the whole curve, identical to sklearn.metrics.auc (x monotonic, either direction;
    at least 2 points). With `limit`: the area for x in [x[0], limit], x non-decreasing, y linearly
    interpolated at `limit` (the EDC's partial area; 0.0 when only x[0] lies below the limit).
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1 or xa.size < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {xa.shape} and {ya.shape}")
    if limit is None:
        direction = 1
        dx = np.diff(xa)
        if np.any(dx < 0):
            if not np.all(dx <= 0):
                raise ValueError(f"x is neither increasing nor decreasing: {xa}")
            direction = -1
        return float(direction * np.trapezoid(ya, xa))
    if (np.diff(xa) < 0).any():
        raise ValueError("x must be non-decreasing (pass fractions in ascending order)")
    if not xa[0] <= limit <= xa[-1]:
        raise ValueError(f"limit {limit} outside the covered range [{xa[0]}, {xa[-1]}]")
    inside = xa <= limit
    xs, ys = xa[inside], ya[inside]
    if xs[-1] < limit:
        nxt = int(np.argmax(~inside))
        w = (limit - xs[-1]) / (xa[nxt] - xs[-1])
        xs = np.append(xs, limit)
        ys = np.append(ys, ys[-1] + w * (ya[nxt] - ys[-1]))
    return float(np.trapezoid(ys, xs)) if xs.size > 1 else 0.0
