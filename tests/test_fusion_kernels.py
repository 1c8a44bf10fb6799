"""The fusion kernels (analyze.kernels.segment_sums / segment_min / row_norms) and the fusions built on them,
pinned bit for bit against the numpy segment reductions (np.add.reduceat) they replace."""

from __future__ import annotations

import numpy as np
import pytest

from analyze import kernels
from analyze.fusion import fuse
from analyze.rows import l2_normalize

SIZES = [1, 2, 7, 8, 9, 16, 127, 128, 129, 130, 300, 1000, 1, 3]
"""Segment lengths crossing numpy's short case (< 8), its 8-accumulator block and its halving (> 128)."""


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, NaN matching NaN (and the sign of every zero and infinity compared; a NaN's sign bit is
    the hardware's choice of operand, and a NaN template is dropped before scoring)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
        return False
    keep = ~np.isnan(a)
    return np.array_equal(np.signbit(a[keep]), np.signbit(b[keep]))


def rows(sizes, d, dtype, special, seed=0):
    rng = np.random.default_rng(seed)
    n = int(np.sum(sizes))
    x = (rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-3, 3, (n, 1))).astype(dtype)
    if special:  # zeros of both signs, infinities, NaN
        x[rng.random((n, d)) < 0.1] = 0.0
        x[rng.random((n, d)) < 0.05] = -0.0
        x[rng.random((n, d)) < 0.01] = np.inf
        x[rng.random((n, d)) < 0.01] = -np.inf
        x[rng.random((n, d)) < 0.01] = np.nan
        x[: sizes[0]] = -0.0  # a whole segment of -0.0
    order = rng.permutation(n)
    starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
    return x, order, starts, np.asarray(sizes, dtype=np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("d", [1, 13, 512])
def test_segment_sums_is_reduceat(dtype, special, d):
    x, order, starts, sizes = rows(SIZES, d, dtype, special)
    with np.errstate(all="ignore"):
        ref = np.add.reduceat(np.asarray(x[order], np.float64), starts, axis=0)
    assert same(kernels.segment_sums(x, order, starts, sizes), ref)
    # np.minimum's SIMD loops pick either sign for min(0.0, -0.0): compare minima with unsigned zeros
    # (the fusions take minima of sigma_sq > 0 only)
    xz = np.where(x == 0, 0.0, x).astype(dtype)
    ref_min = np.minimum.reduceat(np.asarray(xz[order], np.float64), starts, axis=0)
    assert same(kernels.segment_min(xz, order, starts, sizes), ref_min)
    with np.errstate(all="ignore"):
        assert same(kernels.row_norms(x), np.linalg.norm(np.asarray(x, np.float64), axis=1))


@pytest.mark.parametrize("special", [False, True])
def test_segment_sums_terms_are_numpys_expressions(special):
    x, order, starts, sizes = rows(SIZES, 24, np.float32, special, seed=1)
    rng = np.random.default_rng(2)
    n = len(x)
    seg = np.repeat(np.arange(len(sizes)), sizes)
    flip = rng.standard_normal(x.shape).astype(np.float32)
    div = np.abs(rng.standard_normal(n)) + (0.0 if special else 0.5)
    w = rng.standard_normal(n)
    u = np.exp(rng.standard_normal((n, 24))).astype(np.float32)
    if special:
        u[rng.random(u.shape) < 0.02] = np.inf
        u[rng.random(u.shape) < 0.02] = np.nan
    f64 = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        red = lambda term: np.add.reduceat(term, starts, axis=0)  # noqa: E731
        ref = red(((f64[order] + np.asarray(flip[order], np.float64)) / div[:, None]) * w[:, None])
        got = kernels.segment_sums(x, order, starts, sizes, add=flip, divide=div, weight=w)
        assert same(got, ref)
        for k in (24, 1):  # attention per dimension, and one value per image
            uk = np.asarray(u[:, :k], np.float64)
            inv_sum = red(1.0 / uk[order])
            assert same(kernels.segment_sums(u[:, :k], order, starts, sizes, reciprocal=True), inv_sum)
            ref = red(f64[order] * ((1.0 / uk[order]) / inv_sum[seg]))
            assert same(kernels.segment_sums(x, order, starts, sizes, attention=(u[:, :k], inv_sum)), ref)


# ---- the fusions against the numpy formulas they had before the kernels ----------------------------------------


def _old_segments(template):
    order = np.argsort(template, kind="stable")
    ids, starts, sizes = np.unique(template[order], return_index=True, return_counts=True)
    return order, starts, sizes, np.repeat(np.arange(len(ids)), sizes)


def old_fusion(name, features, template, unc, **media):
    """The numpy implementations of analyze.fusion before the kernels (a verbatim transcription)."""
    order, starts, sizes, seg = _old_segments(template)
    f = np.asarray(features[order], dtype=np.float64)
    u = None if unc is None else np.asarray(unc, np.float64).reshape(len(f), -1)[order]

    def ssum(x):
        return np.add.reduceat(x, starts, axis=0)

    if name == "first":
        return l2_normalize(f[starts]), None if u is None else u[starts]
    if name in ("mean", "stat-mean"):
        unc_out = None if u is None else ssum(u) / sizes[:, None]
        if unc_out is not None and name == "stat-mean":
            unc_out = unc_out * np.sqrt(sizes)[:, None]
        return l2_normalize(ssum(f) / sizes[:, None]), unc_out
    if name in ("PFE", "PFE-paper"):
        with np.errstate(invalid="ignore", divide="ignore"):
            inv = 1.0 / u
            inv_sum = ssum(inv)
            attention = inv / inv_sum[seg]
        return l2_normalize(ssum(f * attention)), (
            1.0 / inv_sum if name == "PFE-paper" else np.minimum.reduceat(u, starts, axis=0)
        )
    if name == "weighted":
        w = u[:, 0] / ssum(u[:, 0])[seg]
        return l2_normalize(ssum(l2_normalize(f) * w[:, None])), ssum(u * w[:, None])

    def softmax(v, temperature):
        z = v / temperature
        e = np.exp(z - np.maximum.reduceat(z, starts, axis=0)[seg])
        return e / ssum(e)[seg]

    if name in ("softmax", "stat-softmax"):
        w = softmax(u[:, 0], 1.0)
        unc_out = ssum(u * w[:, None]) * (np.sqrt(sizes)[:, None] if name == "stat-softmax" else 1.0)
        return l2_normalize(ssum(f * w[:, None])), unc_out
    if name == "weighted-softmax":
        w = u[:, 0] / ssum(u[:, 0])[seg]
        return l2_normalize(ssum(f * w[:, None])), ssum(u * softmax(u[:, 0], 1.0)[:, None])
    assert name == "media"
    n = len(features)
    x = np.asarray(features, dtype=np.float64)
    if media.get("add_flip", True):
        x = x + np.asarray(media["features_flip"], dtype=np.float64)
    if not media.get("keep_norm", True):
        x = l2_normalize(x)
    if media.get("use_detector_score", True):
        x = x * np.asarray(media["detector_score"], dtype=np.float64)[:, None]
    m = np.asarray(media["media"])
    m = np.where(m < 0, -2 - np.arange(n), m).astype(np.int64)
    o = np.lexsort((m, template))
    t_sorted, m_sorted = template[o], m[o]
    new = np.ones(n, dtype=bool)
    new[1:] = (t_sorted[1:] != t_sorted[:-1]) | (m_sorted[1:] != m_sorted[:-1])
    g_starts = np.flatnonzero(new)
    g_sizes = np.diff(np.append(g_starts, n))
    media_feats = np.add.reduceat(x[o], g_starts, axis=0) / g_sizes[:, None]
    g_t = t_sorted[g_starts]
    t_starts = np.flatnonzero(np.r_[True, g_t[1:] != g_t[:-1]])
    return l2_normalize(np.add.reduceat(media_feats, t_starts, axis=0)), None if u is None else ssum(u) / sizes[:, None]


def templates(seed, d=32, special=False):
    """Shuffled images of templates of 1 (many), 2..9, 129 and 300 images, with medias, flips, detector scores."""
    rng = np.random.default_rng(seed)
    sizes = np.r_[np.ones(20, int), rng.integers(2, 10, 30), 129, 300]
    template = rng.permutation(np.repeat(rng.permutation(10 * len(sizes))[: len(sizes)], sizes))
    n = len(template)
    f = rng.standard_normal((n, d)).astype(np.float32)
    f[rng.random(n) < 0.03] = 0.0  # zero embeddings
    sigma = np.exp(rng.standard_normal((n, d))).astype(np.float32)
    scale = np.exp(rng.standard_normal(n)).astype(np.float32)
    if special:
        sigma[rng.random((n, d)) < 0.01] = np.inf
        sigma[rng.random((n, d)) < 0.01] = np.nan
        scale[rng.random(n) < 0.02] = np.inf
        scale[rng.random(n) < 0.02] = 0.0
    extra = {
        "media": np.where(rng.random(n) < 0.2, -1, rng.integers(0, 6, n)),
        "detector_score": rng.uniform(0.1, 1.0, n).astype(np.float32),
        "features_flip": rng.standard_normal((n, d)).astype(np.float32),
    }
    return f, template, sigma, scale, extra


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_fusions_match_the_numpy_formulas(seed, special):
    f, template, sigma, scale, extra = templates(seed, special=special)
    cases = [
        ("first", scale),
        ("first", sigma),
        ("first", None),
        ("mean", None),
        ("mean", scale),
        ("mean", sigma),
        ("stat-mean", scale),
        ("PFE", sigma),
        ("PFE-paper", sigma),
        ("PFE", sigma[:, :1]),
        ("weighted", scale),
        ("softmax", scale),
        ("stat-softmax", scale),
        ("weighted-softmax", scale),
    ]
    with np.errstate(all="ignore"):
        for name, unc in cases:
            got = fuse(name, f, template, uncertainty=unc)
            ref_f, ref_u = old_fusion(name, f, template, unc)
            assert same(got.features, ref_f), name
            if ref_u is None:
                assert got.uncertainty is None
            else:
                assert same(got.uncertainty.reshape(ref_u.shape), ref_u), name
        for opts in (
            {},
            {"add_flip": False},
            {"keep_norm": False},
            {"use_detector_score": False},
            {"keep_norm": False, "add_flip": False, "use_detector_score": False},
        ):
            kw = {**extra, **opts}
            if not kw.get("add_flip", True):
                kw.pop("features_flip")
            got = fuse("media", f, template, uncertainty=scale, **kw)
            ref_f, ref_u = old_fusion("media", f, template, scale, **kw)
            assert same(got.features, ref_f), opts
            assert same(got.uncertainty, ref_u[:, 0]), opts


def test_fusion_of_float64_and_integer_rows_matches():
    f, template, sigma, scale, extra = templates(3, d=8)
    for rows_ in (f.astype(np.float64), np.round(f * 10).astype(np.int32)):
        for name, unc in (("mean", None), ("PFE", sigma), ("weighted", scale)):
            assert same(
                fuse(name, rows_, template, uncertainty=unc).features, old_fusion(name, rows_, template, unc)[0]
            )
