"""10-fold verification accuracy in insightface's convention, VAL@FAR in FaceNet's, and accuracy under rejection.

insightface `recognition/arcface_torch/eval/verification.py` (after FaceNet's `lfw.py`): embeddings are the
sum of the image's and its mirror's raw embeddings when the flip is stored, L2-normalised; a pair's distance
is the squared euclidean distance; a pair is accepted as genuine when distance < threshold (strict); the
thresholds are 0, 0.01, ..., 3.99; the pairs are cut into `folds` contiguous folds in protocol order (sklearn
KFold without shuffle: the first n % folds folds hold one pair more); each fold is tested at the threshold
with the best accuracy on the other folds (the first such threshold on ties); the result is the mean and
the population std (ddof 0) of the test-fold accuracies. See docs/metrics.md, "10-fold accuracy". numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from analyze.reject import kept_counts, rejection_order
from analyze.rows import l2_normalize

__all__ = [
    "ACCURACY_THRESHOLDS",
    "VAL_THRESHOLDS",
    "AccuracyResult",
    "ValResult",
    "accuracy_under_rejection",
    "check_folds",
    "facenet_threshold",
    "flip_features",
    "kfold_accuracy",
    "kfold_bounds",
    "squared_distances",
    "val_at_far",
]

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
"""insightface's accuracy thresholds on the squared distance: np.arange(0, 4, 0.01), 400 values."""

VAL_THRESHOLDS = np.arange(0, 4, 0.001)
"""insightface's (FaceNet's) VAL thresholds: np.arange(0, 4, 0.001), 4000 values."""

VAL_FAR = 1e-3
"""The FAR at which insightface's `evaluate` reports VAL."""


def check_folds(n_pairs: int, folds: int, what: str = "pairs") -> None:
    """One-line ValueError unless 1 <= folds <= n_pairs (folds = 1 tests on the training pairs, as LFold does)."""
    if folds < 1:
        raise ValueError(f"--folds {folds}: need at least 1 fold")
    if n_pairs < folds:
        raise ValueError(f"{n_pairs} {what} are fewer than --folds {folds}: every fold needs at least one pair")


def kfold_bounds(n_pairs: int, folds: int) -> np.ndarray:
    """(folds, 2) [start, stop) of each contiguous test fold: sklearn KFold(shuffle=False) sizes."""
    check_folds(n_pairs, folds)
    sizes = np.full(folds, n_pairs // folds, dtype=np.int64)
    sizes[: n_pairs % folds] += 1
    stops = np.cumsum(sizes)
    return np.stack([stops - sizes, stops], axis=1)


def flip_features(embedding: np.ndarray, embedding_flip: np.ndarray | None = None) -> np.ndarray:
    """L2-normalised (embedding + embedding_flip) in float64 (just the embedding when no flip is stored)."""
    x = np.asarray(embedding, dtype=np.float64)
    if embedding_flip is not None:
        x = x + np.asarray(embedding_flip, dtype=np.float64)
    return l2_normalize(x)


def squared_distances(features: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 65536) -> np.ndarray:
    """sum((f[i] - f[j])**2) per pair in float64, in blocks of pairs (the distance insightface thresholds)."""
    out = np.empty(len(i), dtype=np.float64)
    for a in range(0, len(i), block):
        d = np.asarray(features[i[a : a + block]], np.float64) - np.asarray(features[j[a : a + block]], np.float64)
        out[a : a + block] = np.sum(np.square(d), axis=1)  # insightface's summation, bit for bit
    return out


def _split(dist: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(dist, dtype=np.float64)
    lab = np.asarray(labels)
    if d.ndim != 1 or lab.shape != d.shape:
        raise ValueError(f"distances and labels must be 1-D of equal length, got {d.shape} and {lab.shape}")
    if not np.isfinite(d).all():
        raise ValueError(f"distances contain {int((~np.isfinite(d)).sum())} non-finite values; drop those pairs")
    return d, lab.astype(bool)


def _below(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many values are < each threshold (the strict `np.less` of insightface's prediction)."""
    return np.searchsorted(sorted_values, thresholds, side="left")


@dataclass(frozen=True)
class AccuracyResult:
    """Per test fold: bounds, chosen threshold, its training and test accuracy; mean TPR/FPR per threshold."""

    bounds: np.ndarray
    threshold: np.ndarray
    train_accuracy: np.ndarray
    accuracy: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    thresholds: np.ndarray

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def accuracy_std(self) -> float:
        """Population std over folds (np.std, ddof 0), as insightface prints it."""
        return float(np.std(self.accuracy))

    @property
    def threshold_mean(self) -> float:
        return float(np.mean(self.threshold))


def _fold_sets(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(bounds row, train mask, test mask) per fold; one fold trains and tests on everything (LFold)."""
    bounds = kfold_bounds(n, folds)
    out = []
    for b in bounds:
        test = np.zeros(n, dtype=bool)
        test[b[0] : b[1]] = True
        out.append((b, ~test if folds > 1 else test, test))
    return out


def _rates(d: np.ndarray, lab: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(accuracy, tpr, fpr) at every threshold of one pair set; tpr/fpr are 0 for an empty class (insightface)."""
    gen, imp = np.sort(d[lab]), np.sort(d[~lab])
    tp = _below(gen, thresholds)
    fp = _below(imp, thresholds)
    tn = imp.size - fp
    acc = (tp + tn) / d.size
    tpr = tp / gen.size if gen.size else np.zeros(thresholds.size)
    fpr = fp / imp.size if imp.size else np.zeros(thresholds.size)
    return acc, tpr, fpr


def kfold_accuracy(
    dist: ArrayLike, labels: ArrayLike, folds: int = 10, thresholds: ArrayLike | None = None
) -> AccuracyResult:
    """insightface's `calculate_roc`: per contiguous fold, the first best training threshold, tested on the fold."""
    d, lab = _split(dist, labels)
    thr = ACCURACY_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    sets = _fold_sets(d.size, folds)
    chosen, train_acc, test_acc = np.empty(folds), np.empty(folds), np.empty(folds)
    tprs, fprs = np.empty((folds, thr.size)), np.empty((folds, thr.size))
    for f, (_, train, test) in enumerate(sets):
        acc_train, _, _ = _rates(d[train], lab[train], thr)
        best = int(np.argmax(acc_train))
        acc_test, tprs[f], fprs[f] = _rates(d[test], lab[test], thr)
        chosen[f], train_acc[f], test_acc[f] = thr[best], acc_train[best], acc_test[best]
    bounds = np.stack([s[0] for s in sets])
    return AccuracyResult(bounds, chosen, train_acc, test_acc, tprs.mean(0), fprs.mean(0), thr)


def facenet_threshold(far_train: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """The threshold FaceNet's `calculate_val` reads off the training FARs at `far_target`.

    FaceNet interpolates thresholds over FAR with scipy interp1d(kind='slinear'), a degree-1 B-spline with
    the FARs (non-decreasing, with repeats) as knots; this is that spline's value, written out. At a FAR
    equal to the target: the last threshold with that FAR (at the top FAR, when repeated: 0.0, the spline's
    degenerate end). Strictly between two FARs a < target < b: the line from (a, last threshold with FAR a)
    to (b, first threshold with FAR b). The caller checks max(far_train) >= target.
    """
    x, y = np.asarray(far_train, np.float64), np.asarray(thresholds, np.float64)
    if far_target == x[-1]:
        # the spline's right end: with the top FAR repeated its last knot interval is empty and the
        # B-spline evaluates to 0.0 there (threshold 0 accepts nothing); with it unique, the last threshold
        return 0.0 if x.size > 1 and x[-2] == x[-1] else float(y[-1])
    lo = int(np.searchsorted(x, far_target, side="right")) - 1  # last FAR <= target
    if x[lo] == far_target:
        return float(y[lo])
    hi = lo + 1  # first FAR above the target
    w = (far_target - x[lo]) / (x[hi] - x[lo])
    return float(y[lo] + w * (y[hi] - y[lo]))


@dataclass(frozen=True)
class ValResult:
    """FaceNet VAL@FAR per fold (validation rate, false accept rate, threshold) and their summary."""

    far_target: float
    val: np.ndarray
    far: np.ndarray
    threshold: np.ndarray

    @property
    def val_mean(self) -> float:
        return float(np.mean(self.val))

    @property
    def val_std(self) -> float:
        return float(np.std(self.val))

    @property
    def far_mean(self) -> float:
        return float(np.mean(self.far))


def val_at_far(
    dist: ArrayLike,
    labels: ArrayLike,
    far_target: float = VAL_FAR,
    folds: int = 10,
    thresholds: ArrayLike | None = None,
) -> ValResult:
    """FaceNet's `calculate_val`: per fold, the threshold at the target FAR on the training folds
    (`facenet_threshold`; 0.0, accepting nothing, when no training threshold reaches the target), then
    VAL = accepted genuine / genuine and FAR = accepted impostor / impostor on the test fold (NaN for an
    empty class, where FaceNet divides by zero)."""
    d, lab = _split(dist, labels)
    thr = VAL_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    sets = _fold_sets(d.size, folds)
    val, far, chosen = np.empty(folds), np.empty(folds), np.empty(folds)
    for f, (_, train, test) in enumerate(sets):
        imp_train = np.sort(d[train & ~lab])
        far_train = _below(imp_train, thr) / imp_train.size if imp_train.size else None
        reach = far_train is not None and far_train[-1] >= far_target
        t = facenet_threshold(far_train, thr, far_target) if reach else 0.0
        gen_t, imp_t = d[test & lab], d[test & ~lab]
        val[f] = np.count_nonzero(gen_t < t) / gen_t.size if gen_t.size else np.nan
        far[f] = np.count_nonzero(imp_t < t) / imp_t.size if imp_t.size else np.nan
        chosen[f] = t
    return ValResult(float(far_target), val, far, chosen)


@dataclass(frozen=True)
class RejectAccuracy:
    """10-fold accuracy after rejecting each fraction of the most uncertain pairs (NaN: fewer kept than folds)."""

    fractions: np.ndarray
    kept_pairs: np.ndarray
    accuracy_mean: np.ndarray
    accuracy_std: np.ndarray
    threshold_mean: np.ndarray


def accuracy_under_rejection(
    dist: ArrayLike,
    labels: ArrayLike,
    uncertainty: ArrayLike,
    fractions: ArrayLike,
    folds: int = 10,
    thresholds: ArrayLike | None = None,
) -> RejectAccuracy:
    """For each fraction r: drop the int(n (1 - r))-complement of most uncertain pairs (the reject curves'
    stable order and kept counts), then `kfold_accuracy` on the kept pairs in their protocol order, so the
    folds stay contiguous as insightface cuts them."""
    d, lab = _split(dist, labels)
    perm = rejection_order(np.asarray(uncertainty), "uncertainty")
    r = np.asarray(fractions, dtype=np.float64)
    kept = kept_counts(d.size, r)
    mean, std, thr_mean = np.full(r.size, np.nan), np.full(r.size, np.nan), np.full(r.size, np.nan)
    for k, n in enumerate(kept):
        if n < folds:
            continue
        rows = np.sort(perm[:n])
        res = kfold_accuracy(d[rows], lab[rows], folds, thresholds)
        mean[k], std[k], thr_mean[k] = res.accuracy_mean, res.accuracy_std, res.threshold_mean
    return RejectAccuracy(r, kept, mean, std, thr_mean)
