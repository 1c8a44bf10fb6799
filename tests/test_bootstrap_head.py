"""tar_at_far_interval's shortcuts pinned against the whole order: the head of the highest impostors (with its
fallback for replicates reaching below it), the unit-pair totals, the replicates run on threads."""

from __future__ import annotations

import numpy as np
import pytest

from analyze import bootstrap
from analyze.bootstrap import SortedPairs, _UnitPairTotals, pair_units, replicate_multiplicities, tar_at_far_interval


def _pairs(n: int, seed: int, n_subjects: int = 25, decimals: int = 1):
    """Scores with heavy ties (rounded), ~15 % genuine, subjects as units (some never drawn in a replicate)."""
    rng = np.random.default_rng(seed)
    lab = rng.random(n) < 0.15
    s = np.round(rng.standard_normal(n) + 1.5 * lab, decimals)
    units = pair_units(
        np.arange(n), np.arange(n, 2 * n), rng.integers(0, n_subjects, n), rng.integers(0, n_subjects, n)
    )
    return s, lab, units


def _whole_order(s, lab, units, fars, convention, n_boot, seed):
    sp = SortedPairs(s, lab)
    sp.bind(units)
    reps = [sp.tar_at_far_units(m, fars, convention)[0] for m in replicate_multiplicities(units.n_units, n_boot, seed)]
    return bootstrap.percentile_interval(np.stack(reps))


@pytest.mark.parametrize("convention", ["exact", "nearest"])
@pytest.mark.parametrize("head", [1, 7, 40, 150, 10_000])
def test_head_replicates_equal_whole_order_or_defer(convention, head):
    s, lab, units = _pairs(600, 1)
    fars = np.array([0.0, 0.005, 0.02, 0.1])
    whole = SortedPairs(s, lab)
    whole.bind(units)
    part = SortedPairs(s, lab, head=head)
    part.bind(units)
    assert part.complete == (head >= (~lab).sum())
    deferred = 0
    for m in replicate_multiplicities(units.n_units, 30, 4):
        want = whole.tar_at_far_units(m, fars, convention)
        got = part.tar_at_far_units(m, fars, convention)
        if got is None:
            deferred += 1
            continue
        for g, w in zip(got, want):
            assert np.array_equal(g, w, equal_nan=True)
    if head == 1:
        assert deferred == 30  # a single impostor never holds 2 % of the weight
    if head == 10_000 or (head == 150 and convention == "exact"):
        assert deferred == 0  # (nearest also wants 1024 distinct thresholds past the largest FAR: 150 is short)


@pytest.mark.parametrize("convention", ["exact", "nearest"])
@pytest.mark.parametrize("factor,margin", [(2.0, 4096), (1.0, 0), (1.0, 1024), (0.5, 0), (0.05, 0)])
def test_interval_identical_with_any_head(monkeypatch, convention, factor, margin):
    s, lab, units = _pairs(3000, 2, n_subjects=40)
    fars = [1e-3, 0.01, 0.05]
    monkeypatch.setattr(bootstrap, "HEAD_FACTOR", factor)
    monkeypatch.setattr(bootstrap, "HEAD_MARGIN", margin)
    got = tar_at_far_interval(s, lab, units, fars, convention, n_boot=25, seed=9)
    want = _whole_order(s, lab, units, np.array(fars), convention, 25, 9)
    for g, w in zip(got, want):
        assert np.array_equal(g, w, equal_nan=True)


def test_head_refuses_input_order_weights():
    s, lab, _ = _pairs(200, 3)
    with pytest.raises(ValueError, match="head"):
        SortedPairs(s, lab, head=3).tar_at_far(np.ones(200), np.array([0.1]))


@pytest.mark.parametrize("n_units", [1, 5, 60])
def test_unit_pair_totals_dense_and_sparse_equal_the_sum_over_pairs(monkeypatch, n_units):
    rng = np.random.default_rng(n_units)
    a, b = rng.integers(0, n_units, 500), rng.integers(0, n_units, 500)
    dense = _UnitPairTotals(a, b, n_units)
    monkeypatch.setattr(_UnitPairTotals, "DENSE_UNITS", 0)
    sparse = _UnitPairTotals(a, b, n_units)
    assert dense.dense and not sparse.dense
    for m in replicate_multiplicities(n_units, 5, 1):
        want = float(np.sum(m[a] * m[b]))
        assert dense.total(m) == sparse.total(m) == want
    empty = _UnitPairTotals(np.zeros(0, int), np.zeros(0, int), n_units)
    assert empty.total(np.ones(n_units)) == 0.0


@pytest.mark.parametrize("dense", [True, False])
def test_unit_pair_totals_less_some_pairs(monkeypatch, dense):
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 30, 800), rng.integers(0, 30, 800)
    minus = np.flatnonzero(rng.random(800) < 0.1)
    rest = np.setdiff1d(np.arange(800), minus)
    if not dense:
        monkeypatch.setattr(_UnitPairTotals, "DENSE_UNITS", 0)
    t = _UnitPairTotals(a, b, 30, minus=minus)
    assert t.dense == dense
    for m in replicate_multiplicities(30, 5, 2):
        assert t.total(m) == float(np.sum(m[a[rest]] * m[b[rest]]))


@pytest.mark.parametrize("case", ["subjects", "mixed", "ids only", "wide ids", "one pair"])
def test_pair_units_ranks_equal_np_unique(case):
    rng = np.random.default_rng(8)
    n = 1 if case == "one pair" else 500
    ia, ib = rng.integers(0, 40, n), rng.integers(0, 40, n)
    if case == "wide ids":
        ia, ib = ia * 10**9, ib * 10**9 + 7  # a span far wider than the keys: the np.unique path
    sa, sb = rng.integers(0, 25, n), rng.integers(0, 25, n)
    if case == "mixed":
        sa[rng.random(n) < 0.3] = -1
    if case in ("ids only", "wide ids"):
        sa[:], sb[:] = -1, -1
    u = pair_units(ia, ib, sa, sb)
    ka, kb = np.where(sa >= 0, sa, -1 - ia), np.where(sb >= 0, sb, -1 - ib)
    keys, inv = np.unique(np.r_[ka, kb], return_inverse=True)
    assert np.array_equal(u.a, inv[:n]) and np.array_equal(u.b, inv[n:]) and u.n_units == keys.size
    assert pair_units([], [], [], []).n_units == 0
