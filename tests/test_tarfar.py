"""TAR@FAR against hand-computed answers, a plain transcription of the paper's rule, and sklearn's ROC."""

import numpy as np
import pytest
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve

from analyze.tarfar import auc, far_ranks, k0_threshold, smallest_far, tar_at_far

IMPOSTORS = [0.9, 0.8, 0.8, 0.5, 0.3, 0.1, 0.0, -0.2, -0.4, -0.5]
GENUINE = [0.95, 0.85, 0.8, 0.7, 0.2]


def known_pairs():
    """Ten impostors (a tie at 0.8) and five genuine pairs, shuffled together."""
    s = np.array(IMPOSTORS + GENUINE)
    lab = np.array([False] * 10 + [True] * 5)
    perm = np.random.default_rng(3).permutation(s.size)
    return s[perm], lab[perm]


def plain_exact(s, lab, fars):
    """The paper's find_thresholds_by_FAR + ROC, written out one FAR at a time."""
    neg = sorted(s[~lab].tolist(), reverse=True)
    tars, thrs, achieved = [], [], []
    for far in fars:
        k = int(np.round(len(neg) * far))
        thr = neg[0] + 1e-8 if k == 0 else neg[k - 1]
        accept = s >= thr
        tars.append(np.mean(accept[lab]) if lab.any() else np.nan)
        achieved.append(np.mean(accept[~lab]))
        thrs.append(thr)
    return np.array(tars), np.array(thrs), np.array(achieved)


def plain_nearest(s, lab, fars):
    """insightface ijb_11.py table: flipped ROC, min over (|fpr - x|, index) tuples."""
    fpr, tpr, thr = roc_curve(lab, s)
    fpr, tpr, thr = np.flipud(fpr), np.flipud(tpr), np.flipud(thr)
    out = []
    for x in fars:
        _, i = min(zip(abs(fpr - x), range(len(fpr))))
        out.append((tpr[i], thr[i], fpr[i]))
    return [np.array(c) for c in zip(*out)]


def test_known_answer_exact():
    s, lab = known_pairs()
    # k = round(10 * far): 0.1 -> 1, 0.2 -> 2, 0.25 -> 2 (half to even), 0.35 -> 4 (half to even), 1 -> 10
    res = tar_at_far(s, lab, [0.1, 0.2, 0.25, 0.35, 1.0])
    np.testing.assert_array_equal(res.threshold, [0.9, 0.8, 0.8, 0.5, -0.5])
    np.testing.assert_array_equal(res.tar, [1 / 5, 3 / 5, 3 / 5, 4 / 5, 1.0])
    # the tie at 0.8 accepts three impostors where two were asked for
    np.testing.assert_array_equal(res.far_achieved, [0.1, 0.3, 0.3, 0.4, 1.0])
    assert (res.n_genuine, res.n_impostor, res.convention) == (5, 10, "exact")


def test_k0_threshold_is_just_above_highest_impostor():
    s, lab = known_pairs()
    res = tar_at_far(s, lab, [0.0, 0.05], allow_tiny_far=True)  # 10 * 0.05 = 0.5 -> 0
    np.testing.assert_array_equal(res.threshold, [0.9 + 1e-8] * 2)
    np.testing.assert_array_equal(res.tar, [0.2, 0.2])
    np.testing.assert_array_equal(res.far_achieved, [0.0, 0.0])
    # a genuine score within 1e-8 above the top impostor is rejected, as in the paper
    s2 = np.append(s, 0.9 + 5e-9)
    lab2 = np.append(lab, True)
    assert tar_at_far(s2, lab2, [0.0], allow_tiny_far=True).tar[0] == 1 / 6
    # where +1e-8 is lost to rounding the threshold still lies above the highest impostor
    assert k0_threshold(1e9) > 1e9


def test_far_below_resolution_is_an_error():
    s, lab = known_pairs()
    with pytest.raises(ValueError, match=r"smallest meaningful FAR 1/n_impostors = 0\.1 \(n_impostors = 10\)"):
        tar_at_far(s, lab, [0.1, 0.05])
    assert smallest_far(10) == 0.1
    tar_at_far(s, lab, [0.1])  # exactly 1/n is allowed


def test_bad_inputs():
    s, lab = known_pairs()
    with pytest.raises(ValueError, match="non-finite"):
        tar_at_far(np.where(np.arange(s.size) == 4, np.nan, s), lab, [0.1])
    with pytest.raises(ValueError, match="no impostor"):
        tar_at_far(s[lab], lab[lab], [0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tar_at_far(s, lab, [1.5])
    with pytest.raises(ValueError, match="labels shape"):
        tar_at_far(s, lab[:-1], [0.1])
    with pytest.raises(ValueError, match="convention"):
        tar_at_far(s, lab, [0.1], convention="closest")


def test_no_genuine_gives_nan_tar():
    s, lab = known_pairs()
    for conv in ("exact", "nearest"):
        res = tar_at_far(s[~lab], lab[~lab], [0.1, 0.5], convention=conv)
        assert np.isnan(res.tar).all()
        assert np.isfinite(res.far_achieved).all()


@pytest.mark.parametrize("seed", range(6))
def test_exact_matches_plain_transcription_with_ties(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 400))
    s = rng.integers(-4, 5, m).astype(np.float32)  # heavy ties, float32 input
    lab = rng.random(m) < rng.choice([0.1, 0.5, 0.9])
    lab[0], lab[1] = False, True
    n_imp = int((~lab).sum())
    fars = np.array([0.0, 1 / n_imp, 0.001, 0.01, 0.1, 0.3, 0.5, 0.77, 1.0])
    res = tar_at_far(s, lab, fars, allow_tiny_far=True)
    tar, thr, ach = plain_exact(s.astype(np.float64), lab, fars)
    np.testing.assert_array_equal(res.tar, tar)
    np.testing.assert_array_equal(res.threshold, thr)
    np.testing.assert_array_equal(res.far_achieved, ach)


@pytest.mark.parametrize("seed", range(6))
def test_nearest_matches_insightface_table(seed):
    rng = np.random.default_rng(100 + seed)
    m = int(rng.integers(5, 500))
    s = np.round(rng.standard_normal(m), int(rng.integers(0, 3)))  # ties at several granularities
    lab = rng.random(m) < 0.3
    lab[0], lab[1] = False, True
    fars = np.array([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 0.5, 1.0])
    res = tar_at_far(s, lab, fars, convention="nearest", allow_tiny_far=True)
    tar, thr, fpr = plain_nearest(s, lab, fars)
    np.testing.assert_array_equal(res.tar, tar)
    np.testing.assert_array_equal(res.threshold, thr)
    np.testing.assert_array_equal(res.far_achieved, fpr)
    assert res.convention == "nearest"


def test_nearest_tie_prefers_larger_fpr():
    # sklearn ROC points: (0, 0), (.25, 0), (.5, 0), (.5, 1), (1, 1); target .375 is equidistant
    # from fpr .25 and .5: insightface's flipped scan takes fpr .5, and there the larger TPR
    s = np.array([0.9, 0.7, 0.5, 0.3, 0.6])
    lab = np.array([False, False, False, False, True])
    res = tar_at_far(s, lab, [0.375], convention="nearest")
    assert res.far_achieved[0] == 0.5
    assert res.tar[0] == 1.0
    assert res.threshold[0] == 0.6


def test_far_ranks_round_half_to_even():
    np.testing.assert_array_equal(far_ranks(10, np.array([0.05, 0.15, 0.25, 0.35])), [0, 2, 2, 4])


def test_auc_is_sklearn_auc():
    x = np.linspace(0, 0.5, 7)
    y = np.array([0.5, 0.55, 0.6, 0.62, 0.7, 0.71, 0.9])
    assert auc(x, y) == sk_auc(x, y)
    assert auc(x[::-1], y[::-1]) == sk_auc(x[::-1], y[::-1])
    assert np.isnan(auc(x, np.where(x > 0.3, np.nan, y)))
    assert auc([0, 1], [1, 1]) == 1.0
