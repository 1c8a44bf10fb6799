"""The matrix-product path of cosine_scores equals the per-pair gather path."""

from __future__ import annotations

import numpy as np

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
