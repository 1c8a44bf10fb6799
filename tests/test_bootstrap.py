"""Subject bootstrap: weighted metrics equal the unweighted ones on explicitly duplicated pair lists,
replicates are seeded, intervals are numpy percentiles of brute-force replicates."""

from __future__ import annotations

import numpy as np
import pytest

from analyze.accuracy import kfold_accuracy
from analyze.bootstrap import (
    SortedPairs,
    WeightedKFold,
    accuracy_interval,
    pair_units,
    percentile_interval,
    reject_interval,
    replicate_weights,
    tar_at_far_interval,
    weighted_reject_curve,
    weighted_tar_at_far,
)
from analyze.curves import auc
from analyze.reject import nearest_reject_curve, reject_curve
from analyze.tarfar import tar_at_far

FARS = np.array([0.0, 0.01, 0.05, 0.1, 0.3, 1.0])


def tied_pairs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    lab = rng.random(n) < 0.3
    s = np.round(rng.normal(size=n) + 1.5 * lab, 1)
    w = rng.integers(0, 4, n).astype(float)  # zeros drop pairs, 2 and 3 duplicate them
    return s, lab, w


@pytest.mark.parametrize("convention", ["exact", "nearest"])
@pytest.mark.parametrize("seed", range(6))
def test_weighted_tar_equals_duplicated_list(convention, seed):
    s, lab, w = tied_pairs(300, seed)
    rep = w.astype(int)
    ref = tar_at_far(np.repeat(s, rep), np.repeat(lab, rep), FARS, convention, allow_tiny_far=True)
    tar, thr, far = weighted_tar_at_far(s, lab, w, FARS, convention)
    np.testing.assert_array_equal(tar, ref.tar)
    np.testing.assert_array_equal(thr, ref.threshold)
    np.testing.assert_array_equal(far, ref.far_achieved)
    ones = tar_at_far(s, lab, FARS, convention, allow_tiny_far=True)
    np.testing.assert_array_equal(weighted_tar_at_far(s, lab, np.ones(s.size), FARS, convention)[0], ones.tar)


def test_weighted_tar_empty_class_is_nan():
    tar, thr, _ = weighted_tar_at_far([0.1, 0.2], [True, False], [1.0, 0.0], [0.1])
    assert np.isnan(tar).all() and np.isnan(thr).all()
    tar, _, _ = weighted_tar_at_far([0.1, 0.2], [True, False], [0.0, 1.0], [0.5])
    assert np.isnan(tar).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("convention", ["exact", "nearest"])
def test_weighted_reject_curve_equals_duplicated_list(seed, convention):
    s, lab, w = tied_pairs(200, seed)
    unc = np.round(np.random.default_rng(seed + 10).random(200), 1)
    rep = w.astype(int)
    fr = np.linspace(0, 0.6, 13)
    fars = np.array([0.01, 0.1, 0.5])
    s_r, lab_r, unc_r = np.repeat(s, rep), np.repeat(lab, rep), np.repeat(unc, rep)
    if convention == "exact":
        ref = reject_curve(s_r, lab_r, unc_r, fr, fars, allow_tiny_far=True)
    else:
        ref = nearest_reject_curve(s_r, lab_r, unc_r, fr, fars)
    ours = weighted_reject_curve(s, lab, unc, w, fr, fars, convention=convention)
    np.testing.assert_array_equal(ours, ref.tar)


@pytest.mark.parametrize(("n", "folds", "seed"), [(97, 10, 0), (60, 10, 1), (30, 1, 2)])
def test_weighted_kfold_ones_and_brute_force(n, folds, seed):
    rng = np.random.default_rng(seed)
    lab = rng.random(n) < 0.5
    d = np.round(rng.random(n) * 2 + 1.0 * ~lab, 2)
    wk = WeightedKFold(d, lab, folds)
    np.testing.assert_array_equal(wk.accuracy(np.ones(n)), kfold_accuracy(d, lab, folds).accuracy)
    w = rng.integers(0, 3, n).astype(float)
    got = wk.accuracy(w)
    thr = np.arange(0, 4, 0.01)
    idx = np.arange(n)
    for f, part in enumerate(np.array_split(idx, folds)):  # KFold's contiguous folds
        a, b = part[0], part[-1] + 1
        test = (idx >= a) & (idx < b)
        train = ~test if folds > 1 else test

        def acc(mask, t):
            pred = d < t
            tot = w[mask].sum()
            return np.nan if tot == 0 else (w[mask & pred & lab].sum() + w[mask & ~pred & ~lab].sum()) / tot

        train_acc = np.array([acc(train, t) for t in thr])
        expect = np.nan if np.isnan(train_acc).all() else acc(test, thr[int(np.nanargmax(train_acc))])
        np.testing.assert_equal(got[f], expect)


def test_pair_units_subjects_else_ids():
    u = pair_units([10, 11, 12], [13, 10, 14], subject_a=[1, 1, -1], subject_b=[2, 1, -1])
    assert u.n_units == 4 and u.kind == "subject, else template"
    assert u.a[0] == u.a[1] == u.b[1]  # subject 1 on both sides
    assert len({u.a[2], u.b[2], u.a[0], u.b[0]}) == 4  # ids 12, 14 are their own units, never subject 12/14
    assert pair_units([0, 2], [1, 3], id_kind="image").kind == "image"


def test_replicates_seeded_and_weights_are_products():
    units = pair_units(np.arange(50), np.arange(50, 100))
    a = list(replicate_weights(units, 3, seed=7))
    b = list(replicate_weights(units, 3, seed=7))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    rng = np.random.default_rng(7)
    m = np.bincount(rng.integers(0, units.n_units, units.n_units), minlength=units.n_units)
    np.testing.assert_array_equal(a[0], m[units.a] * m[units.b])
    with pytest.raises(ValueError, match="at least 1 replicate"):
        next(replicate_weights(units, 0, 0))


def test_tar_interval_is_percentile_of_brute_force_replicates():
    s, lab, _ = tied_pairs(400, 3)
    rng = np.random.default_rng(0)
    subj_a, subj_b = rng.integers(0, 30, 400), rng.integers(0, 30, 400)
    units = pair_units(np.arange(400), np.arange(400, 800), subj_a, subj_b)
    fars = [0.01, 0.1]
    lo, hi = tar_at_far_interval(s, lab, units, fars, n_boot=40, seed=5)
    reps = []
    for w in replicate_weights(units, 40, seed=5):
        rep = w.astype(int)
        reps.append(tar_at_far(np.repeat(s, rep), np.repeat(lab, rep), fars, allow_tiny_far=True).tar)
    np.testing.assert_allclose(lo, np.percentile(reps, 2.5, axis=0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(hi, np.percentile(reps, 97.5, axis=0), rtol=0, atol=1e-15)
    assert (lo <= hi).all()


def test_reject_and_accuracy_intervals_brute_force():
    s, lab, _ = tied_pairs(150, 4)
    unc = np.random.default_rng(1).random(150)
    units = pair_units(np.arange(150), np.arange(150, 300), np.arange(150) % 20, (np.arange(150) * 7) % 20)
    fr, fars = np.linspace(0, 0.5, 6), np.array([0.05, 0.2])
    tar_lo, tar_hi, auc_lo, auc_hi = reject_interval(s, lab, unc, units, fr, fars, n_boot=15, seed=2)
    tars, aucs = [], []
    for w in replicate_weights(units, 15, seed=2):
        rep = w.astype(int)
        rc = reject_curve(np.repeat(s, rep), np.repeat(lab, rep), np.repeat(unc, rep), fr, fars, allow_tiny_far=True)
        tars.append(rc.tar)
        aucs.append(rc.auc())
    lo, hi = percentile_interval(np.stack(tars))
    np.testing.assert_array_equal(tar_lo, lo)
    np.testing.assert_array_equal(tar_hi, hi)
    np.testing.assert_allclose(auc_lo, np.percentile(aucs, 2.5, axis=0), atol=1e-15)
    np.testing.assert_allclose(auc_hi, np.percentile(aucs, 97.5, axis=0), atol=1e-15)
    assert auc(fr, tars[0][:, 0]) == aucs[0][0]
    d = 2 - 2 * np.tanh(s)  # any distance
    a_lo, a_hi = accuracy_interval(d, lab, units, folds=10, n_boot=15, seed=2)
    wk = WeightedKFold(d, lab, 10)
    accs = [np.nanmean(wk.accuracy(w)) for w in replicate_weights(units, 15, seed=2)]
    np.testing.assert_allclose([a_lo, a_hi], np.percentile(accs, [2.5, 97.5]), rtol=0, atol=1e-15)


def test_sorted_pairs_once_many_weightings():
    s, lab, w = tied_pairs(100, 8)
    sp = SortedPairs(s, lab)
    for k in range(3):
        ww = np.roll(w, k)
        np.testing.assert_array_equal(sp.tar_at_far(ww, FARS)[0], weighted_tar_at_far(s, lab, ww, FARS)[0])


@pytest.mark.parametrize("seed", range(3))
def test_nearest_head_of_curve_only_equals_duplicated_list(seed):
    # small FARs: only the curve's head is thinned; it must give the full curve's answer
    rng = np.random.default_rng(seed)
    n = 20000
    lab = rng.random(n) < 0.05
    s = np.round(rng.normal(size=n) + 2 * lab, 2 + seed % 2)
    w = rng.integers(0, 3, n).astype(float)
    fars = np.array([1e-4, 1e-3, 3e-3, 1e-2])
    rep = w.astype(int)
    ref = tar_at_far(np.repeat(s, rep), np.repeat(lab, rep), fars, "nearest", allow_tiny_far=True)
    tar, thr, far = weighted_tar_at_far(s, lab, w, fars, "nearest")
    np.testing.assert_array_equal(tar, ref.tar)
    np.testing.assert_array_equal(thr, ref.threshold)
    np.testing.assert_array_equal(far, ref.far_achieved)
