"""The fused kernels (analyze.kernels) against the plain numpy formulas they replace, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from analyze import kernels
from analyze.rows import harmonic_mean, l2_normalize
from analyze.scores import mls_scores
from analyze.uncertainty import combine, pair_uncertainty


def numpy_mls(features, sigma_sq, i, j):
    """The formula as analyze.scores computed it before the kernels: gathered rows, numpy ops."""
    f = np.asarray(features, dtype=np.float64)
    s = np.asarray(sigma_sq, dtype=np.float64)
    s = s[:, None] if s.ndim == 1 else s
    d = l2_normalize(f[i]) - l2_normalize(f[j])
    mutual = np.broadcast_to(s[i] + s[j], d.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(d * d / mutual + np.log(mutual), axis=1)


def data(n=40, d=512, m=700, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)).astype(np.float32)
    s = np.exp(rng.normal(-1, 1.5, size=(n, d))).astype(np.float32)
    i = rng.integers(0, n, m)
    j = rng.integers(0, n, m)
    return f, s, i, j


@pytest.mark.parametrize("length", [0, 1, 2, 7, 8, 9, 127, 128, 129, 200, 255, 256, 257, 512, 513, 1000])
def test_pairwise_sum_is_numpys_sum(length):
    rng = np.random.default_rng(length)
    x = rng.normal(size=length) * 10.0 ** rng.uniform(-8, 8, size=length)
    assert kernels.pairwise_sum(x) == x.sum()
    assert kernels.pairwise_sum(np.full(max(length, 1), -0.0)) == np.full(max(length, 1), -0.0).sum()


@pytest.mark.parametrize("d", [1, 3, 64, 129, 512])
def test_mls_bit_identical(d):
    f, s, i, j = data(d=d)
    want = numpy_mls(f, s, i, j)
    got = mls_scores(f, s, i, j, exact=True)
    assert np.array_equal(got, want)
    # one sigma per row (N, 1) and (N,), broadcast over the dimensions
    assert np.array_equal(mls_scores(f, s[:, :1], i, j, exact=True), numpy_mls(f, s[:, :1], i, j))
    assert np.array_equal(mls_scores(f, s[:, 0], i, j, exact=True), numpy_mls(f, s[:, 0], i, j))


def test_mls_fast_within_rounding():
    f, s, i, j = data(m=2000)
    exact = mls_scores(f, s, i, j, exact=True)
    fast = mls_scores(f, s, i, j, exact=False)
    assert np.abs(fast - exact).max() <= 1e-12 * np.abs(exact).max()
    assert not np.array_equal(fast, exact)  # really the other summation


def test_mls_fast_falls_back_for_extreme_sigma():
    f, s, i, j = data(n=6, d=64, m=36)
    s = s.astype(np.float64)
    s[0, :] = 1e-200  # products of 16 such values underflow: those pairs take the exact path
    s[1, 3] = 1e30
    want = numpy_mls(f, s, i, j)
    got = mls_scores(f, s, i, j, exact=False)
    touched = np.isin(i, [0, 1]) | np.isin(j, [0, 1])
    assert touched.any()
    assert np.array_equal(got[touched], want[touched])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_mls_inf_nan_and_nonpositive_sigma():
    f, s, i, j = data(n=6, d=16, m=36)
    s = s.astype(np.float64)
    s[2, 5] = np.inf
    s[3, 0] = np.nan
    want = numpy_mls(f, s, i, j)
    for exact in (True, False):
        got = mls_scores(f, s, i, j, exact=exact)
        if exact:
            assert np.array_equal(got, want, equal_nan=True)
        else:  # inf/NaN rows take the exact path; the others agree to rounding
            np.testing.assert_allclose(got, want, rtol=1e-13)
        inf_pairs = ((i == 2) | (j == 2)) & (i != 3) & (j != 3)
        assert inf_pairs.any() and np.isneginf(got[inf_pairs]).all()  # log(inf) term
        nan_pairs = (i == 3) | (j == 3)
        assert nan_pairs.any() and np.isnan(got[nan_pairs]).all()
    z = s.copy()
    z[4] = 0.0  # sigma1 + sigma2 == 0 only for the pair (4, 4)
    ii, jj = np.array([4, 4, 0]), np.array([0, 4, 1])
    with pytest.raises(ValueError, match="sigma_sq > 0"):
        mls_scores(f, z, ii, jj, exact=True)
    assert np.array_equal(mls_scores(f, z, ii[[0, 2]], jj[[0, 2]], exact=True), numpy_mls(f, z, ii[[0, 2]], jj[[0, 2]]))
    neg = s.copy()
    neg[5, 1] = -10.0
    with pytest.raises(ValueError, match="sigma_sq > 0"):
        mls_scores(f, neg, np.array([5]), np.array([0]), exact=True)


def test_mls_zero_feature_row_and_empty_and_non_contiguous():
    f, s, i, j = data(n=10, d=32, m=80)
    f[3] = 0.0  # a zero row stays zero after normalisation
    assert np.array_equal(mls_scores(f, s, i, j, exact=True), numpy_mls(f, s, i, j))
    empty = mls_scores(f, s, np.array([], np.int64), np.array([], np.int64), exact=True)
    assert empty.shape == (0,) and empty.dtype == np.float64
    fw = np.asfortranarray(f[:, ::2])  # strided and Fortran-ordered inputs
    sw = s[:, 1::2]
    assert not fw.flags.c_contiguous and not sw.flags.c_contiguous
    got = mls_scores(fw, sw, i[::-1], j[::-1], exact=True)
    # the same bits as the formula on C-ordered copies (numpy's own sums depend on the layout)
    assert np.array_equal(got, numpy_mls(np.ascontiguousarray(fw), np.ascontiguousarray(sw), i[::-1], j[::-1]))
    np.testing.assert_allclose(got, numpy_mls(fw, sw, i[::-1], j[::-1]), rtol=1e-13)


def test_mls_pair_order_kept_when_pairs_are_not_grouped():
    f, s, i, j = data(n=30, d=48, m=500, seed=3)
    assert kernels.grouped_order(i) is not None
    got = mls_scores(f, s, i, j, exact=True)
    order = np.argsort(i, kind="stable")
    assert kernels.grouped_order(i[order]) is None
    assert np.array_equal(got, numpy_mls(f, s, i, j))
    assert np.array_equal(mls_scores(f, s, i[order], j[order], exact=True), got[order])


def test_single_image_templates_pair_with_themselves():
    f, s, _, _ = data(n=4, d=20)
    i = j = np.arange(4)  # a template scored against itself: the distance term vanishes
    got = mls_scores(f, s, i, j, exact=True)
    assert np.array_equal(got, numpy_mls(f, s, i, j))
    assert np.array_equal(got, -np.log(2.0 * s.astype(np.float64)).sum(axis=1))


@pytest.mark.parametrize("k", [1, 7, 512])
def test_cosine_analytic_bit_identical(k):
    f, s, i, j = data(d=512)
    u = s[:, :k]
    if k not in (1, 512):
        with pytest.raises(ValueError, match="columns"):
            pair_uncertainty("cosine-analytic", u, i, j, features=f)
        return
    want = combine("cosine-analytic", u[i], u[j], mu1=f[i].astype(np.float64), mu2=f[j].astype(np.float64))
    assert np.array_equal(pair_uncertainty("cosine-analytic", u, i, j, features=f), want)
    assert np.array_equal(kernels.cosine_analytic_pairs(u[:, 0] if k == 1 else u, f, i, j), want)
    assert pair_uncertainty("cosine-analytic", u, i[:0], j[:0], features=f).shape == (0,)


def test_cosine_analytic_non_contiguous_and_inf():
    f, s, i, j = data(n=12, d=64, m=90)
    s = s.astype(np.float64)
    s[1, 2] = np.inf
    fw, sw = f[:, ::2], s[:, ::2]
    want = combine("cosine-analytic", sw[i], sw[j], mu1=fw[i].astype(np.float64), mu2=fw[j].astype(np.float64))
    assert np.array_equal(pair_uncertainty("cosine-analytic", sw, i, j, features=fw), want, equal_nan=True)


@pytest.mark.parametrize(
    "name", ["harmonic-sum", "harmonic-mul", "harmonic-harmonic", "squared-harmonic", "mean", "mul"]
)
def test_harmonic_combinations_of_n_by_d_values(name):
    f, s, i, j = data(d=512)
    s = s.astype(np.float64)
    s[0, 0] = 0.0  # harmonic mean 0 (1/0 = inf), as numpy
    s[1, 1] = np.inf
    want = combine(name, s[i], s[j])
    got = pair_uncertainty(name, s, i, j)
    assert np.array_equal(got, want, equal_nan=True)


def test_row_reciprocal_sums():
    rng = np.random.default_rng(5)
    v = np.exp(rng.normal(size=(9, 300)))
    v[2, 7] = 0.0
    with np.errstate(divide="ignore"):
        assert np.array_equal(kernels.row_reciprocal_sums(v), (1.0 / v).sum(axis=1))
        assert np.array_equal(kernels.row_reciprocal_sums(v, squared=True), (1.0 / (v * v)).sum(axis=1))
    assert np.array_equal(1.0 / (kernels.row_reciprocal_sums(v[:, ::3]) / 100), harmonic_mean(v[:, ::3], axis=1))
    assert kernels.row_reciprocal_sums(np.empty((0, 4))).shape == (0,)


def exact_terms_abs_sum(features, sigma_sq, i, j):
    """sum_k |(u1-u2)^2/mu + log(mu)|: the scale the fast kernel's bound (kernels.MLS_FAST_RTOL) is relative to."""
    f = np.asarray(features, dtype=np.float64)
    s = np.asarray(sigma_sq, dtype=np.float64)
    s = s[:, None] if s.ndim == 1 else s
    d = l2_normalize(f[i]) - l2_normalize(f[j])
    mutual = np.broadcast_to(s[i] + s[j], d.shape)
    return np.abs(d * d / mutual + np.log(mutual)).sum(axis=1)


@pytest.mark.parametrize("d", [1, 2, 3, 7, 15, 16, 17, 64, 129, 255, 500, 512, 1000])
@pytest.mark.parametrize("spread", [0.5, 1.5, 12.0])
def test_mls_fast_default_within_bound(d, spread):
    """The default (fast) MLS against the exact one, on D not a multiple of the tree's blocks and sigma_sq from
    near 1 (log terms that cancel) to 1e-17..1e17 (near the safe range's edges)."""
    rng = np.random.default_rng(d)
    f, _, i, j = data(n=30, d=d, m=400, seed=d)
    s = np.exp(rng.normal(0.0, spread, size=(30, d))).clip(2.0**-58, 2.0**58)
    exact = mls_scores(f, s, i, j, exact=True)
    fast = mls_scores(f, s, i, j)
    bound = kernels.MLS_FAST_RTOL * exact_terms_abs_sum(f, s, i, j)
    assert np.all(np.abs(fast - exact) <= bound)
    # measured: far below the bound (~1e-15 relative), the documented 1e-12 leaves room for other CPUs' libm
    assert np.all(np.abs(fast - exact) <= 64 * 2.0**-52 * exact_terms_abs_sum(f, s, i, j))
    narrow = mls_scores(f, s[:, :1], i, j)  # one sigma_sq per row
    narrow_exact = mls_scores(f, s[:, :1], i, j, exact=True)
    assert np.all(np.abs(narrow - narrow_exact) <= kernels.MLS_FAST_RTOL * exact_terms_abs_sum(f, s[:, :1], i, j))


def test_mls_fast_tiny_huge_zero_inf_nan_sigma():
    """Rows with a sigma_sq outside [2^-59, 2^59] (tiny, huge, zero, inf, NaN) take the exact path: their pairs
    give numpy's bits (inf/NaN as numpy: -inf, NaN); a zero beside a positive sigma_sq is a valid pair."""
    f, s, i, j = data(n=9, d=33, m=300, seed=5)
    s = s.astype(np.float64)
    s[0, :] = 1e-300
    s[1, 4] = 1e300
    s[2, 7] = 0.0
    s[3, 1] = np.inf
    s[4, 2] = np.nan
    s[5, :] = 2.0**-60  # just outside the safe range
    s[6, :] = 2.0**-59  # just inside: fast path, products of 16 still normal
    s[7, :] = 2.0**59
    keep = ~((i == 2) & (j == 2))  # (2, 2): sigma1 + sigma2 == 0, refused
    i, j = i[keep], j[keep]
    want = numpy_mls(f, s, i, j)
    got = mls_scores(f, s, i, j)
    unsafe = np.isin(i, [0, 1, 2, 3, 4, 5]) | np.isin(j, [0, 1, 2, 3, 4, 5])
    assert unsafe.any() and (~unsafe).any()
    assert np.array_equal(got[unsafe], want[unsafe], equal_nan=True)
    ok = ~unsafe
    assert np.all(np.abs(got[ok] - want[ok]) <= kernels.MLS_FAST_RTOL * exact_terms_abs_sum(f, s, i[ok], j[ok]))
    assert np.isneginf(got[((i == 3) | (j == 3)) & (i != 4) & (j != 4)]).all()
    assert np.isnan(got[(i == 4) | (j == 4)]).all()


def test_mls_fast_single_image_templates_and_order_independence():
    """A row against itself (single-image templates fused to themselves): only the log term; and the fast score of
    a pair does not depend on where the pair sits in the list, so grouping/tiling/sorting never changes a bit."""
    f, s, _, _ = data(n=300, d=96, seed=7)
    rng = np.random.default_rng(7)
    i = rng.integers(0, 300, 5000)  # spans several tiles of second rows, unsorted
    j = rng.integers(0, 300, 5000)
    i[:50] = j[:50]
    got = mls_scores(f, s, i, j)
    exact = mls_scores(f, s, i, j, exact=True)
    assert np.all(np.abs(got - exact) <= kernels.MLS_FAST_RTOL * exact_terms_abs_sum(f, s, i, j))
    np.testing.assert_allclose(got[:50], -np.log(2.0 * s[i[:50]].astype(np.float64)).sum(axis=1), rtol=1e-13)
    order = np.lexsort((j, i))  # grouped and sorted: the kernel's own visiting order, no reordering needed
    assert kernels.pair_sorted_order(i[order], j[order])[0].size == 0
    assert np.array_equal(mls_scores(f, s, i[order], j[order]), got[order])
    perm = rng.permutation(i.size)
    assert np.array_equal(mls_scores(f, s, i[perm], j[perm]), got[perm])


def test_mls_summation_context_selects_the_kernel():
    from analyze.scores import mls_summation, pair_scores

    f, s, i, j = data(m=300)
    exact = mls_scores(f, s, i, j, exact=True)
    with mls_summation(True):
        assert np.array_equal(pair_scores("MLS", f, i, j, uncertainty=s), exact)
        assert not np.array_equal(mls_scores(f, s, i, j, exact=False), exact)
    assert np.array_equal(pair_scores("MLS", f, i, j, uncertainty=s), mls_scores(f, s, i, j, exact=False))
