"""analyze.curves: one counting primitive under every ROC, one auc (whole or partial) under every area."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve

import analyze.experiments
import analyze.figures
import analyze.reject
import analyze.tarfar
from analyze import curves


def test_binary_counts_known_answer():
    scores = np.array([0.9, 0.1, 0.5, 0.5, 0.7])
    labels = np.array([True, False, True, False, False])
    fps, tps, thr = curves.binary_counts(labels, scores)
    np.testing.assert_array_equal(thr, [0.9, 0.7, 0.5, 0.1])
    np.testing.assert_array_equal(tps, [1, 1, 2, 2])
    np.testing.assert_array_equal(fps, [0, 1, 2, 3])


def test_every_module_uses_the_one_auc_and_roc():
    assert analyze.tarfar.auc is curves.auc and analyze.reject.auc is curves.auc
    assert analyze.experiments.auc is curves.auc and analyze.figures.auc is curves.auc
    assert analyze.tarfar.roc_curve_points is curves.roc_curve_points
    assert analyze.experiments.roc_curve_points is curves.roc_curve_points


def test_whole_auc_is_sklearn_auc_bit_for_bit():
    rng = np.random.default_rng(3)
    x = np.sort(rng.random(50))
    y = rng.random(50)
    assert curves.auc(x, y) == sk_auc(x, y)
    assert curves.auc(x[::-1], y[::-1]) == sk_auc(x[::-1], y[::-1])
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        curves.auc([0, 1, 0.5], [1, 1, 1])
    with pytest.raises(ValueError, match="length >= 2"):
        curves.auc([0.5], [1.0])


def test_partial_auc_interpolates_at_the_limit():
    # y = 1 - 2x on [0, 0.5]: area up to 0.25 = 0.25 - 0.0625
    assert curves.auc([0, 0.5, 1], [1, 0, 0], limit=0.25) == pytest.approx(0.1875)
    assert curves.auc([0, 0.5, 1], [1, 0, 0], limit=0.25) == analyze.reject.partial_auc([0, 0.5, 1], [1, 0, 0], 0.25)
    with pytest.raises(ValueError, match="non-decreasing"):
        curves.auc([0.5, 0], [1, 0], limit=0.2)


def test_legend_auc_equals_the_auc_table():
    x = np.linspace(0, 0.5, 7)
    y = np.array([0.5, 0.55, 0.6, 0.62, 0.7, 0.71, 0.8])
    perm = np.random.default_rng(0).permutation(7)
    assert analyze.figures._auc(x[perm], y[perm]) == curves.auc(x, y)
    assert np.isnan(analyze.figures._auc(x[:1], y[:1]))


def test_roc_points_thin_sklearns_roc_curve():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal(2000)
    labels = rng.random(2000) < 0.2
    fpr, tpr, _ = roc_curve(labels, scores)
    got_fpr, got_tpr = analyze.experiments.roc_points(scores, labels)
    grid = np.unique(np.r_[0.0, np.logspace(-7, 0, 400)])
    idx = np.unique(np.maximum(np.minimum(np.searchsorted(fpr, grid, side="right") - 1, len(fpr) - 1), 0))
    np.testing.assert_array_equal(got_fpr, fpr[idx])
    np.testing.assert_array_equal(got_tpr, tpr[idx])
