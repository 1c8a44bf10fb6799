"""EER, DET points (FNMR vs FMR) and the tidy long ROC table, all on analyze.curves.binary_counts.

Operating points: accepting every pair with score >= t gives FMR(t) = accepted impostors / impostors and
FNMR(t) = 1 - accepted genuine / genuine; one point per distinct score (ties cannot be split), plus the
accept-nothing point (threshold inf, FMR 0, FNMR 1). The EER's interpolation rule is named in `eer`; the
`analyze roc` command calls `roc_long_table`, `det_table` and `eer_table` per (model, fusion). numpy/pandas only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from analyze.curves import Counts, binary_counts, roc_curve_points
from analyze.tarfar import check_scores_labels

__all__ = ["EER_RULE", "EerResult", "det_points", "det_table", "eer", "eer_table", "roc_long_table"]

EER_RULE = "linear-between-operating-points"
"""The EER convention: where the straight segment between the two operating points whose FNMR - FMR changes
sign crosses FNMR = FMR; the same number as brentq(1 - x - interp1d(fpr, tpr)(x)) on the full ROC polyline."""


def _counts(
    scores: ArrayLike, labels: ArrayLike, counts: Counts | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    s, lab = check_scores_labels(scores, labels)
    n_gen = int(lab.sum())
    n_imp = int(lab.size - n_gen)
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"EER/DET need genuine and impostor pairs, got {n_gen} genuine and {n_imp} impostor")
    fps, tps, thr = binary_counts(lab, s) if counts is None else counts
    return fps, tps, thr, n_gen, n_imp


def det_points(
    scores: ArrayLike, labels: ArrayLike, counts: Counts | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fmr, fnmr, threshold) at every operating point, thresholds descending, starting at (0, 1, inf).
    `counts`: `binary_counts(labels, scores)` when computed already (one sort shared by EER, DET and ROC)."""
    fps, tps, thr, n_gen, n_imp = _counts(scores, labels, counts)
    fmr = np.r_[0.0, fps / n_imp]
    fnmr = np.r_[1.0, 1.0 - tps / n_gen]
    return fmr, fnmr, np.r_[np.inf, thr]


@dataclass(frozen=True)
class EerResult:
    """The EER, the operating point nearest the crossing (threshold, its FMR and FNMR) and the rule."""

    eer: float
    threshold: float
    fmr: float
    fnmr: float
    rule: str = EER_RULE


def eer(scores: ArrayLike, labels: ArrayLike, counts: Counts | None = None) -> EerResult:
    """Equal error rate under `EER_RULE`: between the last operating point with FNMR >= FMR and the next one
    (FNMR <= FMR), EER = FMR + t (FMR' - FMR) with t = d / (d - d'), d = FNMR - FMR; `threshold` is that of
    the segment end with the smaller |FNMR - FMR| (the higher-threshold end on ties)."""
    fps, tps, thresholds, n_gen, n_imp = _counts(scores, labels, counts)

    def point(j: int) -> tuple[float, float, float]:
        """(fmr, fnmr, threshold) of det_points' point j, by the same float operations on one element."""
        if j == 0:
            return 0.0, 1.0, np.inf
        return fps[j - 1] / n_imp, 1.0 - tps[j - 1] / n_gen, thresholds[j - 1]

    # d = FNMR - FMR is non-increasing along the points (rounding is monotone), d[0] = 1 > 0 and d[-1] = -1:
    # bisect for the first point at or past the crossing instead of building the curve of millions of points
    lo, hi = 0, fps.size  # d(lo) > 0 >= d(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        fmr_m, fnmr_m, _ = point(mid)
        lo, hi = (lo, mid) if fnmr_m - fmr_m <= 0 else (mid, hi)
    (fmr0, fnmr0, thr0), (fmr1, fnmr1, thr1) = point(hi - 1), point(hi)
    d0, d1 = fnmr0 - fmr0, fnmr1 - fmr1
    t = d0 / (d0 - d1)
    value = float(fmr0 + t * (fmr1 - fmr0))
    near = (thr1, fmr1, fnmr1) if abs(d1) < abs(d0) else (thr0, fmr0, fnmr0)
    return EerResult(value, float(near[0]), float(near[1]), float(near[2]))


def det_table(
    scores: ArrayLike,
    labels: ArrayLike,
    key: dict[str, Any] | None = None,
    counts: Counts | None = None,
    rows: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Tidy DET points (fmr, fnmr, threshold) with `key`'s columns in front; plot both axes log (or probit).
    `rows`: the operating points to keep (positions, or a function of the fmr array returning them, e.g. a
    thinning for a figure), selected before the table is built, so millions of points never become a keyed frame."""
    fmr, fnmr, thr = det_points(scores, labels, counts)
    if rows is not None:
        keep = rows(fmr) if callable(rows) else rows
        fmr, fnmr, thr = fmr[keep], fnmr[keep], thr[keep]
    return _with_key(pd.DataFrame({"fmr": fmr, "fnmr": fnmr, "threshold": thr}), key)


def roc_long_table(
    scores: ArrayLike, labels: ArrayLike, key: dict[str, Any] | None = None, counts: Counts | None = None
) -> pd.DataFrame:
    """The tidy long ROC table (far, tar, threshold): sklearn roc_curve's points (`roc_curve_points`), one row
    each, `key`'s columns in front, beside the wide TAR@FAR table."""
    s, lab = check_scores_labels(scores, labels)
    far, tar, thr = roc_curve_points(lab, s, counts)
    return _with_key(pd.DataFrame({"far": far, "tar": tar, "threshold": thr}), key)


def eer_table(
    scores: ArrayLike, labels: ArrayLike, key: dict[str, Any] | None = None, counts: Counts | None = None
) -> pd.DataFrame:
    """One row (key..., eer, threshold, fmr, fnmr, eer_rule)."""
    r = eer(scores, labels, counts)
    row = {**(key or {}), "eer": r.eer, "threshold": r.threshold, "fmr": r.fmr, "fnmr": r.fnmr, "eer_rule": r.rule}
    return pd.DataFrame([row])


def _with_key(df: pd.DataFrame, key: dict[str, Any] | None) -> pd.DataFrame:
    if not key:
        return df
    for k, v in reversed(list(key.items())):
        df.insert(0, k, v)
    return df
