"""The matrix-product path of cosine_scores equals the per-pair gather path."""

from __future__ import annotations

import numpy as np
import pytest

from analyze import scores
from analyze.scores import DENSE_PAIRS_PER_ROW, cosine_scores


def test_dense_path_equals_gather_path(monkeypatch):
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((50, 8))
    feats[7] = 0.0  # a zero row stays a zero score, not NaN
    m = DENSE_PAIRS_PER_ROW * 50 + 3
    i, j = rng.integers(0, 50, m), rng.integers(0, 50, m)
    monkeypatch.setattr(scores, "DENSE_BLOCK_ROWS", 16)  # several blocks, one partly empty
    dense = cosine_scores(feats, i, j)
    gathered = np.concatenate([cosine_scores(feats, i[s], j[s]) for s in (slice(0, m // 2), slice(m // 2, m))])
    np.testing.assert_allclose(dense, gathered, rtol=0, atol=1e-14)
    assert (dense[(i == 7) | (j == 7)] == 0).all()
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-300)
    np.testing.assert_allclose(dense, (unit[i] * unit[j]).sum(1), atol=1e-14)


def old_dense_cosine(unit, i, j, block_rows=1024):
    """The dense path before it skipped unused rows and columns: full row blocks of unit @ unit.T."""
    order = np.argsort(i, kind="stable")
    i_sorted = i[order]
    out = np.empty(i.size, dtype=np.float64)
    edges = np.searchsorted(i_sorted, np.arange(0, len(unit) + block_rows, block_rows))
    for k, a in enumerate(range(0, len(unit), block_rows)):
        lo, hi = edges[k], edges[k + 1]
        if lo == hi:
            continue
        sim = unit[a : a + block_rows] @ unit.T
        sel = order[lo:hi]
        out[sel] = sim[i_sorted[lo:hi] - a, j[sel]]
    return out


def bipartite_pairs(rng, n_first, n_second, density, shuffle):
    first = np.sort(rng.choice(n_first + n_second, n_first, replace=False))
    second = np.setdiff1d(np.arange(n_first + n_second), first)
    a, b = np.nonzero(rng.random((n_first, n_second)) < density)
    i, j = first[a], second[b]
    if shuffle:
        p = rng.permutation(i.size)
        i, j = i[p], j[p]
    return i.astype(np.int64), j.astype(np.int64)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("d", [7, 64, 512])
def test_dense_cosine_bit_identical_to_full_row_blocks(shuffle, d):
    """Only the used rows and columns of each block are multiplied; the dot products keep their bits (BLAS sums
    each entry over the same k in the same order whatever the block's other rows and columns)."""
    rng = np.random.default_rng(d)
    for n in (703, 702, 701, 700, 130):  # the last block's row count mod 4: 3, 2, 1, 0 (block 64); few rows
        unit = scores.l2_normalize(rng.standard_normal((n, d)))
        i, j = bipartite_pairs(rng, n // 5, n - n // 5, 0.23, shuffle)
        for rows in (64, 1024):
            scores.DENSE_BLOCK_ROWS, saved = rows, scores.DENSE_BLOCK_ROWS
            try:
                assert np.array_equal(scores._dense_cosine(unit, i, j), old_dense_cosine(unit, i, j, rows))
                # a block whose pairs need one column only, and one first row only
                one = np.flatnonzero(j == j[0])
                assert np.array_equal(
                    scores._dense_cosine(unit, i[one], j[one]), old_dense_cosine(unit, i[one], j[one], rows)
                )
                assert np.array_equal(
                    scores._dense_cosine(unit, i[:3], j[:3]), old_dense_cosine(unit, i[:3], j[:3], rows)
                )
            finally:
                scores.DENSE_BLOCK_ROWS = saved


def test_cosine_reused_for_the_same_pair_set_only():
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((60, 16))
    i, j = rng.integers(0, 60, 5000), rng.integers(0, 60, 5000)
    first = cosine_scores(feats, i, j)
    first[:] = 7.0  # the caller owns what it got
    again = cosine_scores(feats, i, j)
    assert scores._LAST_COSINE.get(feats, i, j) is not None
    np.testing.assert_array_equal(again, cosine_scores(feats.copy(), i, j))
    assert not (again == 7.0).any()
    other = feats.copy()
    other[0] = 1.0
    assert scores._LAST_COSINE.get(other, i, j) is None  # another array misses
    changed = cosine_scores(other, i, j)
    assert not np.array_equal(changed[(i == 0) | (j == 0)], again[(i == 0) | (j == 0)])


def test_cached_cosine_is_released_with_its_inputs():
    import gc

    rng = np.random.default_rng(4)
    feats = rng.standard_normal((30, 8))
    i, j = rng.integers(0, 30, 100), rng.integers(0, 30, 100)
    cosine_scores(feats, i, j)
    assert scores._LAST_COSINE._value is not None
    del feats
    gc.collect()
    assert scores._LAST_COSINE._value is None
