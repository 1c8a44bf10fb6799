"""EER, DET points and the long ROC table against brute force, sklearn and scipy, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from analyze.det import EER_RULE, det_points, det_table, eer, eer_table, roc_long_table


def tied(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = rng.random(n) < 0.4
    s = np.round(rng.normal(size=n) + 1.2 * lab, 1)  # rounding makes many ties across classes
    return s, lab


@pytest.mark.parametrize("seed", range(6))
def test_det_points_brute_force(seed):
    s, lab = tied(200, seed)
    fmr, fnmr, thr = det_points(s, lab)
    assert thr[0] == np.inf and fmr[0] == 0 and fnmr[0] == 1
    distinct = np.unique(s)[::-1]
    np.testing.assert_array_equal(thr[1:], distinct)
    for t, a, b in zip(distinct, fmr[1:], fnmr[1:]):
        assert a == np.mean(s[~lab] >= t)
        assert b == pytest.approx(1 - np.mean(s[lab] >= t), abs=1e-15)


@pytest.mark.parametrize("seed", range(8))
def test_eer_equals_brentq_on_full_roc(seed):
    s, lab = tied(150 + 37 * seed, seed)
    fpr, tpr, _ = roc_curve(lab, s, drop_intermediate=False)
    ref = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-14)
    r = eer(s, lab)
    assert r.eer == pytest.approx(ref, abs=1e-12)
    assert r.rule == EER_RULE
    fmr, fnmr, thr = det_points(s, lab)
    k = int(np.flatnonzero(thr == r.threshold)[0])
    assert (r.fmr, r.fnmr) == (fmr[k], fnmr[k])
    assert abs(fnmr[k] - fmr[k]) == np.min(np.abs(fnmr - fmr)[max(k - 1, 0) : k + 2])


def test_eer_known_answers():
    assert eer([0.9, 0.8, 0.1, 0.2], [True, True, False, False]).eer == 0.0  # separable
    assert eer([0.5] * 6, [True, False] * 3).eer == 0.5  # one tie group: (0, 1) to (1, 0)
    # genuine 0.4, 0.9; impostor 0.1, 0.6: at threshold 0.6 FMR 1/2, FNMR 1/2 exactly
    r = eer([0.4, 0.9, 0.1, 0.6], [True, True, False, False])
    assert (r.eer, r.threshold, r.fmr, r.fnmr) == (0.5, 0.6, 0.5, 0.5)
    with pytest.raises(ValueError, match="need genuine and impostor pairs, got 2 genuine and 0 impostor"):
        eer([0.1, 0.2], [True, True])


def test_roc_long_table_is_sklearn_roc_curve():
    s, lab = tied(300, 9)
    fpr, tpr, thr = roc_curve(lab, s)
    df = roc_long_table(s, lab, {"model": "m", "fusion": "none"})
    assert list(df.columns) == ["model", "fusion", "far", "tar", "threshold"]
    np.testing.assert_array_equal(df["far"], fpr)
    np.testing.assert_array_equal(df["tar"], tpr)
    np.testing.assert_array_equal(df["threshold"], thr)
    assert (df["model"] == "m").all()


def test_det_and_eer_tables():
    s, lab = tied(100, 3)
    det = det_table(s, lab, {"model": "m"})
    assert list(det.columns) == ["model", "fmr", "fnmr", "threshold"] and len(det) == len(np.unique(s)) + 1
    row = eer_table(s, lab, {"model": "m"}).iloc[0]
    assert row["eer"] == eer(s, lab).eer and row["eer_rule"] == EER_RULE
