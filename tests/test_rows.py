"""analyze.rows: the per-row primitives every analyze module shares (one definition each)."""

from __future__ import annotations

import numpy as np
import pytest

import analyze.fusion
import analyze.scores
import analyze.uncertainty
from analyze import rows
from analyze.reject import check_fractions
from analyze.tarfar import check_fars


def test_one_definition_shared_by_every_module():
    assert analyze.scores.l2_normalize is rows.l2_normalize is analyze.fusion.l2_normalize
    assert analyze.scores.check_pairs is rows.check_pairs is analyze.uncertainty.check_pairs
    for name in ("harmonic_mean", "image_scalar", "pfe_confidence"):
        assert getattr(analyze.uncertainty, name) is getattr(rows, name)


def test_pfe_confidence_is_one_over_harmonic_mean_of_sigma_sq():
    sigma_sq = np.array([[1.0, 4.0], [2.0, 2.0]])
    # hm([1, 4]) = 1 / mean([1, 0.25]) = 1.6; hm([2, 2]) = 2
    np.testing.assert_allclose(rows.pfe_confidence(sigma_sq), [1 / 1.6, 0.5])
    np.testing.assert_array_equal(rows.image_scalar(np.array([[3.0], [5.0]])), [3.0, 5.0])


def test_l2_normalize_keeps_zero_rows_zero():
    out = rows.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_array_equal(out, [[0.6, 0.8], [0.0, 0.0]])


def test_check_pairs_names_the_bad_index():
    with pytest.raises(ValueError, match="pair index j holds 5, outside the 3 rows of features"):
        rows.check_pairs(np.array([0, 1]), np.array([2, 5]), 3)


def test_unit_interval_validator_and_its_two_users():
    np.testing.assert_array_equal(rows.check_unit_interval(0.5, "x"), [0.5])
    with pytest.raises(ValueError, match=r"^fars must be a non-empty 1-D sequence, got shape \(0,\)$"):
        check_fars([])
    with pytest.raises(ValueError, match=r"^every FAR must lie in \[0, 1\], got \[0.1, 2.0\]$"):
        check_fars([0.1, 2.0])
    with pytest.raises(ValueError, match=r"^every value of fractions must lie in \[0, 1\]$"):
        check_fractions([np.nan])
    with pytest.raises(ValueError, match=r"^discarded must be a non-empty 1-D sequence"):
        check_fractions(np.zeros((2, 2)), what="discarded")
