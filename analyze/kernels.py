"""Fused per-pair kernels (numba): per-dimension pair functions with no (pairs x D) temporaries.

Each kernel walks the pairs in parallel (``prange``), reads the two rows of a pair once and reduces
the D per-dimension terms in a small per-thread buffer with numpy's own pairwise summation, so the
results are bit-identical to the plain numpy formulas in analyze.scores / analyze.uncertainty
(same IEEE operations in the same order; fastmath off, no FMA contraction). Pairs are visited grouped
by their first row (a stable sort of `i`, skipped when already sorted) so each first row is read from
memory once per group; results are written back in the caller's pair order. The summation replays numpy
2.x's pairwise_sum (tests/test_kernels.py fails first if a numpy release changes it).

One exception, the default MLS (`mls_pairs(exact=False)`): one log per pair instead of D, halving trees that
vectorise, pairs visited by (i, j) in tiles of second rows; within MLS_FAST_RTOL of the exact kernel (and the same
bits whatever the vector width: the trees fix the order of every operation). `exact=True` is the bit-identical kernel.

Compiled on first use and cached beside this file (``cache=True``): a cold process pays the compile
once, later processes load the machine code (see benchmarks/README.md for the measured cold/warm times).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "MLS_FAST_RTOL",
    "cosine_analytic_pairs",
    "grouped_order",
    "mls_pairs",
    "pair_sorted_order",
    "pairwise_sum",
    "row_norms",
    "row_reciprocal_sums",
    "segment_min",
    "segment_sums",
    "sum_plan",
]

_PW_BLOCKSIZE = 128
"""numpy's PW_BLOCKSIZE: below it, 8 interleaved accumulators; above it, split in two halves."""

GROUP_CHUNK = 256
"""Consecutive (grouped) pairs one parallel task scores: large enough to amortise scheduling, small enough
to balance two threads over uneven groups."""


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _leaf(a, lo, n):  # pragma: no cover - compiled
    """numpy's pairwise_sum base case for n <= PW_BLOCKSIZE: 8 interleaved accumulators, then the tail."""
    if n < 8:
        res = 0.0
        for k in range(lo, lo + n):
            res += a[k]
        return res
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    stop = lo + n - (n % 8)
    for k in range(lo + 8, stop, 8):
        r0 += a[k]
        r1 += a[k + 1]
        r2 += a[k + 2]
        r3 += a[k + 3]
        r4 += a[k + 4]
        r5 += a[k + 5]
        r6 += a[k + 6]
        r7 += a[k + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for k in range(stop, lo + n):
        res += a[k]
    return res


def sum_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy's pairwise_sum tree for n values in postfix: (lo, length) per leaf, lo = -1 for "add the top two".

    numpy splits n > PW_BLOCKSIZE into halves (n2 = n // 2 rounded down to a multiple of 8), recursively;
    the kernels evaluate this plan on a small value stack (numba cannot cache recursive functions).
    """
    lo_out: list[int] = []
    n_out: list[int] = []

    def visit(lo: int, m: int) -> None:
        if m <= _PW_BLOCKSIZE:
            lo_out.append(lo)
            n_out.append(m)
            return
        m2 = m // 2
        m2 -= m2 % 8
        visit(lo, m2)
        visit(lo + m2, m - m2)
        lo_out.append(-1)
        n_out.append(0)

    visit(0, n)
    return np.asarray(lo_out, dtype=np.int64), np.asarray(n_out, dtype=np.int64)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _row_sum(a, plan_lo, plan_n, vals):  # pragma: no cover - compiled
    """np.add.reduce of a contiguous float64 row as numpy (2.x) does it: 0.0 + pairwise_sum(a), by `sum_plan`.

    `vals` is a work array of at least len(plan_lo) values, allocated once per task by the caller.
    """
    nv = 0
    for e in range(plan_lo.shape[0]):
        lo = plan_lo[e]
        if lo < 0:
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
        else:
            vals[nv] = _leaf(a, lo, plan_n[e])
            nv += 1
    return 0.0 + vals[0]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _row_sum_one(a, plan_lo, plan_n):  # pragma: no cover - compiled
    return _row_sum(a, plan_lo, plan_n, np.empty(plan_lo.shape[0], np.float64))


def pairwise_sum(a: np.ndarray) -> float:
    """Sum of a 1-D float64 array in numpy's order (for tests: equals ``a.sum()`` bit for bit)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return float(_row_sum_one(a, *sum_plan(a.shape[0])))


def grouped_order(i: np.ndarray) -> np.ndarray | None:
    """Pair order grouped by first row (stable), or None when `i` is already non-decreasing (IJB-C's lists are)."""
    if i.size < 2 or bool(np.all(i[1:] >= i[:-1])):
        return None
    return np.argsort(i, kind="stable")


_LOG_SAFE = 2.0**59
"""Fast MLS: a row is "safe" when all its sigma_sq lie in [2^-59, 2^59], so every sigma_sq1 + sigma_sq2 of two safe
rows lies in [2^-58, 2^60] and a product of 16 of them stays a normal float64 (_tree_log_prod)."""

MLS_TILE_ROWS = 64
"""Second rows per tile of the fast MLS kernel: 64 rows of float64 unit + sigma_sq (D = 512) are 512 KiB, which stay
in cache while every first row of a task's block is scored against them."""

MLS_BLOCK_GROUPS = 64
"""First rows (pair groups) per parallel task of the fast MLS kernel."""

_LN2 = math.log(2.0)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mls_terms(unit, sigma, a, b, buf, mut):  # pragma: no cover - compiled
    """Per dimension k of rows a, b: mut[k] = sigma_sq1 + sigma_sq2 and buf[k] = (mu1 - mu2)^2 / mut[k]."""
    for k in range(unit.shape[1]):  # no calls, no branches: vectorised
        mu = sigma[a, k] + sigma[b, k]
        diff = unit[a, k] - unit[b, k]
        mut[k] = mu
        buf[k] = diff * diff / mu


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mls_exact_pair(unit, sigma, a, b, buf, mut, plan_lo, plan_n, vals):  # pragma: no cover - compiled
    """numpy's MLS of rows a, b bit for bit: the terms d*d/mu + log(mu) (one log per dimension), pairwise-summed."""
    d = unit.shape[1]
    if sigma.shape[1] != 1:
        _mls_terms(unit, sigma, a, b, buf, mut)
        for k in range(d):
            buf[k] = buf[k] + math.log(mut[k])
    else:
        mu = sigma[a, 0] + sigma[b, 0]
        lg = math.log(mu)
        for k in range(d):
            diff = unit[a, k] - unit[b, k]
            buf[k] = diff * diff / mu + lg
    return -_row_sum(buf, plan_lo, plan_n, vals)


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _mls_kernel(unit, sigma, i, j, order, plan_lo, plan_n, out):  # pragma: no cover - compiled
    m = i.shape[0]
    d = unit.shape[1]
    n_tasks = (m + GROUP_CHUNK - 1) // GROUP_CHUNK
    for t in numba.prange(n_tasks):
        buf = np.empty(d, dtype=np.float64)
        mut = np.empty(d, dtype=np.float64)
        vals = np.empty(plan_lo.shape[0], np.float64)
        for q in range(t * GROUP_CHUNK, min(m, (t + 1) * GROUP_CHUNK)):
            p = order[q] if order.shape[0] else q
            out[p] = _mls_exact_pair(unit, sigma, i[p], j[p], buf, mut, plan_lo, plan_n, vals)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tree_sum(buf, m):  # pragma: no cover - compiled
    """Sum of buf[:m] by halving in place (buf[k] += buf[h + k]): each level one branch-free loop that vectorises,
    and the same tree whatever the vector width, so the result does not depend on the CPU."""
    while m > 1:
        h = (m + 1) // 2
        for k in range(m - h):
            buf[k] += buf[h + k]
        m = h
    return buf[0]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _renormalise(bits, m):  # pragma: no cover - compiled
    """Write each of the m normal, positive float64 (as int64 bits) as mantissa in [0.5, 1) times 2^e, exactly (as
    frexp, without a call: vectorises); returns the sum of the exponents e."""
    e = 0
    for k in range(m):
        x = bits[k]
        e += ((x >> 52) & 0x7FF) - 1022
        bits[k] = (x & 0x000FFFFFFFFFFFFF) | 0x3FE0000000000000
    return e


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tree_log_prod(mut, bits, m):  # pragma: no cover - compiled
    """log of the product of mut[:m] (each in [2^-58, 2^60]) by halving products, renormalised every 4 levels (a
    value is then a product of <= 16 factors: within [2^-928, 2^960], normal), then ONE log: log(p) + e log 2."""
    e = 0
    level = 0
    while m > 1:
        h = (m + 1) // 2
        for k in range(m - h):
            mut[k] *= mut[h + k]
        m = h
        level += 1
        if level % 4 == 0:
            e += _renormalise(bits, m)
    return math.log(mut[0]) + e * _LN2


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mls_fast_pair(unit, sigma, a, b, buf, mut, bits):  # pragma: no cover - compiled
    """MLS of rows a, b with one log per pair: the quadratic terms summed and sigma_sq1 + sigma_sq2 multiplied by
    halving trees (wide sigma_sq of two safe rows), or -(sum d^2 / mu + D log mu) for one sigma_sq per row."""
    d = unit.shape[1]
    if sigma.shape[1] != 1:
        _mls_terms(unit, sigma, a, b, buf, mut)
        return -(_tree_sum(buf, d) + _tree_log_prod(mut, bits, d))
    for k in range(d):
        diff = unit[a, k] - unit[b, k]
        buf[k] = diff * diff
    mu = sigma[a, 0] + sigma[b, 0]
    return -(_tree_sum(buf, d) / mu + d * math.log(mu))


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _mls_fast_kernel(unit, sigma, i, j, order, gstart, safe, plan_lo, plan_n, out):  # pragma: no cover - compiled
    """Pairs visited in (i, j) order (`order`, empty = as given), a task per MLS_BLOCK_GROUPS first rows, each
    task sweeping the second rows in tiles of MLS_TILE_ROWS so a tile is read from memory once per task."""
    d = unit.shape[1]
    n = unit.shape[0]
    wide = sigma.shape[1] != 1
    n_groups = gstart.shape[0] - 1
    n_tasks = (n_groups + MLS_BLOCK_GROUPS - 1) // MLS_BLOCK_GROUPS
    for t in numba.prange(n_tasks):
        buf = np.empty(d, dtype=np.float64)
        mut = np.empty(d, dtype=np.float64)
        bits = mut.view(np.int64)
        vals = np.empty(plan_lo.shape[0], np.float64)
        g0 = t * MLS_BLOCK_GROUPS
        g1 = min(n_groups, g0 + MLS_BLOCK_GROUPS)
        ptr = gstart[g0:g1].copy()
        for tile_hi in range(MLS_TILE_ROWS, n + MLS_TILE_ROWS, MLS_TILE_ROWS):
            for g in range(g0, g1):
                q = ptr[g - g0]
                end = gstart[g + 1]
                while q < end:
                    p = order[q] if order.shape[0] else q
                    b = j[p]
                    if b >= tile_hi:
                        break
                    a = i[p]
                    if not wide or (safe[a] and safe[b]):
                        out[p] = _mls_fast_pair(unit, sigma, a, b, buf, mut, bits)
                    else:
                        out[p] = _mls_exact_pair(unit, sigma, a, b, buf, mut, plan_lo, plan_n, vals)
                    q += 1
                ptr[g - g0] = q


def _check_mutual_positive(sigma: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 16384) -> None:
    """Refuse, as the numpy formula does, a pair with sigma_sq1 + sigma_sq2 <= 0 in some dimension.

    Only rows holding a value <= 0 can make such a pair, so only the pairs touching them are looked at.
    """
    nonpos = (sigma <= 0).any(axis=1)
    if not nonpos.any():
        return
    (sel,) = np.nonzero(nonpos[i] | nonpos[j])
    for s in range(0, sel.size, block):
        k = sel[s : s + block]
        if np.any(sigma[i[k]] + sigma[j[k]] <= 0):
            raise ValueError("MLS needs sigma_sq > 0; a pair has sigma_sq1 + sigma_sq2 <= 0")


MLS_FAST_RTOL = 1e-12
"""The fast MLS kernel's documented bound: |fast - exact| <= MLS_FAST_RTOL * sum_k |term_k| (the terms
(u1-u2)^2/mu + log(mu) of the exact sum), measured far below it (tests/test_kernels.py)."""


def pair_sorted_order(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, group starts) visiting pairs by (i, j): order empty when the pairs already are (IJB-C's lists),
    else np.lexsort((j, i)); starts[g]..starts[g+1] the ordered positions of the g-th distinct first row."""
    if i.size < 2:
        order = np.empty(0, np.int64)
    else:
        same = i[1:] == i[:-1]
        grouped = bool(np.all(i[1:] >= i[:-1])) and bool(np.all((j[1:] >= j[:-1]) | ~same))
        order = np.empty(0, np.int64) if grouped else np.lexsort((j, i))
    i_sorted = i if order.size == 0 else i[order]
    starts = np.flatnonzero(np.r_[True, i_sorted[1:] != i_sorted[:-1]]) if i.size else np.empty(0, np.int64)
    return order, np.r_[starts, i.size].astype(np.int64)


def mls_pairs(
    unit: np.ndarray, sigma_sq: np.ndarray, i: np.ndarray, j: np.ndarray, *, exact: bool = False
) -> np.ndarray:
    """PFE MLS -sum_d((u1-u2)^2/(s1+s2) + log(s1+s2)) of pairs (i, j), float64 (M,).

    `unit` (N, D) L2-normalised float64 rows, `sigma_sq` (N, D) or (N, 1), `i`, `j` valid int64 row
    indices (checked by the caller). Default (fast): the quadratic term in 8 interleaved lanes and the log term as
    the log of one running product per pair (exact power-of-two renormalisation), within MLS_FAST_RTOL of the exact
    sum; pairs touching a row with a sigma_sq outside [2^-59, 2^59] (or inf/NaN) take the exact path. `exact`:
    bit-identical to the numpy formula (one log per dimension; earlier runs' numbers). A ValueError when some pair
    has sigma_sq1 + sigma_sq2 <= 0.
    """
    unit = np.ascontiguousarray(unit, dtype=np.float64)
    sigma = np.ascontiguousarray(sigma_sq, dtype=np.float64)
    i = np.ascontiguousarray(i, dtype=np.int64)
    j = np.ascontiguousarray(j, dtype=np.int64)
    out = np.empty(i.size, dtype=np.float64)
    if i.size == 0:
        return out
    _check_mutual_positive(sigma, i, j)
    plan = sum_plan(unit.shape[1])
    if exact:
        _mls_kernel(unit, sigma, i, j, _order_arg(i), *plan, out)
        return out
    safe = ((sigma >= 1.0 / _LOG_SAFE) & (sigma <= _LOG_SAFE)).all(axis=1)
    order, starts = pair_sorted_order(i, j)
    _mls_fast_kernel(unit, sigma, i, j, order, starts, safe, *plan, out)
    return out


def _order_arg(i: np.ndarray) -> np.ndarray:
    """grouped_order(i) as the kernels take it: an empty array for "already grouped"."""
    order = grouped_order(i)
    return np.empty(0, np.int64) if order is None else order


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _cosine_analytic_kernel(u, mu, i, j, order, plan_lo, plan_n, out):  # pragma: no cover - compiled
    m = i.shape[0]
    d = mu.shape[1]
    wide = u.shape[1] != 1
    n_tasks = (m + GROUP_CHUNK - 1) // GROUP_CHUNK
    for t in numba.prange(n_tasks):
        buf = np.empty(d, dtype=np.float64)
        vals = np.empty(plan_lo.shape[0], np.float64)
        for q in range(t * GROUP_CHUNK, min(m, (t + 1) * GROUP_CHUNK)):
            p = order[q] if order.shape[0] else q
            a = i[p]
            b = j[p]
            for k in range(d):
                ua = u[a, k] if wide else u[a, 0]
                ub = u[b, k] if wide else u[b, 0]
                m1 = mu[a, k]
                m2 = mu[b, k]
                buf[k] = (ua * ub + m1 * m1 * ub) + m2 * m2 * ua
            out[p] = _row_sum(buf, plan_lo, plan_n, vals)


def cosine_analytic_pairs(values: np.ndarray, features: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """sum_d(u1*u2 + mu1^2*u2 + mu2^2*u1) of pairs (i, j), float64 (M,), bit-identical to numpy's formula.

    `values` (N, D) or (N, 1) per-row uncertainties, `features` (N, D) used as given (not normalised).
    """
    u = np.ascontiguousarray(values, dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    mu = np.ascontiguousarray(features, dtype=np.float64)
    if u.shape[1] not in (1, mu.shape[1]):
        raise ValueError(f"cosine-analytic: values have {u.shape[1]} columns, features {mu.shape[1]}")
    i = np.ascontiguousarray(i, dtype=np.int64)
    j = np.ascontiguousarray(j, dtype=np.int64)
    out = np.empty(i.size, dtype=np.float64)
    if i.size:
        _cosine_analytic_kernel(u, mu, i, j, _order_arg(i), *sum_plan(mu.shape[1]), out)
    return out


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _reciprocal_sums_kernel(v, squared, plan_lo, plan_n, out):  # pragma: no cover - compiled
    n = v.shape[0]
    d = v.shape[1]
    n_tasks = (n + GROUP_CHUNK - 1) // GROUP_CHUNK
    for t in numba.prange(n_tasks):
        buf = np.empty(d, dtype=np.float64)
        vals = np.empty(plan_lo.shape[0], np.float64)
        for r in range(t * GROUP_CHUNK, min(n, (t + 1) * GROUP_CHUNK)):
            for k in range(d):
                x = v[r, k]
                buf[k] = 1.0 / (x * x if squared else x)
            out[r] = _row_sum(buf, plan_lo, plan_n, vals)


def row_reciprocal_sums(values: np.ndarray, squared: bool = False) -> np.ndarray:
    """Per row sum_k 1/v_k (or 1/v_k^2), float64 (N,), bit-identical to ``(1.0 / v).sum(axis=1)``.

    The row statistic behind the harmonic combinations of (N, D) uncertainties (harmonic mean =
    K / sum(1/v)); a zero value gives inf, as numpy does (no warning).
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    out = np.empty(len(v), dtype=np.float64)
    if len(v):
        _reciprocal_sums_kernel(v, bool(squared), *sum_plan(v.shape[1]), out)
    return out


# ---- template fusion: segment sums over rows sorted by template ----------------------------------------------
#
# np.add.reduceat(x, starts, axis=0) of an (N, D) array walks each column separately: the segment's first value,
# plus (`+=`) numpy's strided pairwise_sum of the remaining n - 1 values (whose short case starts from -0.0).
# The kernels below replay exactly that per column, but walk the rows of a segment once with D-wide accumulators
# (cache-friendly and vectorised), and compute each row's term on the fly from the float32 input, so no sorted
# float64 copy of the (N, D) rows is made. Serial and nogil: the callers' Dask tasks (blocks of whole templates)
# keep the cores busy.

_SEG_STACK = 64
"""Depth of the explicit stacks of the row-wise pairwise sum (halving from 2^63 rows needs < 60 levels)."""


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _seg_row(src, src2, order, div, w, usrc, uden, recip, t, r, buf):  # pragma: no cover - compiled
    """Row r's term into buf (D,): ((src + src2) [1/.] / div) * w * ((1/usrc) / uden[t]), factors optional (empty =
    absent); one branch-free loop per factor, so each vectorises."""
    d = buf.shape[0]
    o = order[r]
    for k in range(d):
        buf[k] = np.float64(src[o, k])
    if src2.shape[0]:
        for k in range(d):
            buf[k] = buf[k] + np.float64(src2[o, k])
    if recip:
        for k in range(d):
            buf[k] = 1.0 / buf[k]
    if div.shape[0]:
        dv = div[r]
        for k in range(d):
            buf[k] = buf[k] / dv
    if w.shape[0]:
        wr = w[r]
        for k in range(d):
            buf[k] = buf[k] * wr
    if usrc.shape[0]:
        if usrc.shape[1] != 1:
            for k in range(d):
                buf[k] = buf[k] * ((1.0 / np.float64(usrc[o, k])) / uden[t, k])
        else:
            att = (1.0 / np.float64(usrc[o, 0])) / uden[t, 0]
            for k in range(d):
                buf[k] = buf[k] * att


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _seg_leaf(src, src2, order, div, w, usrc, uden, recip, t, lo, n, acc, buf, v):  # pragma: no cover - compiled
    """numpy's strided pairwise_sum base case (n <= 128) of rows lo..lo+n, per column, into v (D,)."""
    d = v.shape[0]
    if n < 8:
        for k in range(d):
            v[k] = -0.0
        for r in range(lo, lo + n):
            _seg_row(src, src2, order, div, w, usrc, uden, recip, t, r, buf)
            for k in range(d):
                v[k] += buf[k]
        return
    for q in range(8):
        _seg_row(src, src2, order, div, w, usrc, uden, recip, t, lo + q, acc[q])
    stop = lo + n - (n % 8)
    for r in range(lo + 8, stop, 8):
        for q in range(8):
            _seg_row(src, src2, order, div, w, usrc, uden, recip, t, r + q, buf)
            a = acc[q]
            for k in range(d):
                a[k] += buf[k]
    for k in range(d):
        v[k] = ((acc[0, k] + acc[1, k]) + (acc[2, k] + acc[3, k])) + ((acc[4, k] + acc[5, k]) + (acc[6, k] + acc[7, k]))
    for r in range(stop, lo + n):
        _seg_row(src, src2, order, div, w, usrc, uden, recip, t, r, buf)
        for k in range(d):
            v[k] += buf[k]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _segment_sums_kernel(src, src2, order, starts, sizes, div, w, usrc, uden, recip, out):  # pragma: no cover
    d = out.shape[1]
    acc = np.empty((8, d), np.float64)
    buf = np.empty(d, np.float64)
    vals = np.empty((_SEG_STACK, d), np.float64)
    f_lo = np.empty(3 * _SEG_STACK, np.int64)
    f_n = np.empty(3 * _SEG_STACK, np.int64)
    for t in range(starts.shape[0]):
        s = starts[t]
        _seg_row(src, src2, order, div, w, usrc, uden, recip, t, s, out[t])
        m = sizes[t] - 1
        if m <= 0:
            continue
        # postfix walk of numpy's halving tree: frames (lo, n), n < 0 = "add the top two values"
        nf = 1
        f_lo[0] = s + 1
        f_n[0] = m
        nv = 0
        while nf:
            nf -= 1
            lo = f_lo[nf]
            n = f_n[nf]
            if n < 0:
                for k in range(d):
                    vals[nv - 2, k] = vals[nv - 2, k] + vals[nv - 1, k]
                nv -= 1
            elif n <= _PW_BLOCKSIZE:
                _seg_leaf(src, src2, order, div, w, usrc, uden, recip, t, lo, n, acc, buf, vals[nv])
                nv += 1
            else:
                n2 = n // 2
                n2 -= n2 % 8
                f_lo[nf] = lo  # combine after both halves
                f_n[nf] = -1
                f_lo[nf + 1] = lo + n2  # right half, evaluated second
                f_n[nf + 1] = n - n2
                f_lo[nf + 2] = lo  # left half, evaluated first
                f_n[nf + 2] = n2
                nf += 3
        o = out[t]
        v0 = vals[0]
        for k in range(d):
            o[k] += v0[k]


_EMPTY_1 = np.empty(0, np.float64)
_EMPTY_2 = np.empty((0, 1), np.float32)
"""The absent attention values: float32 like the stored sigma_sq, so "no attention" and PFE's attention share one
compiled signature (each signature is a compile on a cold cache)."""


def segment_sums(
    src: np.ndarray,
    order: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    *,
    add: np.ndarray | None = None,
    reciprocal: bool = False,
    divide: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    attention: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``np.add.reduceat(term[order], starts, axis=0)`` bit for bit, without materialising `term` (T, D) float64.

    The term of input row ``o = order[r]`` (r a sorted position) is, in float64 and in this order:
    ``x = src[o] (+ add[o]); x = 1/x if reciprocal; x /= divide[r]; x *= weight[r]; x *= (1/u[o]) / den[t]``
    with ``attention = (u, den)`` ((N, K) and (T, K), K = 1 or D, t the row's segment). `src` and `add` are
    (N, D) float32 or float64; `starts` the segments' first sorted positions, `sizes` their lengths (>= 1,
    consecutive). Serial and GIL-free.
    """
    src = np.ascontiguousarray(src)
    if src.dtype not in (np.float32, np.float64):
        src = src.astype(np.float64)
    order = np.ascontiguousarray(order, dtype=np.int64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    out = np.empty((starts.shape[0], src.shape[1]), np.float64)
    if starts.shape[0] == 0:
        return out
    if add is not None and np.asarray(add).dtype != src.dtype:
        src, add = src.astype(np.float64), np.asarray(add, dtype=np.float64)
    src2 = np.empty((0, src.shape[1]), src.dtype) if add is None else np.ascontiguousarray(add)
    div = _EMPTY_1 if divide is None else np.ascontiguousarray(divide, dtype=np.float64)
    wt = _EMPTY_1 if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    usrc, uden = (_EMPTY_2, _EMPTY_2.astype(np.float64)) if attention is None else attention
    usrc = np.ascontiguousarray(usrc, dtype=np.float64) if usrc.dtype != np.float32 else np.ascontiguousarray(usrc)
    uden = np.ascontiguousarray(uden, dtype=np.float64)
    _segment_sums_kernel(src, src2, order, starts, sizes, div, wt, usrc, uden, bool(reciprocal), out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _segment_min_kernel(src, order, starts, sizes, out):  # pragma: no cover - compiled
    d = out.shape[1]
    for t in range(starts.shape[0]):
        s = starts[t]
        for k in range(d):
            out[t, k] = np.float64(src[order[s], k])
        for r in range(s + 1, s + sizes[t]):
            o = order[r]
            for k in range(d):
                x = np.float64(src[o, k])
                cur = out[t, k]
                if x < cur or (x != x and cur == cur):  # np.minimum: a NaN wins
                    out[t, k] = x


def segment_min(src: np.ndarray, order: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``np.minimum.reduceat(src[order], starts, axis=0)`` as float64 (T, D), without the sorted copy (a NaN wins;
    for min(0.0, -0.0) this keeps the earlier row's zero, where numpy's SIMD loops may pick either sign)."""
    src = np.ascontiguousarray(src)
    if src.dtype not in (np.float32, np.float64):
        src = src.astype(np.float64)
    out = np.empty((len(starts), src.shape[1]), np.float64)
    if len(starts):
        _segment_min_kernel(
            src,
            np.ascontiguousarray(order, dtype=np.int64),
            np.ascontiguousarray(starts, dtype=np.int64),
            np.ascontiguousarray(sizes, dtype=np.int64),
            out,
        )
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _row_norms_kernel(src, plan_lo, plan_n, out):  # pragma: no cover - compiled
    d = src.shape[1]
    buf = np.empty(d, np.float64)
    vals = np.empty(plan_lo.shape[0], np.float64)
    for r in range(src.shape[0]):
        for k in range(d):
            x = np.float64(src[r, k])
            buf[k] = x * x
        out[r] = math.sqrt(_row_sum(buf, plan_lo, plan_n, vals))


def row_norms(src: np.ndarray) -> np.ndarray:
    """``np.linalg.norm(src.astype(float64), axis=1)`` bit for bit, (N,), without the float64 copy."""
    src = np.ascontiguousarray(src)
    if src.dtype not in (np.float32, np.float64):
        src = src.astype(np.float64)
    out = np.empty(src.shape[0], np.float64)
    if src.shape[0]:
        _row_norms_kernel(src, *sum_plan(src.shape[1]), out)
    return out
