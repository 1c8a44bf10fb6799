"""Reject verification: TAR@FAR as the most uncertain pairs are rejected (paper) and fixed-threshold EDC.

``reject_curve`` reproduces the ScaleFace paper's ``get_rejected_tar_far`` (threshold recomputed on
the kept pairs) for all rejected fractions and FARs after a single sort by uncertainty, using
prefix order statistics instead of re-sorting per fraction. ``fixed_threshold_edc`` is the
quality-assessment variant (ISO/IEC 29794-1 style): threshold fixed once on all pairs. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from analyze import order_kernels
from analyze.curves import auc
from analyze.rows import check_unit_interval
from analyze.tarfar import (
    check_far_resolution,
    check_fars,
    check_scores_labels,
    far_ranks,
    k0_threshold,
    tar_at_far,
)

OrderKind = Literal["uncertainty", "confidence"]


def check_fractions(fractions: ArrayLike, what: str = "fractions") -> np.ndarray:
    """Validate rejected (or discarded) fractions: 1-D float64, each in [0, 1]."""
    return check_unit_interval(fractions, what)


def kept_counts(n_pairs: int, fractions: ArrayLike) -> np.ndarray:
    """Pairs kept per rejected fraction r: int(n * (1 - r)) in float64, truncated, as the paper does."""
    r = check_fractions(fractions)
    return (n_pairs * (1.0 - r)).astype(np.int64)


def rejection_order(values: ArrayLike, kind: OrderKind = "uncertainty") -> np.ndarray:
    """Stable order in which pairs are kept: uncertainty ascending, or confidence descending.

    Ties keep their input order in both cases (the paper used an unstable argsort and, for
    confidence, reversed the ascending order; see docs/metrics.md).
    """
    if kind not in ("uncertainty", "confidence"):
        raise ValueError(f"unknown order kind {kind!r}; use 'uncertainty' or 'confidence'")
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"{kind} must be 1-D, got shape {v.shape}")
    return stable_argsort(v, descending=kind == "confidence", what=kind)


def stable_argsort(values: np.ndarray, descending: bool = False, what: str = "values") -> np.ndarray:
    """Same as np.argsort(v, kind="stable") (or of -v when descending), several times faster.

    Packs an order-preserving integer image of each float with its index into one uint64 and sorts those once
    (numpy's SIMD sort): float32-exact values whole; other float64 values by their top 64 - log2(n) bits, runs of
    equal top bits then re-sorted by the full value (analyze.order_kernels). -0.0 and 0.0 tie, as in numpy.
    """
    v = _float_values(values, what)
    if v.size >= 2**32:
        return np.argsort(-v if descending else v, kind="stable")
    return _sorted_pass(v, descending, None)


def _float_values(values: ArrayLike, what: str) -> np.ndarray:
    """1-D-agnostic float64 contiguous copy-free view of numeric values, refusing NaN and integers beyond 2**53."""
    v = np.asarray(values)
    if v.dtype.kind in "iub":
        if v.size and np.abs(v.astype(np.float64)).max() >= 2.0**53:
            raise ValueError(f"{what}: integers beyond 2**53 are not supported")
    elif v.dtype.kind != "f":
        raise ValueError(f"{what} must be numeric, got dtype {v.dtype}")
    v = np.ascontiguousarray(v.reshape(-1), dtype=np.float64)
    if np.isnan(v).any():
        raise ValueError(f"{what} contains {int(np.isnan(v).sum())} NaN values; drop or fill them first")
    return v


_NO_KEPT = np.zeros(0, np.int64)


def _sorted_pass(v: np.ndarray, descending: bool, kept: np.ndarray | None, sub: np.ndarray | None = None) -> np.ndarray:
    """The stable order of float64 `v` (kept None), or, for nested prefix sizes `kept`, each pair's block: how many
    sizes are <= its position in that order (order_kernels), without materialising the order. With `sub` (ascending
    indices), the stable order of v[sub], given as indices of v."""
    n = v.size if sub is None else sub.size
    idx_bits = max(1, (v.size - 1).bit_length())
    packed = np.empty(n, np.uint64)
    use_sub = sub is not None
    exact = order_kernels.pack_keys(v, sub if use_sub else _NO_KEPT, use_sub, descending, idx_bits, packed)
    packed.sort()
    if kept is None:
        order = np.empty(n, np.int64)
        order_kernels.finish_order(packed, v, descending, idx_bits, exact, _NO_KEPT, np.zeros(0, np.uint8), order)
        return order
    blocks = np.empty(n, order_kernels.block_dtype(kept.size))
    order_kernels.finish_order(packed, v, descending, idx_bits, exact, kept, blocks, _NO_KEPT)
    return blocks


class _PrefixOrderStats:
    """k-th largest value and count of values >= t within nested prefixes of one sequence.

    Sorted once by value; a table of counts per (prefix, bucket of sqrt(n) consecutive sorted
    values) answers each query with one bucket scan, so no prefix is ever re-sorted.
    """

    def __init__(self, values: np.ndarray, prefix_sizes: np.ndarray) -> None:
        n = int(values.size)
        self.n = n
        self.sizes = prefix_sizes  # sorted, unique, each in [0, n]
        # the tie order inside does not change either query's value, but it picks which of the tied -0.0 / 0.0
        # a k-th largest returns: stable by kept order here, which ScoreClasses reproduces by using this path
        perm = stable_argsort(values, descending=True)
        self.neg = -values[perm]  # ascending, contiguous (negation is exact)
        self.pos = perm.astype(np.int32) if n < 2**31 - 1 else perm
        del perm
        self.width = max(1, math.isqrt(max(n, 1)))
        n_buckets = -(-n // self.width)
        n_prefix = prefix_sizes.size
        # block j holds positions in [sizes[j-1], sizes[j]); block n_prefix holds the rest
        block_of_pos = np.repeat(
            np.arange(n_prefix + 1, dtype=np.int32), np.diff(np.concatenate(([0], prefix_sizes, [n])))
        )
        hist = np.zeros((n_prefix + 1) * n_buckets, dtype=np.int64)
        step = self.width * max(1, (1 << 22) // self.width)
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            key = block_of_pos[self.pos[lo:hi]].astype(np.int64) * n_buckets + np.arange(lo, hi) // self.width
            hist += np.bincount(key, minlength=hist.size)
        del block_of_pos
        per_prefix = np.cumsum(hist.reshape(n_prefix + 1, n_buckets)[:n_prefix], axis=0)
        self.table = np.zeros((n_prefix, n_buckets + 1), dtype=np.int64)
        np.cumsum(per_prefix, axis=1, out=self.table[:, 1:])

    def kth_largest(self, j: int, k: int) -> float:
        """The k-th largest value (k >= 1) among the first sizes[j] elements."""
        row = self.table[j]
        b = int(np.searchsorted(row, k, side="left")) - 1
        lo = b * self.width
        inside = np.flatnonzero(self.pos[lo : lo + self.width] < self.sizes[j])
        return float(-self.neg[lo + inside[k - row[b] - 1]])

    def count_at_least(self, j: int, t: float) -> int:
        """How many of the first sizes[j] elements are >= t."""
        c = int(np.searchsorted(self.neg, -t, side="right"))
        b = c // self.width
        lo = b * self.width
        return int(self.table[j, b]) + int(np.count_nonzero(self.pos[lo:c] < self.sizes[j]))


@dataclass(frozen=True)
class RejectCurve:
    """TAR@FAR recomputed on the kept pairs, per rejected fraction (rows) and FAR (the exact convention, or
    insightface's nearest with `nearest_reject_curve`)."""

    fractions: np.ndarray  # (R,) requested rejected fractions
    fars: np.ndarray  # (F,)
    kept_pairs: np.ndarray  # (R,)
    kept_genuine: np.ndarray  # (R,)
    kept_impostor: np.ndarray  # (R,)
    tar: np.ndarray  # (R, F), NaN where nothing genuine or nothing impostor is kept
    threshold: np.ndarray  # (R, F), NaN where nothing impostor is kept
    far_achieved: np.ndarray  # (R, F)
    order: str

    def auc(self) -> np.ndarray:
        """Area under TAR over rejected fraction, one per FAR (`auc`: sklearn.metrics.auc, as the paper)."""
        return np.array([auc(self.fractions, self.tar[:, i]) for i in range(self.fars.size)])

    def columns(self) -> dict[str, np.ndarray]:
        """Tidy long format, one row per (fraction, FAR): ready for ``pandas.DataFrame``."""
        n_r, n_f = self.tar.shape
        return {
            "rejected_fraction": np.repeat(self.fractions, n_f),
            "far": np.tile(self.fars, n_r),
            "tar": self.tar.ravel(),
            "threshold": self.threshold.ravel(),
            "far_achieved": self.far_achieved.ravel(),
            "kept_pairs": np.repeat(self.kept_pairs, n_f),
            "kept_genuine": np.repeat(self.kept_genuine, n_f),
            "kept_impostor": np.repeat(self.kept_impostor, n_f),
            "discarded_fraction": np.repeat(self.fractions, n_f),
        }


def reject_curve(
    scores: ArrayLike,
    labels: ArrayLike,
    uncertainty: ArrayLike,
    fractions: ArrayLike,
    fars: ArrayLike,
    order: OrderKind = "uncertainty",
    allow_tiny_far: bool = False,
) -> RejectCurve:
    """Paper reject verification: keep the int(n(1-r)) most certain pairs, recompute TAR@FAR (exact).

    ``uncertainty`` is a pair uncertainty (higher = less sure) or, with order="confidence", a
    confidence. One stable sort by it, one sort per class by score (`ScoreClasses`, which shares the class
    sorts between curves of one score vector); results are bit-identical to re-running ``tar_at_far`` on every
    kept prefix. FARs below 1/n_impostor of the largest kept set raise unless ``allow_tiny_far``; smaller kept
    sets use k = round(FAR * kept_impostor) regardless.
    """
    return ScoreClasses(scores, labels).reject_curve(uncertainty, fractions, fars, order, allow_tiny_far)


class ScoreClasses:
    """One score vector's classes, each sorted once by score: what every reject curve of those scores shares.

    A curve (an uncertainty order, the oracle at one threshold, the random order) then costs one pass giving each
    sorted score its kept-prefix block (order_kernels), a (block, bucket) histogram, and the prefix queries; only
    an uncertainty order needs a sort of its own, the oracle's is a linear merge of the two classes.
    """

    def __init__(self, scores: ArrayLike, labels: ArrayLike) -> None:
        s, lab = check_scores_labels(scores, labels)
        self.n = int(s.size)
        itype = np.int32 if self.n < 2**31 else np.int64
        self.itype = np.zeros(0, itype)
        # each class: its pair indices in stable ascending score order, reversed to descending (ties then go by
        # descending index, as the oracle's ascending walk of the impostors needs; its descending walk of the
        # genuine re-sorts tied runs), and its scores sorted (np.sort: no gather by the order, except for zeros)
        for name, mask in (("imp", ~lab), ("gen", lab)):
            idx = np.flatnonzero(mask)
            order = _sorted_pass(s, False, None, idx)[::-1].astype(itype)
            setattr(self, f"{name}_idx", order)
            neg = -np.sort(s[idx])[::-1]
            zero = slice(np.searchsorted(neg, 0.0, "left"), np.searchsorted(neg, 0.0, "right"))
            neg[zero] = -s[order[zero]]  # np.sort may not keep the signs of tied zeros: take each pair's own
            setattr(self, f"{name}_neg", neg)
            del idx, order, neg
        zeros = self.imp_neg[np.searchsorted(self.imp_neg, 0.0, "left") : np.searchsorted(self.imp_neg, 0.0, "right")]
        sign = np.signbit(zeros)
        self.mixed_zeros = bool(sign.any() and not sign.all())
        """Impostor scores hold both -0.0 and 0.0: a threshold's zero sign then follows the kept order's ties,
        which only the plain path reproduces (it is taken for such score vectors)."""
        self.plain = (s, lab) if self.mixed_zeros else None
        """(scores, labels) kept for the plain path only: otherwise the scores are not held."""

    @property
    def n_impostor(self) -> int:
        return int(self.imp_idx.size)

    def thresholds(self, fars: ArrayLike) -> np.ndarray:
        """The exact-convention thresholds on all pairs (as tar_at_far, from the sorted impostors)."""
        f = check_fars(fars)
        if not self.n_impostor:
            raise ValueError("no impostor pairs: TAR@FAR is undefined (labels are all genuine)")
        ks = far_ranks(self.n_impostor, f)
        return np.array([k0_threshold(-self.imp_neg[0]) if k == 0 else -self.imp_neg[k - 1] for k in ks])

    def reject_curve(
        self,
        uncertainty: ArrayLike,
        fractions: ArrayLike,
        fars: ArrayLike,
        order: OrderKind = "uncertainty",
        allow_tiny_far: bool = False,
    ) -> RejectCurve:
        """`reject_curve` on these scores with one uncertainty (or confidence) order."""
        u = np.asarray(uncertainty)
        if u.shape != (self.n,):
            raise ValueError(f"{order} shape {u.shape} does not match scores shape {(self.n,)}")
        f, r, kept, sizes, rows = self._grid(fractions, fars)
        if order not in ("uncertainty", "confidence"):
            raise ValueError(f"unknown order kind {order!r}; use 'uncertainty' or 'confidence'")
        v = _float_values(u, order)
        self._need_impostors()
        if self.plain is not None:
            return _plain_curve(*self.plain, rejection_order(v, order), r, f, kept, order, allow_tiny_far)
        blocks = _sorted_pass(v, order == "confidence", sizes)
        return self._curve_from_pair_blocks(blocks, f, r, kept, sizes, rows, order, allow_tiny_far)

    def oracle_curve(
        self, threshold: float, fractions: ArrayLike, fars: ArrayLike, allow_tiny_far: bool = False
    ) -> RejectCurve:
        """The curve of the oracle order at `threshold` (reference_uncertainty(..., "oracle", threshold)), its
        stable order found by merging the two classes' margin sequences instead of sorting."""
        f, r, kept, sizes, rows = self._grid(fractions, fars)
        self._need_impostors()
        t = float(threshold)
        if self.plain is not None:
            perm = rejection_order(reference_uncertainty(*self.plain, "oracle", t))
            return _plain_curve(*self.plain, perm, r, f, kept, "uncertainty", allow_tiny_far)
        pos_g = np.empty(self.gen_idx.size, np.int64)
        if order_kernels.oracle_genuine_positions(self.gen_neg, self.gen_idx, self.imp_neg, self.imp_idx, t, pos_g):
            return self._oracle_by_counts(pos_g, f, r, kept, sizes, rows, allow_tiny_far)
        gen, imp = self._class_buffers(sizes.size)
        order_kernels.oracle_blocks(
            self.gen_neg, self.gen_idx, self.imp_neg, self.imp_idx, t, sizes, gen[3], imp[3], gen[1], imp[1],
            gen[4], imp[4], self.itype,
        )  # fmt: skip
        return self._finish(imp, gen, f, r, kept, rows, "uncertainty", allow_tiny_far)

    def _oracle_by_counts(self, pos_g, f, r, kept, sizes, rows, allow_tiny_far) -> RejectCurve:
        """The oracle curve when each class keeps a score-ordered prefix (oracle_genuine_positions): the kept
        genuine are the highest-scored ones, the kept impostors the lowest, so every query is a count."""
        kept_gen = np.searchsorted(pos_g, sizes, side="left")[rows]
        kept_imp = kept - kept_gen
        check_far_resolution(f, int(kept_imp.max()), allow_tiny_far)
        n_imp = self.n_impostor
        start = n_imp - kept_imp  # the kept impostors are imp_neg[start:], the kept genuine gen_neg[:kept_gen]
        tar, thr, far_ach = (np.full((r.size, f.size), np.nan) for _ in range(3))
        for i in np.flatnonzero(kept_imp):
            ks = far_ranks(int(kept_imp[i]), f)
            t = -self.imp_neg[np.maximum(start[i] + ks - 1, 0)]
            t[ks == 0] = k0_threshold(-self.imp_neg[start[i]])
            thr[i] = t
            far_ach[i] = np.maximum(np.searchsorted(self.imp_neg, -t, side="right") - start[i], 0) / kept_imp[i]
            if kept_gen[i]:
                tar[i] = np.minimum(np.searchsorted(self.gen_neg, -t, side="right"), kept_gen[i]) / kept_gen[i]
        return RejectCurve(r, f, kept, kept_gen, kept_imp, tar, thr, far_ach, "uncertainty")

    def random_curve(
        self,
        fractions: ArrayLike,
        fars: ArrayLike,
        seed: int = 0,
        allow_tiny_far: bool = False,
        cache: dict | None = None,
    ) -> RejectCurve:
        """The curve of the random reference order (default_rng(seed) uniforms); `cache` (a dict) keeps each
        order's pair blocks for later score vectors of the same length and fractions."""
        f, r, kept, sizes, rows = self._grid(fractions, fars)
        self._need_impostors()
        if self.plain is not None:
            perm = rejection_order(reference_uncertainty(*self.plain, "random", seed=seed))
            return _plain_curve(*self.plain, perm, r, f, kept, "uncertainty", allow_tiny_far)
        key = (self.n, seed, sizes.tobytes())
        blocks = None if cache is None else cache.get(key)
        if blocks is None:
            blocks = _sorted_pass(np.random.default_rng(seed).random(self.n), False, sizes)
            if cache is not None:
                cache[key] = blocks
        return self._curve_from_pair_blocks(blocks, f, r, kept, sizes, rows, "uncertainty", allow_tiny_far)

    def _grid(self, fractions: ArrayLike, fars: ArrayLike) -> tuple[np.ndarray, ...]:
        """(fars, fractions, kept per fraction, the unique kept sizes, each fraction's index into them)."""
        f = check_fars(fars)
        r = check_fractions(fractions)
        kept = kept_counts(self.n, r)
        sizes, rows = np.unique(kept, return_inverse=True)
        return f, r, kept, sizes, rows.reshape(-1)

    def _need_impostors(self) -> None:
        if not self.n_impostor:
            raise ValueError("no impostor pairs: TAR@FAR is undefined (labels are all genuine)")

    def _class_buffers(self, n_sizes: int) -> tuple[list, list]:
        """Per class [neg, cblk, idx, width, hist]: the sorted negated scores and a curve's empty block arrays."""
        out = []
        for neg, idx in ((self.gen_neg, self.gen_idx), (self.imp_neg, self.imp_idx)):
            width = max(1, math.isqrt(max(neg.size, 1)))
            hist = np.zeros((-(-neg.size // width), n_sizes + 1), np.int64)
            out.append([neg, np.empty(neg.size, order_kernels.block_dtype(n_sizes)), idx, width, hist])
        return out[0], out[1]

    def _curve_from_pair_blocks(self, blocks, f, r, kept, sizes, rows, order, allow_tiny_far) -> RejectCurve:
        gen, imp = self._class_buffers(sizes.size)
        for _, cblk, idx, width, hist in (gen, imp):
            order_kernels.class_blocks(idx, blocks, width, cblk, hist)
        return self._finish(imp, gen, f, r, kept, rows, order, allow_tiny_far)

    def _finish(self, imp, gen, f, r, kept, rows, order, allow_tiny_far) -> RejectCurve:
        """The prefix queries of both classes' block histograms: the RejectCurve."""
        stats = []
        for neg, cblk, _, width, hist in (imp, gen):
            n_sizes = hist.shape[1] - 1
            table = np.zeros((n_sizes, hist.shape[0] + 1), np.int64)  # [j, b]: kept in prefix j among buckets < b
            table[:, 1:] = np.cumsum(np.cumsum(hist[:, :n_sizes], axis=1), axis=0).T
            stats.append((table, cblk, neg, width))
        kept_imp = stats[0][0][rows, -1]
        kept_gen = stats[1][0][rows, -1]
        check_far_resolution(f, int(kept_imp.max()), allow_tiny_far)
        ks = np.array([far_ranks(int(m), f) for m in kept_imp], dtype=np.int64).reshape(r.size, f.size)
        t0 = np.full(r.size, np.nan)
        need = (kept_imp > 0) & (ks == 0).any(axis=1)
        if need.any():
            tops = order_kernels.prefix_tops(*stats[0], rows, np.where(need, kept_imp, 0))
            t0[need] = [k0_threshold(x) for x in tops[need]]
        tar, thr, far_ach = (np.full((r.size, f.size), np.nan) for _ in range(3))
        order_kernels.reject_queries(stats[0], stats[1], rows, kept_imp, kept_gen, ks, t0, tar, thr, far_ach)
        return RejectCurve(r, f, kept, kept_gen, kept_imp, tar, thr, far_ach, order)


def _plain_curve(
    s: np.ndarray,
    lab: np.ndarray,
    perm: np.ndarray,
    r: np.ndarray,
    f: np.ndarray,
    kept: np.ndarray,
    order: str,
    allow_tiny_far: bool,
) -> RejectCurve:
    """The reject curve of the kept order `perm` by sorting each class's kept scores (`_PrefixOrderStats`): the
    path for impostor scores holding both zeros, and the reference the shared-sort path is tested against."""
    lab_o = lab[perm]
    imp_at = np.flatnonzero(~lab_o)
    gen_at = np.flatnonzero(lab_o)
    del lab_o
    if imp_at.size == 0:
        raise ValueError("no impostor pairs: TAR@FAR is undefined (labels are all genuine)")
    kept_imp = np.searchsorted(imp_at, kept, side="left")
    kept_gen = kept - kept_imp
    check_far_resolution(f, int(kept_imp.max()), allow_tiny_far)
    imp = _SequenceStats(s[perm[imp_at]], kept_imp)
    del imp_at
    gen = _SequenceStats(s[perm[gen_at]], kept_gen)
    del gen_at, perm

    tar = np.full((r.size, f.size), np.nan)
    thr = np.full((r.size, f.size), np.nan)
    far_ach = np.full((r.size, f.size), np.nan)
    for i in range(r.size):
        n_imp, n_gen = int(kept_imp[i]), int(kept_gen[i])
        if n_imp == 0:
            continue
        for jf, k in enumerate(far_ranks(n_imp, f)):
            t = k0_threshold(imp.kth_largest(i, 1)) if k == 0 else imp.kth_largest(i, int(k))
            thr[i, jf] = t
            far_ach[i, jf] = imp.count_at_least(i, t) / n_imp
            if n_gen:
                tar[i, jf] = gen.count_at_least(i, t) / n_gen
    return RejectCurve(r, f, kept, kept_gen, kept_imp, tar, thr, far_ach, order)


class _SequenceStats:
    """Prefix queries addressed by row index i (one per requested fraction), deduplicating sizes."""

    def __init__(self, values: np.ndarray, sizes_per_row: np.ndarray) -> None:
        uniq, self.row_to_prefix = np.unique(sizes_per_row, return_inverse=True)
        self.stats = _PrefixOrderStats(values, uniq)

    def kth_largest(self, i: int, k: int) -> float:
        """k-th largest value kept in row i."""
        return self.stats.kth_largest(int(self.row_to_prefix[i]), k)

    def count_at_least(self, i: int, t: float) -> int:
        """Number of kept values >= t in row i."""
        return self.stats.count_at_least(int(self.row_to_prefix[i]), t)


@dataclass(frozen=True)
class EDCCurve:
    """Fixed-threshold error-versus-discard curve: errors on the kept pairs, thresholds from all pairs."""

    fractions: np.ndarray  # (R,) requested discarded fractions
    discarded_fraction: np.ndarray  # (R,) actually discarded (tied qualities go together)
    quality_cutoff: np.ndarray  # (R,) pairs with quality <= cutoff are discarded (-inf: none)
    fars: np.ndarray  # (F,)
    threshold: np.ndarray  # (F,) exact-convention threshold on all pairs
    kept_pairs: np.ndarray  # (R,)
    kept_genuine: np.ndarray  # (R,)
    kept_impostor: np.ndarray  # (R,)
    fnmr: np.ndarray  # (R, F) = 1 - TAR on the kept pairs; NaN when no genuine is kept
    fmr: np.ndarray  # (R, F) on the kept pairs; NaN when no impostor is kept
    n_pairs: int = 0
    n_genuine: int = 0
    fnm_all: np.ndarray | None = None  # (F,) false non-matches on all pairs at each threshold

    def columns(self) -> dict[str, np.ndarray]:
        """The same tidy columns as `RejectCurve.columns` (tar = 1 - FNMR, far_achieved = FMR on the kept pairs)."""
        n_r, n_f = self.fnmr.shape
        return {
            "rejected_fraction": np.repeat(self.fractions, n_f),
            "far": np.tile(self.fars, n_r),
            "tar": 1.0 - self.fnmr.ravel(),
            "threshold": np.tile(self.threshold, n_r),
            "far_achieved": self.fmr.ravel(),
            "kept_pairs": np.repeat(self.kept_pairs, n_f),
            "kept_genuine": np.repeat(self.kept_genuine, n_f),
            "kept_impostor": np.repeat(self.kept_impostor, n_f),
            "discarded_fraction": np.repeat(self.discarded_fraction, n_f),
        }

    def partial_auc(self, discard_limit: float) -> np.ndarray:
        """Area under FNMR over the actually discarded fraction on [0, discard_limit], one per FAR."""
        return np.array([auc(self.discarded_fraction, self.fnmr[:, i], discard_limit) for i in range(self.fars.size)])

    def ideal_fnmr(self) -> np.ndarray:
        """(R, F) FNMR of the ideal curve at each actually discarded fraction d (`ideal_edc_fnmr`)."""
        if self.fnm_all is None:
            raise ValueError("this EDCCurve has no all-pairs counts (made by fixed_threshold_edc)")
        return ideal_edc_fnmr(self.discarded_fraction, self.fnm_all, self.n_genuine, self.n_pairs)

    def ideal_partial_auc(self, discard_limit: float) -> np.ndarray:
        """`partial_auc` of the ideal curve, on the same discarded fractions (so the difference is the method's)."""
        ideal = self.ideal_fnmr()
        return np.array([auc(self.discarded_fraction, ideal[:, i], discard_limit) for i in range(self.fars.size)])


def ideal_edc_fnmr(discarded: ArrayLike, fnm: ArrayLike, n_genuine: int, n_pairs: int) -> np.ndarray:
    """The ideal EDC (ISO/IEC 29794-1:2024's best case): every discarded pair is a false non-match until none is
    left, so after discarding k = d n pairs FNMR = max(0, (fnm - k) / (n_genuine - k)); (R, F) for the
    discarded fractions d (R,) and each threshold's false non-matches on all pairs fnm (F,). Over mated pairs
    only (n = n_genuine) it is the standard's max(0, (e0 - d) / (1 - d))."""
    k = np.asarray(discarded, dtype=np.float64)[:, None] * n_pairs
    f = np.asarray(fnm, dtype=np.float64)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(f > k, (f - k) / np.maximum(n_genuine - k, 1e-300), 0.0)
    return out if n_genuine else np.full(out.shape, np.nan)


REFERENCE_ORDERS = {
    "oracle": "uses the labels: per FAR, the margin to that FAR's threshold on all pairs (exact convention), "
    "-(2 label - 1)(score - threshold), so the pairs most wrong at it go first (false non-matches and false "
    "matches, farthest first); with a fixed threshold it follows the ideal curve",
    "random": "a uniform random order (numpy default_rng(seed), seed 0)",
}
"""The reference discard orders drawn beside every method (rows with uncertainty `oracle` / `random`)."""


def reference_uncertainty(
    scores: ArrayLike, labels: ArrayLike, kind: str, threshold: float | None = None, seed: int = 0
) -> np.ndarray:
    """A pair uncertainty (larger = rejected first) for a reference curve (`REFERENCE_ORDERS`): `oracle`, what a
    method knowing the labels reaches at one FAR, -(2 label - 1)(score - threshold) with that FAR's threshold;
    `random`, default_rng(seed) uniforms, what an uninformative uncertainty gives."""
    s, lab = check_scores_labels(scores, labels)
    if kind == "oracle":
        if threshold is None:
            raise ValueError("the oracle reference needs the FAR's threshold")
        return -(2.0 * lab - 1.0) * (s - float(threshold))
    if kind == "random":
        return np.random.default_rng(seed).random(s.size)
    raise ValueError(f"unknown reference {kind!r}; use one of {', '.join(REFERENCE_ORDERS)}")


def fixed_threshold_edc(
    scores: ArrayLike,
    labels: ArrayLike,
    quality: ArrayLike,
    fractions: ArrayLike,
    fars: ArrayLike,
    order: Literal["confidence", "uncertainty"] = "confidence",
    allow_tiny_far: bool = False,
) -> EDCCurve:
    """EDC: thresholds at each FAR fixed on all pairs; FNMR/FMR on the pairs left after discarding.

    ``quality`` is a pair confidence (order="confidence", the default: lowest discarded first; e.g. min of the
    two images'), or a pair uncertainty with order="uncertainty" (highest discarded first). For fraction r the
    n - int(n(1-r)) lowest are discarded, plus every pair tied with the last of them.
    """
    s, lab = check_scores_labels(scores, labels)
    q = np.asarray(quality)
    if q.shape != s.shape:
        raise ValueError(f"{order} shape {q.shape} does not match scores shape {s.shape}")
    q = q.astype(np.float64, copy=False)
    if np.isnan(q).any():
        raise ValueError(f"{order} contains {int(np.isnan(q).sum())} NaN values; drop or fill them first")
    if order == "uncertainty":
        q = -q
    elif order != "confidence":
        raise ValueError(f"unknown order {order!r}; use 'confidence' or 'uncertainty'")
    f = check_fars(fars)
    r = check_fractions(fractions)
    n = s.size
    base = tar_at_far(s, lab, f, "exact", allow_tiny_far)

    q_all = np.sort(q)
    n_discard_req = n - kept_counts(n, r)
    cutoff = np.where(n_discard_req > 0, q_all[np.maximum(n_discard_req - 1, 0)], -np.inf)
    discarded = np.searchsorted(q_all, cutoff, side="right")

    def kept_among(mask: np.ndarray) -> np.ndarray:
        """Per cutoff, how many pairs in ``mask`` have quality above it."""
        sub = np.sort(q[mask])
        return sub.size - np.searchsorted(sub, cutoff, side="right")

    kept_gen = kept_among(lab)
    kept_imp = kept_among(~lab)
    fnmr = np.full((r.size, f.size), np.nan)
    fmr = np.full((r.size, f.size), np.nan)
    for jf, t in enumerate(base.threshold):
        fnm = kept_among(lab & (s < t))
        fm = kept_among(~lab & (s >= t))
        with np.errstate(invalid="ignore", divide="ignore"):
            fnmr[:, jf] = np.where(kept_gen > 0, fnm / np.maximum(kept_gen, 1), np.nan)
            fmr[:, jf] = np.where(kept_imp > 0, fm / np.maximum(kept_imp, 1), np.nan)
    fnm_all = np.array([np.count_nonzero(lab & (s < t)) for t in base.threshold], dtype=np.int64)
    return EDCCurve(
        r, discarded / n, cutoff, f, base.threshold, n - discarded, kept_gen, kept_imp, fnmr, fmr,
        n, int(lab.sum()), fnm_all,
    )  # fmt: skip


def partial_auc(x: ArrayLike, y: ArrayLike, limit: float) -> float:
    """Area under y(x) for x in [x[0], limit]: the name this module always offered for ``auc(x, y, limit)``."""
    return auc(x, y, limit=limit)


def nearest_reject_curve(
    scores: ArrayLike, labels: ArrayLike, uncertainty: ArrayLike, fractions: ArrayLike, fars: ArrayLike
) -> RejectCurve:
    """Reject verification with insightface's nearest-FPR convention: one sort by uncertainty, then TAR@FAR on
    each kept prefix (exactly re-running insightface's table per fraction); NaN where a prefix is empty or
    holds no impostor."""
    s, lab = check_scores_labels(scores, labels)
    r = np.asarray(fractions, dtype=np.float64)
    f = np.asarray(fars, dtype=np.float64)
    perm = rejection_order(uncertainty, "uncertainty")
    s, lab = s[perm], lab[perm]
    kept = kept_counts(len(s), r)
    tar, thr, far_achieved = (np.full((r.size, f.size), np.nan) for _ in range(3))
    genuine = np.zeros(r.size, dtype=np.int64)
    for row, n in enumerate(kept):
        genuine[row] = int(lab[:n].sum())
        if n == 0 or genuine[row] == n:
            continue
        res = tar_at_far(s[:n], lab[:n], f, "nearest", allow_tiny_far=True)
        tar[row], thr[row], far_achieved[row] = res.tar, res.threshold, res.far_achieved
    return RejectCurve(r, f, kept, genuine, kept - genuine, tar, thr, far_achieved, "uncertainty")


REJECT_METHODS = {
    ("recompute", "exact"): lambda s, lab, u, r, f: reject_curve(s, lab, u, r, f, allow_tiny_far=True),
    ("recompute", "nearest"): nearest_reject_curve,
    ("fixed", "exact"): lambda s, lab, u, r, f: fixed_threshold_edc(
        s, lab, u, r, f, order="uncertainty", allow_tiny_far=True
    ),
}
"""Every reject-like curve by (threshold mode, TAR@FAR convention); each `.columns()` has the same tidy shape."""


def reject_result(
    scores: ArrayLike,
    labels: ArrayLike,
    uncertainty: ArrayLike,
    fractions: ArrayLike,
    fars: ArrayLike,
    threshold_mode: str = "recompute",
    convention: str = "exact",
) -> RejectCurve | EDCCurve:
    """The reject curve of one (threshold mode, convention), pairs rejected by `uncertainty` (larger first): the
    paper's recompute (exact or nearest TAR@FAR, a RejectCurve) or the fixed-threshold EDC (an EDCCurve)."""
    method = REJECT_METHODS.get((threshold_mode, convention))
    if method is None:
        raise ValueError(f"no reject curve for threshold mode {threshold_mode!r} with the {convention!r} convention")
    return method(scores, labels, uncertainty, fractions, fars)
