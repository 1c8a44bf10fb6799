"""roc_curve_points reproduces sklearn.metrics.roc_curve exactly, ties and degenerate cases included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from analyze.tarfar import roc_curve_points


@pytest.mark.parametrize("seed", range(6))
def test_equals_sklearn_roc_curve(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 3000))
    scores = rng.integers(0, 40, n).astype(np.float64) / 7 if seed % 2 else rng.standard_normal(n)
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    labels[0], labels[1] = True, False
    want = roc_curve(labels, scores)
    got = roc_curve_points(labels, scores)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_single_class_gives_nan_rates_like_sklearn():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    labels = np.array([True, True, True, True])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = roc_curve(labels, scores)
    got = roc_curve_points(labels, scores)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
