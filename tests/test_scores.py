"""Pair scores against direct per-pair numpy formulas, block invariance and error messages."""

from __future__ import annotations

import numpy as np
import pytest

from analyze.scores import DISTANCES, cosine_stats, l2_normalize, pair_scores

N, D = 9, 6
rng = np.random.default_rng(0)
FEATS = rng.normal(size=(N, D)).astype(np.float32)
SIGMA = rng.uniform(0.2, 2.0, size=(N, D))
SCALE = rng.uniform(1.0, 60.0, size=N)
PI = rng.integers(0, N, size=40)
PJ = rng.integers(0, N, size=40)
PI[0] = PJ[0] = 4  # a self pair


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _hm(x: np.ndarray) -> float:
    return float(len(x) / np.sum(1.0 / np.asarray(x, float)))


def test_cosine_matches_formula_and_known_values() -> None:
    got = pair_scores("cosine", FEATS, PI, PJ)
    want = [_cos(FEATS[a], FEATS[b]) for a, b in zip(PI, PJ)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert got[0] == pytest.approx(1.0)
    x = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(pair_scores("cosine", x, [0, 0, 0], [1, 2, 3]), [0.0, -1.0, 0.0])


def test_euclidean_is_minus_squared_distance_of_raw_features() -> None:
    got = pair_scores("euc", FEATS, PI, PJ)
    want = [-float(np.sum((FEATS[a].astype(float) - FEATS[b]) ** 2)) for a, b in zip(PI, PJ)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(pair_scores("euclidean", FEATS, PI, PJ), got)
    assert pair_scores("euc", np.array([[0.0, 0.0], [3.0, 4.0]]), [0], [1])[0] == -25.0


@pytest.mark.parametrize("sigma", [SIGMA, SIGMA[:, :1], SIGMA[:, 0]])
def test_mls_matches_pfe_formula(sigma: np.ndarray) -> None:
    got = pair_scores("MLS", FEATS, PI, PJ, uncertainty=sigma)
    s2 = np.asarray(sigma, float).reshape(N, -1)
    want = []
    for a, b in zip(PI, PJ):
        mu1 = FEATS[a] / np.linalg.norm(FEATS[a].astype(float))
        mu2 = FEATS[b] / np.linalg.norm(FEATS[b].astype(float))
        s = np.broadcast_to(s2[a] + s2[b], (D,))
        want.append(-np.sum((mu1 - mu2) ** 2 / s + np.log(s)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_mls_known_value_without_constants() -> None:
    # identical unit means, sigma^2 = 0.5 each: the mutual variance is 1, so the score is exactly 0.
    x = np.array([[3.0, 4.0], [0.6, 0.8]])
    assert pair_scores("MLS", x, [0], [1], uncertainty=np.full((2, 2), 0.5))[0] == pytest.approx(0.0)


def _direct_weighted(name: str, bias: float) -> list[float]:
    p = DISTANCES.get(name).params
    source, sqrt, comb, flavour = p["weight_source"], p["sqrt"], p["weight"], p["cosine"]
    cos_all = [_cos(FEATS[a], FEATS[b]) for a, b in zip(PI, PJ)]
    mean, std = np.mean(cos_all), np.std(cos_all)
    out = []
    for (a, b), c in zip(zip(PI, PJ), cos_all):
        if flavour == "centered-cosine":
            c = (c - mean) / std
        elif flavour == "biased-cosine":
            c = c - bias
        if source == "scale":
            c1, c2 = SCALE[a], SCALE[b]
        else:
            c1, c2 = 1.0 / _hm(SIGMA[a]), 1.0 / _hm(SIGMA[b])
        if sqrt:
            c1, c2 = np.sqrt(c1), np.sqrt(c2)
        out.append(c * c1 * c2 if comb == "mul" else c * c1 * c2 / (c1 + c2))
    return out


WEIGHTED = [s.name for s in DISTANCES.specs() if "weight" in s.params]


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_cosines_match_formula(name: str) -> None:
    unc = SIGMA if DISTANCES.get(name).values == "sigma_sq" else SCALE
    got = pair_scores(name, FEATS, PI, PJ, uncertainty=unc, bias=0.26)
    np.testing.assert_allclose(got, _direct_weighted(name, 0.26), rtol=1e-10, atol=1e-12)


def test_centered_and_biased_cosine() -> None:
    cos = np.array([_cos(FEATS[a], FEATS[b]) for a, b in zip(PI, PJ)])
    np.testing.assert_allclose(
        pair_scores("centered-cosine", FEATS, PI, PJ), (cos - cos.mean()) / cos.std(), rtol=1e-10
    )
    np.testing.assert_allclose(pair_scores("biased-cosine", FEATS, PI, PJ, bias=0.3), cos - 0.3, rtol=1e-12)
    assert cosine_stats(FEATS, PI, PJ) == pytest.approx((cos.mean(), cos.std()))


@pytest.mark.parametrize("name", DISTANCES.names())
def test_blockwise_equals_one_shot(name: str) -> None:
    unc = SIGMA if DISTANCES.get(name).values == "sigma_sq" else SCALE
    one = pair_scores(name, FEATS, PI, PJ, uncertainty=unc, bias=0.1, block=10_000)
    for block in (1, 3, 7):
        np.testing.assert_allclose(pair_scores(name, FEATS, PI, PJ, uncertainty=unc, bias=0.1, block=block), one)


def test_centered_chunks_with_shared_center_equal_one_shot() -> None:
    center = cosine_stats(FEATS, PI, PJ)
    one = pair_scores("scale-mul-centered-cosine", FEATS, PI, PJ, uncertainty=SCALE)
    parts = [
        pair_scores("scale-mul-centered-cosine", FEATS, PI[s], PJ[s], uncertainty=SCALE, center=center)
        for s in (slice(0, 13), slice(13, 40))
    ]
    np.testing.assert_allclose(np.concatenate(parts), one, rtol=1e-12)


def test_zero_pairs_give_empty_scores() -> None:
    empty = np.array([], dtype=np.int64)
    assert pair_scores("cosine", FEATS, empty, empty).shape == (0,)


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.6, 0.8]])


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"unknown distance 'cosin'\. Did you mean 'cosine'.*Valid distances: cosine"):
        pair_scores("cosin", FEATS, PI, PJ)
    with pytest.raises(ValueError, match="needs bias="):
        pair_scores("biased-cosine", FEATS, PI, PJ)
    with pytest.raises(ValueError, match="needs uncertainty= PFE sigma_sq"):
        pair_scores("MLS", FEATS, PI, PJ)
    with pytest.raises(ValueError, match="one value per row"):
        pair_scores("scale-mul-cosine", FEATS, PI, PJ, uncertainty=SIGMA)
    with pytest.raises(ValueError, match=r"pair index j holds 9, outside the 9 rows"):
        pair_scores("cosine", FEATS, [0], [9])
    with pytest.raises(ValueError, match="differ in length"):
        pair_scores("cosine", FEATS, [0, 1], [1])
