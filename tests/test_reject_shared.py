"""The shared-sort reject curves (analyze.reject.ScoreClasses, analyze.order_kernels) against the plain path.

Every shortcut is pinned bit for bit against `_plain_curve` on the plain stable order (np.argsort of the
uncertainty, of the oracle margin reference_uncertainty, of the random uniforms): heavy ties, genuine and
impostor scores tied, margins that score - t rounds together, +-0.0, single-class prefixes, fractions 0 and 1,
n = 1 and 2.
"""

from __future__ import annotations

import numpy as np
import pytest

from analyze.reject import (
    ScoreClasses,
    _plain_curve,
    kept_counts,
    reference_uncertainty,
    reject_curve,
    stable_argsort,
)
from analyze.tarfar import check_scores_labels, tar_at_far

FIELDS = ("tar", "threshold", "far_achieved", "kept_pairs", "kept_genuine", "kept_impostor", "fractions", "fars")


def assert_same(a, b) -> None:
    """Bit-identical curves: same dtype and bytes in every field (so -0.0 differs from 0.0, NaN equals NaN)."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.tobytes() == y.tobytes(), name
    assert a.order == b.order


def as64(s, lab):
    return check_scores_labels(s, lab)


def plain(s, lab, u, r, f, order="uncertainty"):
    perm = np.argsort(-u if order == "confidence" else u + 0.0, kind="stable")
    return _plain_curve(s, lab, perm, r, f, kept_counts(s.size, r), order, True)


def cases(seed: int, count: int):
    """Small score vectors: few distinct values (ties within and across classes), continuous ones, values whose
    differences to a threshold round together, and zeros of one sign."""
    rng = np.random.default_rng(seed)
    pool = np.array([-1.0, -0.5, 0.1, 0.1 + 2**-56, 0.1 + 2**-55, 0.25, 0.3, 0.5, 1.0])
    for trial in range(count):
        n = int(rng.integers(1, 50))
        kind = trial % 4
        if kind == 0:
            s = rng.choice(pool, size=n)
        elif kind == 1:
            s = rng.normal(size=n)
        elif kind == 2:
            s = rng.choice([0.0, 0.5, 1e-17, 2e-17, 1.0], size=n)
        else:
            s = np.round(rng.normal(size=n), 1).astype(np.float32)
        lab = rng.random(n) < rng.random()
        lab[rng.integers(n)] = False  # at least one impostor
        u = rng.choice([0.0, -0.0, 1.0, 2.0], size=n) if trial % 3 else rng.normal(size=n)
        r = np.r_[0.0, np.sort(rng.random(4)), 1.0] if trial % 2 else np.linspace(0, 0.5, 6)
        yield s, lab, u, r


FARS = np.array([0.0, 1e-3, 0.1, 0.5, 1.0])


@pytest.mark.parametrize("order", ["uncertainty", "confidence"])
def test_uncertainty_curves_equal_the_plain_path(order):
    for s, lab, u, r in cases(1, 200):
        sc = ScoreClasses(s, lab)
        assert_same(sc.reject_curve(u, r, FARS, order, True), plain(*as64(s, lab), u, r, FARS, order))
        assert_same(reject_curve(s, lab, u, r, FARS, order, True), plain(*as64(s, lab), u, r, FARS, order))


def test_oracle_curves_equal_the_plain_stable_sort_of_the_margin():
    for s, lab, _, r in cases(2, 100):
        sc = ScoreClasses(s, lab)
        thresholds = tar_at_far(*as64(s, lab), FARS, "exact", allow_tiny_far=True).threshold
        assert np.array_equal(sc.thresholds(FARS), thresholds)
        for t in [*thresholds, 0.1, 1.0, 0.3, -2.0]:  # 1.0: 1e-17 - 1 and 2e-17 - 1 round together
            margin = reference_uncertainty(*as64(s, lab), "oracle", t)
            for far in (FARS[1:3], FARS):
                assert_same(sc.oracle_curve(t, r, far, True), plain(*as64(s, lab), margin, r, far))


def test_oracle_margins_rounded_together_across_classes_go_by_index():
    # every score - 1.0 rounds to -1.0: one run of equal margins mixing both classes and distinct scores
    s = np.array([2e-17, 1e-17, 3e-17, 1e-17, 0.0, 4e-17, 2e-17, 5e-17])
    lab = np.array([True, False, False, True, False, True, False, False])
    sc = ScoreClasses(s, lab)
    r = np.linspace(0, 1, 9)
    margin = reference_uncertainty(s, lab, "oracle", 1.0)
    assert np.unique(np.abs(margin)).size == 1
    assert_same(sc.oracle_curve(1.0, r, FARS, True), plain(s, lab, margin, r, FARS))


def test_random_curve_equals_the_plain_path_and_reuses_its_cached_order():
    cache: dict = {}
    for s, lab, _, r in cases(3, 60):
        sc = ScoreClasses(s, lab)
        ref = plain(*as64(s, lab), reference_uncertainty(*as64(s, lab), "random"), r, FARS)
        assert_same(sc.random_curve(r, FARS, 0, True, cache), ref)
        assert_same(sc.random_curve(r, FARS, 0, True, cache), ref)
    assert cache  # one entry per (n, seed, kept sizes)
    s = np.linspace(0, 1, 30)
    lab = np.arange(30) % 3 == 0
    sc = ScoreClasses(s, lab)
    r = np.linspace(0, 0.5, 5)
    ref = plain(s, lab, reference_uncertainty(s, lab, "random", seed=7), r, FARS)
    assert_same(sc.random_curve(r, FARS, 7, True, cache), ref)


def test_single_class_prefixes_and_tiny_inputs():
    s = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.7])
    lab = np.array([True, True, False, False, False, True])
    r = np.array([0.0, 0.2, 0.5, 0.6, 0.9, 1.0])
    for u in (np.where(lab, 1.0, 0.0), np.where(lab, 0.0, 1.0)):  # impostors first, then genuine first
        assert_same(ScoreClasses(s, lab).reject_curve(u, r, FARS, "uncertainty", True), plain(s, lab, u, r, FARS))
    for n_pairs, labels in ((1, [False]), (2, [False, True]), (2, [False, False]), (2, [True, False])):
        s2, lab2 = np.linspace(0.2, 0.4, n_pairs), np.array(labels)
        u2 = np.zeros(n_pairs)
        sc = ScoreClasses(s2, lab2)
        assert_same(sc.reject_curve(u2, r, FARS, "uncertainty", True), plain(s2, lab2, u2, r, FARS))
        for t in sc.thresholds(FARS):
            margin = reference_uncertainty(s2, lab2, "oracle", t)
            assert_same(sc.oracle_curve(t, r, FARS, True), plain(s2, lab2, margin, r, FARS))


def test_zero_signs():
    # one sign of zero: the shared path; both signs among impostors: the plain path (the k-th largest's sign
    # follows the kept order's ties there), so both match the plain curve bit for bit
    r = np.linspace(0, 0.8, 5)
    for zeros in ([0.0, 0.0, 0.0], [-0.0, -0.0, -0.0], [0.0, -0.0, 0.0]):
        s = np.array([*zeros, 0.5, -0.0, 0.2])
        lab = np.array([False, False, False, True, True, False])
        u = np.array([0.0, 1.0, -0.0, 1.0, 0.0, 2.0])
        sc = ScoreClasses(s, lab)
        assert sc.mixed_zeros == (len({np.signbit(z) for z in zeros}) == 2)
        assert_same(sc.reject_curve(u, r, FARS, "uncertainty", True), plain(s, lab, u, r, FARS))
        for t in [0.0, -0.0, *sc.thresholds(FARS)]:
            margin = reference_uncertainty(s, lab, "oracle", t)
            assert_same(sc.oracle_curve(t, r, FARS, True), plain(s, lab, margin, r, FARS))


def test_many_tied_zeros_of_both_signs_take_the_plain_path():
    rng = np.random.default_rng(5)
    s = rng.choice([0.0, -0.0, 0.5, -0.5], size=200)
    lab = rng.random(200) < 0.3
    u = rng.choice([0.0, 1.0], size=200)
    r = np.linspace(0, 0.9, 7)
    sc = ScoreClasses(s, lab)
    assert sc.mixed_zeros
    assert_same(sc.reject_curve(u, r, FARS, "uncertainty", True), plain(s, lab, u, r, FARS))
    s = np.abs(s)  # one sign left: the shared path, zeros' signs kept
    sc = ScoreClasses(s, lab)
    assert not sc.mixed_zeros
    assert_same(sc.reject_curve(u, r, FARS, "uncertainty", True), plain(s, lab, u, r, FARS))
    for t in sc.thresholds(FARS):
        assert_same(
            sc.oracle_curve(t, r, FARS, True), plain(s, lab, reference_uncertainty(s, lab, "oracle", t), r, FARS)
        )


def test_errors_as_before():
    sc = ScoreClasses(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="no impostor pairs"):
        sc.reject_curve(np.zeros(2), [0.0], [0.1])
    with pytest.raises(ValueError, match="no impostor pairs"):
        sc.oracle_curve(0.1, [0.0], [0.1])
    sc = ScoreClasses(np.array([0.1, 0.2]), np.array([True, False]))
    with pytest.raises(ValueError, match="does not match"):
        sc.reject_curve(np.zeros(3), [0.0], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        sc.reject_curve(np.array([np.nan, 0.0]), [0.0], [0.1])
    with pytest.raises(ValueError, match="below the smallest meaningful FAR"):
        sc.reject_curve(np.zeros(2), [0.0], [0.1])


@pytest.mark.parametrize("descending", [False, True])
def test_stable_argsort_equals_numpy_stable(descending):
    rng = np.random.default_rng(4)
    base = 1.0 + rng.integers(0, 6, 3000) * 2.0**-50  # same top bits, distinct low bits: runs re-sorted
    samples = [
        np.zeros(0),
        np.array([1.5]),
        np.array([-0.0, 0.0]),
        rng.normal(size=3000),
        rng.normal(size=3000).astype(np.float32),
        rng.choice([0.0, -0.0, 1.0, -np.inf, np.inf], size=500),
        base,
        -base,
        rng.integers(-5, 5, 400),
        np.round(rng.normal(size=3000), 2),
    ]
    for v in samples:
        ref = np.argsort(-v if descending else v, kind="stable")
        assert np.array_equal(stable_argsort(v, descending), ref)
