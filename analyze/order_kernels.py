"""Order kernels (numba, nogil) for the reject curves: a stable argsort (one SIMD sort of packed keys), the
kept-prefix block of each pair, per-class prefix histograms, the oracle reference order by a linear merge,
and the prefix queries.

A reject curve keeps nested prefixes (sizes K_0 < K_1 < ...) of one pair order. Every kernel here describes a
pair's place in that order by its *block*: the number of K_j <= its position, so the pair is kept in prefix j
exactly when its block <= j. Each class's scores are sorted once per score vector (analyze.reject.ScoreClasses);
a curve then only needs the block of each sorted element and a (block, bucket) histogram of them.

All kernels release the GIL (two curves run in two threads) and are cached beside this file (``cache=True``).
Exact: integer work and comparisons only, plus the two float operations the reference order itself defines
(score - threshold and its negation), evaluated as numpy does (fastmath off).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "block_dtype",
    "class_blocks",
    "finish_order",
    "oracle_blocks",
    "oracle_genuine_positions",
    "pack_keys",
    "prefix_tops",
    "reject_queries",
]


def block_dtype(n_prefixes: int) -> np.dtype:
    """The smallest unsigned dtype holding blocks 0..n_prefixes."""
    return np.dtype(np.uint8 if n_prefixes < 2**8 else np.uint16 if n_prefixes < 2**16 else np.uint32)


@numba.njit(cache=True, nogil=True, inline="always")
def _key64(bits, descending):  # pragma: no cover - compiled
    """Unsigned key in the float64 order of IEEE bits (no NaN; -0.0 maps with 0.0); inverted if descending."""
    if bits == np.uint64(0x8000000000000000):
        bits = np.uint64(0)
    k = bits ^ np.uint64(0xFFFFFFFFFFFFFFFF) if bits >> np.uint64(63) else bits | np.uint64(0x8000000000000000)
    return k ^ np.uint64(0xFFFFFFFFFFFFFFFF) if descending else k


@numba.njit(cache=True, nogil=True)
def pack_keys(v, sub, use_sub, descending, idx_bits, packed):  # pragma: no cover - compiled
    """packed[i] = (order key of v[i]) << idx_bits | i, the key of float32 v[i] when every value is exact in float32
    (returns True: one sort of `packed` is the stable order), else the top 64 - idx_bits bits of the float64 key
    (returns False: `finish_order` then re-sorts runs of equal top bits by the full key). With `use_sub`, only
    the ascending indices `sub` of v are packed, each with its own index i = sub[c]."""
    n = sub.shape[0] if use_sub else v.shape[0]
    f = np.empty(1, np.float32)
    fb = f.view(np.uint32)
    ib = np.uint64(idx_bits)
    exact = True
    for c in range(n):
        i = sub[c] if use_sub else c
        x = np.float32(v[i])
        if np.float64(x) != v[i]:
            exact = False
            break
        f[0] = x + np.float32(0.0)  # -0.0 -> 0.0: they tie, as in numpy's comparison
        b = fb[0]
        k = b ^ np.uint32(0xFFFFFFFF) if b >> np.uint32(31) else b | np.uint32(0x80000000)
        if descending:
            k = k ^ np.uint32(0xFFFFFFFF)
        packed[c] = (np.uint64(k) << ib) | np.uint64(i)
    if exact:
        return True
    bits = v.view(np.uint64)
    high = ~((np.uint64(1) << ib) - np.uint64(1))
    for c in range(n):
        i = sub[c] if use_sub else c
        packed[c] = (_key64(bits[i], descending) & high) | np.uint64(i)
    return False


@numba.njit(cache=True, nogil=True)
def finish_order(packed, v, descending, idx_bits, exact, kept, blocks, order):  # pragma: no cover - compiled
    """From the sorted `packed` (pack_keys): the stable order of v, written to `order` when `kept` is empty, else
    only blocks[i] = the block of pair i's position (the number of kept sizes <= it). Runs of equal top bits (not
    `exact`) are re-sorted by the full key, ties by index (already their order in the run)."""
    n = packed.shape[0]
    ib = np.uint64(idx_bits)
    low = (np.uint64(1) << ib) - np.uint64(1)
    bits = v.view(np.uint64)
    want_blocks = kept.shape[0] > 0
    n_kept = kept.shape[0]
    if not exact:
        m = 0
        while m < n:
            top = packed[m] >> ib
            e = m + 1
            while e < n and packed[e] >> ib == top:
                e += 1
            if e - m > 1:  # same top bits: order the run by (full key, index), index being its order now
                seg = packed[m:e] & low
                keys = np.empty(e - m, np.uint64)
                for q in range(e - m):
                    keys[q] = _key64(bits[np.intp(seg[q])], descending)
                o = np.argsort(keys, kind="mergesort")
                for q in range(e - m):
                    packed[m + q] = (packed[m + q] & ~low) | seg[o[q]]
            m = e
    blk = 0
    for pos in range(n):
        i = np.intp(packed[pos] & low)
        if want_blocks:
            while blk < n_kept and kept[blk] <= pos:
                blk += 1
            blocks[i] = blk
        else:
            order[pos] = i


@numba.njit(cache=True, nogil=True)
def class_blocks(idx, pair_blocks, width, cblk, hist):  # pragma: no cover - compiled
    """For one class sorted by score: cblk[e] = block of its e-th element, and hist[e // width, block] counts."""
    for e in range(idx.shape[0]):
        b = pair_blocks[idx[e]]
        cblk[e] = b
        hist[e // width, np.intp(b)] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _margin(neg, e, t, genuine):  # pragma: no cover - compiled
    """The oracle uncertainty -(2 label - 1)(score - t) of the class element with negated score neg[e]."""
    d = -neg[e] - t
    return -d if genuine else d


@numba.njit(cache=True, nogil=True)
def _oracle_sequence(neg, idx, t, genuine, src):  # pragma: no cover - compiled
    """src = the class's elements (positions in its score-descending order) in stable (margin, index) order.

    The margin is monotone in the score, so the order is the score order (genuine: descending, impostor:
    ascending) with each run of EQUAL margins (tied scores, or distinct scores that score - t rounds together)
    re-sorted by pair index."""
    n = neg.shape[0]
    for m in range(n):
        src[m] = m if genuine else n - 1 - m
    m = 0
    while m < n:
        um = _margin(neg, src[m], t, genuine)
        b = m + 1
        in_order = True
        while b < n and _margin(neg, src[b], t, genuine) == um:
            if idx[src[b]] < idx[src[b - 1]]:
                in_order = False
            b += 1
        if not in_order:
            seg = src[m:b].copy()
            o = np.argsort(idx[seg])
            for q in range(b - m):
                src[m + q] = seg[o[q]]
        m = b


@numba.njit(cache=True, nogil=True)
def oracle_blocks(
    neg_g, idx_g, neg_i, idx_i, t, kept, w_g, w_i, cblk_g, cblk_i, hist_g, hist_i, itype
):  # pragma: no cover
    """Blocks and histograms of both classes for the oracle order at threshold t: np.argsort(margin, "stable")
    without a sort, by merging the two classes' (margin, index) sequences (-0.0 and 0.0 tie)."""
    ng, ni = neg_g.shape[0], neg_i.shape[0]
    src_g = np.empty(ng, itype.dtype)
    src_i = np.empty(ni, itype.dtype)
    _oracle_sequence(neg_g, idx_g, t, True, src_g)
    _oracle_sequence(neg_i, idx_i, t, False, src_i)
    n_kept = kept.shape[0]
    a = 0
    c = 0
    b = 0
    for pos in range(ng + ni):
        while b < n_kept and kept[b] <= pos:
            b += 1
        if c == ni:
            take_g = True
        elif a == ng:
            take_g = False
        else:
            ug = _margin(neg_g, src_g[a], t, True)
            ui = _margin(neg_i, src_i[c], t, False)
            take_g = ug < ui or (ug == ui and idx_g[src_g[a]] < idx_i[src_i[c]])
        if take_g:
            e = src_g[a]
            cblk_g[e] = b
            hist_g[e // w_g, b] += 1
            a += 1
        else:
            e = src_i[c]
            cblk_i[e] = b
            hist_i[e // w_i, b] += 1
            c += 1


@numba.njit(cache=True, nogil=True)
def oracle_genuine_positions(neg_g, idx_g, neg_i, idx_i, t, pos_g):  # pragma: no cover - compiled
    """The oracle order's positions of the genuine pairs (ascending, into pos_g) when no run of equal margins holds
    two distinct scores (returns False, pos_g unfinished, otherwise). The impostors then go in ascending score,
    ties by index, the genuine in descending score, ties by index, so only where each genuine pair merges in
    (a binary search by (margin, index) among the impostors) is left to find."""
    ng, ni = neg_g.shape[0], neg_i.shape[0]
    for e in range(ni - 1):
        if neg_i[e] != neg_i[e + 1] and _margin(neg_i, e, t, False) == _margin(neg_i, e + 1, t, False):
            return False
    for e in range(ng - 1):
        if neg_g[e] != neg_g[e + 1] and _margin(neg_g, e, t, True) == _margin(neg_g, e + 1, t, True):
            return False
    m = 0
    while m < ng:
        b = m + 1
        while b < ng and neg_g[b] == neg_g[m]:
            b += 1
        ug = _margin(neg_g, m, t, True)
        for q in range(b - m):  # the tied run by ascending index: it is stored descending
            gi = idx_g[b - 1 - q]
            lo, hi = 0, ni  # impostor q-th in the oracle order is neg_i[ni - 1 - q]
            while lo < hi:
                mid = (lo + hi) // 2
                e = ni - 1 - mid
                ui = _margin(neg_i, e, t, False)
                if ui < ug or (ui == ug and idx_i[e] < gi):
                    lo = mid + 1
                else:
                    hi = mid
            pos_g[m + q] = m + q + lo
        m = b
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _kth(table, cblk, neg, width, j, k):  # pragma: no cover - compiled
    """The k-th largest (k >= 1) value kept in prefix j: one bucket scan after the table's counts."""
    row = table[j]
    b = np.searchsorted(row, k) - 1
    lo = b * width
    need = k - row[b]
    hi = min(lo + width, cblk.shape[0])
    seen = 0
    for e in range(lo, hi):
        if cblk[e] <= j:
            seen += 1
            if seen == need:
                return -neg[e]
    return np.nan


@numba.njit(cache=True, nogil=True, inline="always")
def _count(table, cblk, neg, width, j, t):  # pragma: no cover - compiled
    """How many values kept in prefix j are >= t."""
    c = np.searchsorted(neg, -t, side="right")
    b = c // width
    out = table[j, b]
    for e in range(b * width, c):
        if cblk[e] <= j:
            out += 1
    return out


@numba.njit(cache=True, nogil=True)
def prefix_tops(table, cblk, neg, width, prefix_of_row, n_row):  # pragma: no cover - compiled
    """The largest kept value per row (NaN where the row keeps none)."""
    out = np.full(prefix_of_row.shape[0], np.nan)
    for i in range(prefix_of_row.shape[0]):
        if n_row[i] > 0:
            out[i] = _kth(table, cblk, neg, width, prefix_of_row[i], 1)
    return out


@numba.njit(cache=True, nogil=True)
def reject_queries(imp, gen, prefix_of_row, n_imp, n_gen, ks, t0, tar, thr, far):  # pragma: no cover - compiled
    """Fill tar/thr/far (rows x FARs, NaN-initialised) of the exact reject curve: threshold = k-th largest kept
    impostor (t0[row] when k = 0), FAR and TAR = kept impostors / genuines >= it over their kept counts.
    `imp` and `gen` are (table, cblk, neg, width) of each class."""
    ti, ci, ni_, wi = imp
    tg, cg, ng_, wg = gen
    for i in range(prefix_of_row.shape[0]):
        m_imp = n_imp[i]
        if m_imp == 0:
            continue
        j = prefix_of_row[i]
        for q in range(ks.shape[1]):
            k = ks[i, q]
            t = t0[i] if k == 0 else _kth(ti, ci, ni_, wi, j, k)
            thr[i, q] = t
            far[i, q] = _count(ti, ci, ni_, wi, j, t) / m_imp
            if n_gen[i]:
                tar[i, q] = _count(tg, cg, ng_, wg, j, t) / n_gen[i]
