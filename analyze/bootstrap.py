"""Percentile bootstrap intervals for verification metrics, resampling subjects (not pairs).

Pairs are not independent: every pair of one subject shares that subject's images, so resampling pairs
understates the spread. A replicate draws the n resampling units (subjects; templates, or images, where
subjects are unknown) with replacement, giving unit u a multiplicity m_u (how often it was drawn), and
every pair (u, v) then weighs m_u * m_v: the number of copies of that pair among all pairs of the
resampled population (a subject drawn twice contributes both copies' pairs with every other copy; a
genuine pair inside subject u weighs m_u**2). A pair with an undrawn unit weighs 0. Metrics are computed
on these weights by the weighted forms below, each equal to the unweighted metric on the explicitly
duplicated pair list. The interval is the percentile one: the (1 - level)/2 and (1 + level)/2 quantiles
of the replicates (np.nanpercentile, linear). Seeded with numpy's default_rng(seed).

Efficiency: scores are sorted once (`SortedPairs`); a replicate only gathers its weights in that order and
takes cumulative sums, O(n) per replicate and statistic. numpy only. See docs/metrics.md, "Bootstrap".
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from analyze.accuracy import ACCURACY_THRESHOLDS, kfold_bounds
from analyze.curves import auc
from analyze.reject import rejection_order
from analyze.tarfar import check_fars, check_scores_labels, k0_threshold

__all__ = [
    "BOOTSTRAP_LEVEL",
    "PairUnits",
    "SortedPairs",
    "WeightedKFold",
    "accuracy_interval",
    "pair_units",
    "percentile_interval",
    "reject_interval",
    "replicate_multiplicities",
    "replicate_weights",
    "tar_at_far_interval",
    "tpir_replicates",
    "weighted_reject_curve",
    "weighted_tar_at_far",
]

BOOTSTRAP_LEVEL = 0.95
"""Default coverage of the percentile interval: the 2.5th and 97.5th percentiles."""


@dataclass(frozen=True)
class PairUnits:
    """Each pair's two resampling units (indices into 0..n_units-1) and what a unit is."""

    a: np.ndarray
    b: np.ndarray
    n_units: int
    kind: str


def pair_units(
    ids_a: ArrayLike, ids_b: ArrayLike, subject_a: ArrayLike | None = None, subject_b: ArrayLike | None = None,
    id_kind: str = "template",
) -> PairUnits:  # fmt: skip
    """Units per pair side: the subject where known (>= 0), else the side's own id (template id, or image
    row at image level, `id_kind`); subjects and ids never collide. Pass the scored pairs only."""
    ia, ib = np.asarray(ids_a, np.int64), np.asarray(ids_b, np.int64)
    if ia.shape != ib.shape or ia.ndim != 1:
        raise ValueError(f"pair ids must be 1-D of equal length, got {ia.shape} and {ib.shape}")
    sa = np.full(ia.shape, -1, np.int64) if subject_a is None else np.asarray(subject_a, np.int64)
    sb = np.full(ib.shape, -1, np.int64) if subject_b is None else np.asarray(subject_b, np.int64)
    # key >= 0: subject; key < 0: -1 - id (ids are >= 0), so the two kinds stay distinct
    ka = np.where(sa >= 0, sa, -1 - ia)
    kb = np.where(sb >= 0, sb, -1 - ib)
    n_known = int(np.count_nonzero(sa >= 0)) + int(np.count_nonzero(sb >= 0))
    kind = "subject" if n_known == 2 * ia.size else (id_kind if not n_known else f"subject, else {id_kind}")
    inv_a, inv_b, n_units = _dense_ranks(ka, kb)
    return PairUnits(inv_a, inv_b, n_units, kind)


def _dense_ranks(ka: np.ndarray, kb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """np.unique(np.r_[ka, kb], return_inverse=True) split back into the two sides, and the number of keys.
    Keys spanning a range not much wider than their count (subjects, template ids) are ranked by a presence
    table, with no sort and no concatenated copy of millions of pairs; the ranks are the same."""
    if not ka.size:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), 0
    lo = min(int(ka.min()), int(kb.min()))
    span = max(int(ka.max()), int(kb.max())) - lo + 1
    if span > 4 * (ka.size + kb.size) + 1024:
        keys, inv = np.unique(np.r_[ka, kb], return_inverse=True)
        return inv[: ka.size], inv[ka.size :], int(keys.size)
    present = np.zeros(span, dtype=bool)
    present[ka - lo] = True
    present[kb - lo] = True
    rank = np.cumsum(present, dtype=np.intp) - 1
    return rank[ka - lo], rank[kb - lo], int(rank[-1]) + 1


def replicate_multiplicities(n_units: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """n_boot float64 vectors m (how often each unit was drawn in n draws with replacement), default_rng(seed)."""
    if n_boot < 1:
        raise ValueError(f"--bootstrap {n_boot}: need at least 1 replicate")
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.bincount(rng.integers(0, n_units, n_units), minlength=n_units).astype(np.float64)


def replicate_weights(units: PairUnits, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """n_boot float64 pair-weight vectors m_a * m_b (the multiplicities of `replicate_multiplicities`)."""
    for m in replicate_multiplicities(units.n_units, n_boot, seed):
        yield m[units.a] * m[units.b]


def percentile_interval(replicates: ArrayLike, level: float = BOOTSTRAP_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) percentiles over axis 0 of the replicate statistics; NaN replicates are ignored."""
    if not 0 < level < 1:
        raise ValueError(f"bootstrap level {level}: must be in (0, 1)")
    r = np.asarray(replicates, dtype=np.float64)
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    if np.isnan(r).all(axis=0).any():  # nanpercentile warns on an all-NaN column; give NaN quietly
        lo, hi = np.full(r.shape[1:], np.nan), np.full(r.shape[1:], np.nan)
        ok = ~np.isnan(r).all(axis=0)
        if ok.any():
            lo[ok], hi[ok] = np.nanpercentile(r[:, ok], q, axis=0)
        return lo, hi
    lo, hi = np.nanpercentile(r, q, axis=0)
    return lo, hi


def _check_weights(weights: ArrayLike, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights shape {w.shape} does not match {n} pairs")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    return w


class SortedPairs:
    """Scores sorted once (descending), split by class, with every index a weighted TAR@FAR needs, so a
    weighting costs a gather of its genuine and impostor weights and one cumulative sum of each."""

    def __init__(self, scores: ArrayLike, labels: ArrayLike, head: int | None = None) -> None:
        """`head`: order only the `head` highest impostors (more where ties straddle the cut; None: all), for
        statistics that never look below them (TAR@FAR up to a largest FAR): `complete` says whether every
        impostor is in; a head needs the impostor total from elsewhere (`tar_at_far_units` with `bind`)."""
        s, lab = check_scores_labels(scores, labels)
        self.n = s.size
        n_imp = s.size - int(np.count_nonzero(lab))
        if head is not None and head < n_imp:
            at = s.size - max(head, 1)  # genuine pairs as -inf sit below every impostor: the head-th highest impostor
            cut = np.partition(np.where(lab, -np.inf, s), at)[at]
            keep = np.flatnonzero(lab | (s >= cut))  # ascending pair index: the stable sort's tie order is kept
            order = keep[np.argsort(-s[keep], kind="stable")]
        else:
            order = np.argsort(-s, kind="stable")
        lab_o = lab[order]
        self.imp_order, self.gen_order = order[~lab_o], order[lab_o]
        self.complete = self.imp_order.size == n_imp
        del order, lab_o
        self.imp_s, self.gen_s = s[self.imp_order], s[self.gen_order]
        neg_imp, neg_gen = -self.imp_s, -self.gen_s
        # impostor position p: last impostor tied with it, and how many genuine score >= its score
        ends = np.r_[np.flatnonzero(np.diff(self.imp_s)), self.imp_s.size - 1] if self.imp_s.size else np.zeros(0, int)
        self.imp_group_last = np.repeat(ends, np.diff(np.r_[-1, ends]))
        self.gen_at_least = np.searchsorted(neg_gen, neg_imp, side="right")
        # distinct scores of both classes (descending): how many of each class score >= it; in a head, only
        # the scores down to its lowest impostor (below it the impostor counts are unknown)
        distinct = -np.unique(np.r_[neg_imp, neg_gen])
        if not self.complete:
            distinct = distinct[distinct >= self.imp_s[-1]] if self.imp_s.size else distinct[:0]
        self.thresholds = distinct
        self.imp_at_distinct = np.searchsorted(neg_imp, -distinct, side="right")
        self.gen_at_distinct = np.searchsorted(neg_gen, -distinct, side="right")
        self._units: tuple[np.ndarray, ...] | None = None
        self._totals: _UnitPairTotals | None = None

    def bind(self, units: PairUnits) -> None:
        """Keep each class's units in sorted order, for `tar_at_far_units` (int32 where they fit)."""
        dt = np.int32 if units.n_units < 2**31 else np.int64
        self._units = tuple(
            np.asarray(u[o], dtype=dt) for u in (units.a, units.b) for o in (self.imp_order, self.gen_order)
        )
        if not self.complete:  # a head: the impostor weight below it comes from the unit-pair counts
            self._totals = _UnitPairTotals(units.a, units.b, units.n_units, minus=self.gen_order)

    def tar_at_far(
        self, weights: np.ndarray, fars: np.ndarray, convention: str = "exact"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tar, threshold, far_achieved) per FAR for pair weights in input order; NaN for a weightless class."""
        if not self.complete:
            raise ValueError("a head of the impostors cannot weigh pairs in input order; use tar_at_far_units")
        return self._stats(weights[self.imp_order], weights[self.gen_order], fars, convention)

    def tar_at_far_units(
        self, m: np.ndarray, fars: np.ndarray, convention: str = "exact"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """`tar_at_far` with weights m_a * m_b from unit multiplicities m (after `bind`): the replicate loop.
        On a head (`complete` False): None where this replicate's FARs reach below the head."""
        if self._units is None:
            raise ValueError("SortedPairs.bind(units) first")
        ai, ag, bi, bg = self._units
        total = None if self._totals is None else self._totals.total(m)
        w, w2, ci = self._buffers(ai.size)
        np.take(m, ai, out=w)  # into this thread's buffers: no fresh pages for millions of pairs per replicate
        np.take(m, bi, out=w2)
        np.multiply(w, w2, out=w)
        ci[0] = 0.0
        np.cumsum(w, out=ci[1:])
        cg = np.r_[0.0, np.cumsum(m[ag] * m[bg])]
        return self._from_cumulative(cg, ci, fars, convention, total)

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This thread's impostor weight buffers (two of n, one of n + 1), kept across replicates."""
        local = self.__dict__.setdefault("_local", threading.local())
        if getattr(local, "n", None) != n:
            local.n, local.bufs = n, (np.empty(n), np.empty(n), np.empty(n + 1))
        return local.bufs

    def _stats(
        self, w_imp: np.ndarray, w_gen: np.ndarray, fars: np.ndarray, convention: str, total: float | None = None
    ) -> tuple | None:
        """`total`: the weight of all impostors where `w_imp` holds only a head's (None: w_imp holds them all)."""
        ci = np.r_[0.0, np.cumsum(w_imp)]  # ci[c]: weight of the c highest impostors
        cg = np.r_[0.0, np.cumsum(w_gen)]
        return self._from_cumulative(cg, ci, fars, convention, total)

    def _from_cumulative(
        self, cg: np.ndarray, ci: np.ndarray, fars: np.ndarray, convention: str, total: float | None
    ) -> tuple | None:
        w_all = ci[-1] if total is None else total
        if convention == "exact":
            return self._exact(cg, ci, fars, w_all)
        if convention == "nearest":
            return self._nearest(cg, ci, fars, w_all)
        raise ValueError(f"unknown TAR@FAR convention {convention!r}; use 'exact' or 'nearest'")

    def _exact(self, cg: np.ndarray, ci: np.ndarray, fars: np.ndarray, w_imp: float) -> tuple[np.ndarray, ...] | None:
        nan = np.full(fars.size, np.nan)
        w_gen = cg[-1]
        if w_imp <= 0:
            return nan, nan.copy(), nan.copy()
        ks = np.minimum(np.round(fars * w_imp), w_imp)  # round half to even, as far_ranks; never past all impostors
        if not self.complete and not (ci[-1] >= ks.max() and ci[-1] > 0):
            return None  # the k-th impostor (or the first of positive weight) lies below the head
        tar, thr, far = np.empty(fars.size), np.empty(fars.size), np.empty(fars.size)
        for q, k in enumerate(ks):
            if k == 0:
                top = int(np.searchsorted(ci, 0.0, side="right")) - 1  # the highest impostor with weight > 0
                thr[q] = k0_threshold(self.imp_s[top])
                n_imp = int(np.searchsorted(-self.imp_s, -thr[q], side="right"))  # impostors >= threshold
                n_gen = int(np.searchsorted(-self.gen_s, -thr[q], side="right"))
            else:
                p = int(np.searchsorted(ci, k, side="left")) - 1  # the k-th highest impostor, copies counted
                thr[q] = self.imp_s[p]
                n_imp = int(self.imp_group_last[p]) + 1  # ties at the threshold are all accepted
                n_gen = int(self.gen_at_least[p])
            tar[q] = cg[n_gen] / w_gen if w_gen > 0 else np.nan
            far[q] = ci[n_imp] / w_imp
        return tar, thr, far

    def _nearest(self, cg: np.ndarray, ci: np.ndarray, fars: np.ndarray, w_imp: float) -> tuple[np.ndarray, ...] | None:
        """roc_curve_points' construction on weighted counts (zero-weight tie groups dropped, as sklearn's
        sample_weight does), then the first FPR nearest each FAR on the flipped curve. Only the curve's head
        up to a little past the largest FAR is built (a point's thinning depends on its neighbours only)."""
        nan = np.full(fars.size, np.nan)
        w_gen = cg[-1]
        if w_imp <= 0:
            return nan, nan.copy(), nan.copy()
        if not self.complete and not ci[-1] > fars.max() * w_imp:
            return None  # the largest FAR lies below the head
        n_d = self.thresholds.size
        head = int(np.searchsorted(ci, fars.max() * w_imp, side="right"))  # impostors up to the largest FAR
        end = min(n_d, int(np.searchsorted(self.imp_at_distinct, head, side="right")) + 1024)
        while True:
            fpr, tpr, thr = self._thinned(cg, ci, end, w_imp, w_gen)
            inner = fpr[:-1] if end < n_d else fpr  # the slice's last point may not survive the full curve
            if end == n_d or np.unique(inner[inner > fars.max()]).size >= 2:
                break
            end = min(n_d, 2 * end)
        if end == n_d and not self.complete:
            return None  # the curve would need points below the head
        idx = np.array([_nearest_index(fpr, f) for f in fars], dtype=np.int64)
        return tpr[idx], thr[idx], fpr[idx]

    def _thinned(self, cg: np.ndarray, ci: np.ndarray, end: int, w_imp: float, w_gen: float) -> tuple[np.ndarray, ...]:
        """(fpr, tpr, threshold) of the first `end` distinct thresholds, thinned, with (0, 0, inf) in front."""
        tps, fps = cg[self.gen_at_distinct[:end]], ci[self.imp_at_distinct[:end]]
        thr = self.thresholds[:end]
        step = np.r_[True, (np.diff(tps) != 0) | (np.diff(fps) != 0)] & ((tps > 0) | (fps > 0))
        tps, fps, thr = tps[step], fps[step], thr[step]
        if tps.size > 2:
            keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
            tps, fps, thr = tps[keep], fps[keep], thr[keep]
        tpr = np.r_[0.0, tps] / w_gen if w_gen > 0 else np.full(tps.size + 1, np.nan)
        return np.r_[0.0, fps] / w_imp, tpr, np.r_[np.inf, thr]


def _nearest_index(fpr: np.ndarray, far: float) -> int:
    """argmin |fpr - far| on the flipped curve (first = larger FPR, and of equal FPRs the lower threshold),
    found by bisection on the ascending `fpr` instead of a pass over it."""
    below = int(np.searchsorted(fpr, far, side="right")) - 1  # last point with fpr <= far (fpr[0] = 0)
    if below == fpr.size - 1:
        return below
    above = int(np.searchsorted(fpr, fpr[below + 1], side="right")) - 1  # last point of the next FPR value
    return above if abs(fpr[above] - far) <= abs(fpr[below] - far) else below


def weighted_tar_at_far(
    scores: ArrayLike, labels: ArrayLike, weights: ArrayLike, fars: ArrayLike, convention: str = "exact"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TAR@FAR with pair weights (tar, threshold, far_achieved). exact: W = impostor weight, k = round(FAR W),
    threshold = the impostor score where the descending cumulative impostor weight first reaches k (k = 0:
    highest impostor of positive weight + 1e-8), TAR = genuine weight at score >= threshold / genuine weight;
    nearest: sklearn's ROC on weighted counts. Integer weights equal the unweighted metric on the list with
    each pair repeated weight times."""
    sp = SortedPairs(scores, labels)
    return sp.tar_at_far(_check_weights(weights, sp.n), check_fars(fars), convention)


def tar_at_far_interval(
    scores: ArrayLike,
    labels: ArrayLike,
    units: PairUnits,
    fars: ArrayLike,
    convention: str = "exact",
    n_boot: int = 100,
    seed: int = 0,
    level: float = BOOTSTRAP_LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """(tar_lo, tar_hi) per FAR: for `analyze roc` and `analyze fusion` (one call per model, fusion, distance)."""
    f = check_fars(fars)
    lab = np.asarray(labels).astype(bool)
    n_imp = lab.size - int(np.count_nonzero(lab))
    head = int(math.ceil(HEAD_FACTOR * float(f.max(initial=0.0)) * n_imp)) + HEAD_MARGIN
    sp = SortedPairs(scores, labels, head=head if head < n_imp // 2 else None)
    sp.bind(units)
    full: list[SortedPairs] = []
    lock = threading.Lock()

    def replicate(m: np.ndarray) -> np.ndarray:
        got = sp.tar_at_far_units(m, f, convention)
        if got is None:  # this replicate reaches below the head: the whole order (built once)
            with lock:
                if not full:
                    whole = SortedPairs(scores, labels)
                    whole.bind(units)
                    full.append(whole)
            got = full[0].tar_at_far_units(m, f, convention)
        return got[0]

    ms = list(replicate_multiplicities(units.n_units, n_boot, seed))  # the same stream, drawn in order
    with ThreadPoolExecutor(max_workers=BOOTSTRAP_THREADS) as pool:  # numpy's gathers and sums drop the GIL
        reps = list(pool.map(replicate, ms))
    return percentile_interval(np.stack(reps), level)


HEAD_FACTOR = 2.0
"""tar_at_far_interval orders only the HEAD_FACTOR x (largest FAR) x n_impostors highest impostors (plus
HEAD_MARGIN): a replicate's k-th impostor lies there unless its weights are far from even; one that does not
is recomputed on the whole order, so the intervals never depend on this choice."""
HEAD_MARGIN = 4096
BOOTSTRAP_THREADS = 2
"""Replicates in flight at once (each is numpy gathers and cumulative sums that release the GIL)."""


class _UnitPairTotals:
    """The total weight sum_pairs m_a m_b of a pair list, from the counts C[u, v] of its unit pairs: m' C m, in
    integers (float64, exact below 2**53), without a pass over the pairs; dense for up to DENSE_UNITS units."""

    DENSE_UNITS = 4096

    def __init__(self, a: np.ndarray, b: np.ndarray, n_units: int, minus: np.ndarray | None = None) -> None:
        """The pairs (a[i], b[i]), less those at positions `minus` (e.g. the genuine ones, a few: subtracting
        their counts spares a copy of the millions of others)."""
        self.dense = n_units <= self.DENSE_UNITS
        dt = np.int32 if n_units * n_units < 2**31 else np.int64
        key = np.asarray(a, dt) * dt(n_units) + np.asarray(b, dt)
        if self.dense:
            c = np.bincount(key, minlength=n_units * n_units)
            del key
            if minus is not None and len(minus):
                c -= np.bincount(np.asarray(a[minus], np.int64) * n_units + b[minus], minlength=n_units * n_units)
            self.c = c.astype(np.float64).reshape(n_units, n_units)
        else:
            if minus is not None and len(minus):
                key = np.delete(key, minus)
            keys, counts = np.unique(key.astype(np.int64), return_counts=True)
            self.a, self.b, self.counts = keys // n_units, keys % n_units, counts.astype(np.float64)

    def total(self, m: np.ndarray) -> float:
        if self.dense:
            return float(m @ (self.c @ m))
        return float(np.dot(self.counts, m[self.a] * m[self.b]))


def _kept_weights(w_in_order: np.ndarray, fraction: float) -> np.ndarray:
    """Weights kept when rejecting `fraction`: the prefix (in rejection order) holding int(W (1 - r)) weight,
    the boundary pair partly (the duplicated list's kept_counts cut through its copies)."""
    cw = np.cumsum(w_in_order)
    kept = np.floor(cw[-1] * (1.0 - fraction)) if cw.size else 0.0
    return np.clip(kept - (cw - w_in_order), 0.0, w_in_order)


def weighted_reject_curve(
    scores: ArrayLike,
    labels: ArrayLike,
    uncertainty: ArrayLike,
    weights: ArrayLike,
    fractions: ArrayLike,
    fars: ArrayLike,
    _sorted: SortedPairs | None = None,
    _perm: np.ndarray | None = None,
    convention: str = "exact",
) -> np.ndarray:
    """(n_fractions, n_fars) TAR of the recompute reject curve with pair weights: the most uncertain weight is
    rejected first (reject_curve's stable order), then weighted TAR@FAR on what is kept, by `convention` (exact:
    reject_curve; nearest: nearest_reject_curve)."""
    sp = _sorted or SortedPairs(scores, labels)
    w = _check_weights(weights, sp.n)
    perm = rejection_order(np.asarray(uncertainty), "uncertainty") if _perm is None else _perm
    f = check_fars(fars)
    w_perm = w[perm]
    out = np.empty((len(fractions), f.size))
    for q, r in enumerate(np.asarray(fractions, dtype=np.float64)):
        kept = np.empty(sp.n)
        kept[perm] = _kept_weights(w_perm, float(r))
        out[q] = sp.tar_at_far(kept, f, convention)[0]
    return out


def reject_interval(
    scores: ArrayLike,
    labels: ArrayLike,
    uncertainty: ArrayLike,
    units: PairUnits,
    fractions: ArrayLike,
    fars: ArrayLike,
    n_boot: int = 100,
    seed: int = 0,
    level: float = BOOTSTRAP_LEVEL,
    convention: str = "exact",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tar_lo, tar_hi) as (n_fractions, n_fars) and (auc_lo, auc_hi) per FAR of the recompute reject curve
    (AUC: curves.auc of TAR over the rejected fraction): for `analyze reject --bootstrap`, either convention.
    Cost O(n_fractions x n) per replicate: pass a coarser fraction grid than the curve's for big sets."""
    sp = SortedPairs(scores, labels)
    perm = rejection_order(np.asarray(uncertainty), "uncertainty")
    r = np.asarray(fractions, dtype=np.float64)
    tars, aucs = [], []
    for w in replicate_weights(units, n_boot, seed):
        t = weighted_reject_curve(
            scores, labels, uncertainty, w, r, fars, _sorted=sp, _perm=perm, convention=convention
        )
        tars.append(t)
        aucs.append([auc(r, t[:, k]) for k in range(t.shape[1])])
    tar_lo, tar_hi = percentile_interval(np.stack(tars), level)
    auc_lo, auc_hi = percentile_interval(np.asarray(aucs), level)
    return tar_lo, tar_hi, auc_lo, auc_hi


class WeightedKFold:
    """insightface's 10-fold accuracy with pair weights: the folds stay the original contiguous pair ranges;
    a threshold's accuracy on a set is (genuine weight below it + impostor weight at or above) / set weight;
    per fold the first best training threshold is tested. All weights 1 give `kfold_accuracy` exactly."""

    def __init__(self, dist: ArrayLike, labels: ArrayLike, folds: int = 10, thresholds: ArrayLike | None = None):
        d = np.asarray(dist, dtype=np.float64)
        lab = np.asarray(labels).astype(bool)
        self.n = d.size
        self.thresholds = ACCURACY_THRESHOLDS if thresholds is None else np.asarray(thresholds, np.float64)
        self.folds = []
        for start, stop in kfold_bounds(self.n, folds):
            test = np.zeros(self.n, dtype=bool)
            test[start:stop] = True
            train = ~test if folds > 1 else test
            self.folds.append((self._prep(d, lab, train), self._prep(d, lab, test)))

    def _prep(self, d: np.ndarray, lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(d[idx], kind="stable")]
        return idx, lab[idx], np.searchsorted(d[idx], self.thresholds, side="left")

    def _acc(self, w: np.ndarray, part: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        idx, lab, below = part
        ws = w[idx]
        cg = np.r_[0.0, np.cumsum(np.where(lab, ws, 0.0))]
        ci = np.r_[0.0, np.cumsum(np.where(lab, 0.0, ws))]
        total = cg[-1] + ci[-1]
        if total <= 0:
            return np.full(self.thresholds.size, np.nan)
        return (cg[below] + ci[-1] - ci[below]) / total

    def accuracy(self, weights: ArrayLike) -> np.ndarray:
        """Per-fold test accuracy at each fold's best training threshold (NaN: a fold with no weight)."""
        w = _check_weights(weights, self.n)
        out = np.empty(len(self.folds))
        for f, (train, test) in enumerate(self.folds):
            acc_train = self._acc(w, train)
            if np.isnan(acc_train).all():
                out[f] = np.nan
                continue
            out[f] = self._acc(w, test)[int(np.argmax(acc_train))]
        return out


def accuracy_interval(
    dist: ArrayLike,
    labels: ArrayLike,
    units: PairUnits,
    folds: int = 10,
    n_boot: int = 100,
    seed: int = 0,
    level: float = BOOTSTRAP_LEVEL,
    thresholds: ArrayLike | None = None,
) -> tuple[float, float]:
    """(accuracy_lo, accuracy_hi): percentile interval of the weighted 10-fold mean accuracy."""
    wk = WeightedKFold(dist, labels, folds, thresholds)
    reps = []
    for w in replicate_weights(units, n_boot, seed):
        acc = wk.accuracy(w)
        reps.append(np.nan if np.isnan(acc).all() else float(np.nanmean(acc)))
    lo, hi = percentile_interval(np.asarray(reps)[:, None], level)
    return float(lo[0]), float(hi[0])


def bootstrap_replicates(
    statistic: Callable[[np.ndarray], ArrayLike], units: PairUnits, n_boot: int, seed: int
) -> np.ndarray:
    """Any weighted statistic over the replicates: (n_boot, ...) array of statistic(weights)."""
    return np.stack([np.asarray(statistic(w), dtype=np.float64) for w in replicate_weights(units, n_boot, seed)])


def tpir_replicates(
    mated: ArrayLike,
    identified_score: ArrayLike,
    top1: ArrayLike,
    probe_units: ArrayLike,
    n_units: int,
    fpirs: ArrayLike,
    n_boot: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """(n_boot, F) TPIR@FPIR of one gallery's search with the probes resampled by unit (subject): a probe of
    unit u weighs m_u. Non-mated probes are the impostors (their top-1 scores set the threshold, exact rule,
    k = round(FPIR x weight)); a mated probe counts as accepted when its `identified_score` (its mate's score
    where the mate is at rank 1, else -inf) is >= the threshold: weighted TAR@FAR on those two classes, so all
    weights 1 give analyze.identification.tpir_at_fpir. The same seed and units give the same multiplicities for
    every gallery searched by the same probes, so replicates of two galleries can be averaged."""
    m_ = np.asarray(mated, dtype=bool)
    top = np.asarray(top1, dtype=np.float64)
    ident = np.asarray(identified_score, dtype=np.float64)
    scores = np.where(m_, ident, top)
    finite = scores[np.isfinite(scores)]
    low = (finite.min() if finite.size else 0.0) - 1.0  # below every threshold: never identified
    scores = np.where(np.isfinite(scores), scores, low)
    sp = SortedPairs(scores, m_)
    units = np.asarray(probe_units, dtype=np.int64)
    f = check_fars(fpirs)
    return np.stack([sp.tar_at_far(m[units], f, "exact")[0] for m in replicate_multiplicities(n_units, n_boot, seed)])
