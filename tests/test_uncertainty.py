"""Pair-uncertainty combinations against their formulas, name parsing, modes and block invariance."""

from __future__ import annotations

import numpy as np
import pytest

from analyze.uncertainty import (
    as_uncertainty,
    combination_mode,
    harmonic_mean,
    image_scalar,
    pair_uncertainty,
    pfe_confidence,
)
from analyze.vocabulary import COMBINATIONS, DISTANCES, parse_metric

N, D = 8, 5
rng = np.random.default_rng(1)
FEATS = rng.normal(size=(N, D))
SIGMA = rng.uniform(0.3, 1.5, size=(N, D))
SCALE = rng.uniform(2.0, 40.0, size=N)
PI = rng.integers(0, N, size=30)
PJ = rng.integers(0, N, size=30)
LABELS = rng.random(30) < 0.5


def _hm(x: np.ndarray) -> float:
    x = np.asarray(x, float).ravel()
    return float(len(x) / np.sum(1.0 / x))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _direct(name: str, u: np.ndarray, a: int, b: int, center: float) -> float:
    u1, u2 = np.atleast_1d(u[a]).astype(float), np.atleast_1d(u[b]).astype(float)
    return {
        "mean": lambda: u1.sum() + u2.sum(),
        "squared-sum": lambda: u1.sum() ** 2 + u2.sum() ** 2,
        "mul": lambda: np.prod(u1) * np.prod(u2),
        "harmonic-sum": lambda: _hm(u1) + _hm(u2),
        "harmonic-mul": lambda: _hm(u1) * _hm(u2),
        "harmonic-harmonic": lambda: _hm(np.r_[u1, u2]),
        "squared-harmonic": lambda: _hm(np.r_[u1**2, u2**2]),
        "cosine-analytic": lambda: float(np.sum(u1 * u2 + FEATS[a] ** 2 * u2 + FEATS[b] ** 2 * u1)),
        "min": lambda: min(u1.sum(), u2.sum()),
        "max": lambda: max(u1.sum(), u2.sum()),
        "similarity": lambda: _cos(FEATS[a], FEATS[b]),
        "perfect": lambda: 0.0,  # checked separately
    }[name]()


COMBOS = [n for n in COMBINATIONS if n != "perfect"]


@pytest.mark.parametrize("values", [SCALE, SCALE[:, None], SIGMA], ids=["scalar", "column", "pfe"])
@pytest.mark.parametrize("name", COMBOS)
def test_combination_matches_formula(name: str, values: np.ndarray) -> None:
    got = pair_uncertainty(name, values, PI, PJ, features=FEATS)
    want = [_direct(name, values, a, b, 0.0) for a, b in zip(PI, PJ)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_perfect_is_label_signed_margin_around_mean_cosine() -> None:
    cos = np.array([_cos(FEATS[a], FEATS[b]) for a, b in zip(PI, PJ)])
    got = pair_uncertainty("perfect", SCALE, PI, PJ, features=FEATS, labels=LABELS)
    np.testing.assert_allclose(got, np.where(LABELS, 1.0, -1.0) * (cos - cos.mean()), rtol=1e-10, atol=1e-14)
    got_c = pair_uncertainty("perfect", SCALE, PI, PJ, features=FEATS, labels=LABELS, center=0.2)
    np.testing.assert_allclose(got_c, np.where(LABELS, 1.0, -1.0) * (cos - 0.2), rtol=1e-10)


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_blockwise_equals_one_shot(name: str) -> None:
    kw = {"features": FEATS, "labels": LABELS}
    one = pair_uncertainty(name, SIGMA, PI, PJ, block=1000, **kw)
    for block in (1, 4):
        np.testing.assert_allclose(pair_uncertainty(name, SIGMA, PI, PJ, block=block, **kw), one, rtol=1e-13)


def test_harmonic_reductions_known_values() -> None:
    assert harmonic_mean(np.array([1.0, 2.0, 4.0])) == pytest.approx(12 / 7)
    np.testing.assert_allclose(image_scalar(np.array([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0]])), [12 / 7, 3.0])
    np.testing.assert_allclose(image_scalar(np.array([[5.0], [6.0]])), [5.0, 6.0])
    np.testing.assert_allclose(pfe_confidence(np.array([[1.0, 2.0, 4.0]])), [7 / 12])


SCRIPT_METRICS = [
    "cosine_mean", "MLS_harmonic-sum", "cosine_harmonic-harmonic", "cosine_squared-sum",
    "cosine_mul", "cosine_harmonic-mul", "cosine_squared-harmonic", "cosine_cosine-analytic",
    "cosine_min", "cosine_similarity", "cosine_perfect", "MLS_mean",
    "scale-mul-biased-cosine_harmonic-harmonic", "pfe-sqrt-harmonic-biased-cosine_mean",
]  # fmt: skip


@pytest.mark.parametrize("text", SCRIPT_METRICS)
def test_parse_script_metric_strings(text: str) -> None:
    distance, unc = parse_metric(text)
    assert f"{distance}_{unc}" == text
    assert distance in DISTANCES and unc in COMBINATIONS


def test_parse_errors_list_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown uncertainty combination 'harmonic'.*Valid uncertainty "
                       r"combinations: mean, squared-sum"):  # fmt: skip
        parse_metric("cosine_harmonic")
    with pytest.raises(ValueError, match="unknown distance 'cos'"):
        parse_metric("cos_mean")
    with pytest.raises(ValueError, match="DISTANCE_UNCERTAINTY"):
        parse_metric("mean_cosine_mean")
    with pytest.raises(ValueError, match="needs features="):
        pair_uncertainty("similarity", SCALE, PI, PJ)
    with pytest.raises(ValueError, match="needs labels="):
        pair_uncertainty("perfect", SCALE, PI, PJ, features=FEATS)


def test_modes_and_sign_convention() -> None:
    assert combination_mode("mean", "confidence") == "confidence"
    assert combination_mode("harmonic-harmonic", "uncertainty") == "uncertainty"
    assert combination_mode("perfect", "uncertainty") == "confidence"
    np.testing.assert_array_equal(as_uncertainty(np.array([1.0, -2.0]), "confidence"), [-1.0, 2.0])
    np.testing.assert_array_equal(as_uncertainty(np.array([1.0, -2.0]), "uncertainty"), [1.0, -2.0])
    with pytest.raises(ValueError, match="mode must be one of"):
        as_uncertainty(np.array([1.0]), "quality")
