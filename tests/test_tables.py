"""analyze.tables (one method label, one FAR pivot) and reject.py's one result shape for every reject-like curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyze.reject import REJECT_METHODS, nearest_reject_curve, reject_result
from analyze.tables import far_pivot, method_label, method_labels
from analyze.tarfar import tar_at_far


def test_method_label_styles():
    assert method_label("pfe", "MLS", "harmonic-sum", "PFE") == "pfe: MLS_harmonic-sum [fusion PFE]"
    assert method_label("pfe", "MLS", "harmonic-sum", "PFE", "report") == "pfe: MLS_harmonic-sum [PFE]"
    assert method_label("pfe", "MLS", "harmonic-sum", "PFE", "terminal") == "pfe PFE MLS_harmonic-sum"
    assert method_label("sf", "cosine", "mean", "none", "terminal") == "sf cosine_mean"
    assert method_label("sf", "cosine", "mean", np.nan, "report") == "sf: cosine_mean"
    with pytest.raises(ValueError, match="label style"):
        method_label("a", "b", style="fancy")


def test_far_pivot_keeps_first_appearance_order():
    df = pd.DataFrame({"model": ["b", "b", "a", "a"], "far": [0.1, 1e-4, 0.1, 1e-4], "tar": [0.9, 0.5, 0.8, 0.4]})
    df["distance"], df["uncertainty"], df["fusion"] = "cosine", "mean", "none"
    table = far_pivot(df.assign(method=method_labels(df, "report")), "method", "tar")
    assert list(table.index) == ["b: cosine_mean", "a: cosine_mean"]
    assert sorted(table.columns) == ["FAR=0.0001", "FAR=0.1"] and table.loc["a: cosine_mean", "FAR=0.1"] == 0.8


def _data(n=60, seed=3):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    scores = np.round(rng.normal(size=n) + labels, 1)  # ties
    unc = np.round(rng.random(n), 1)  # tied uncertainties
    return scores, labels, unc


def test_nearest_curve_is_tar_at_far_on_each_kept_prefix():
    scores, labels, unc = _data()
    fractions, fars = np.array([0.0, 0.3, 0.6, 0.99]), np.array([0.05, 0.2])
    curve = nearest_reject_curve(scores, labels, unc, fractions, fars)
    order = np.argsort(unc, kind="stable")
    for row, r in enumerate(fractions):
        n = int(len(scores) * (1 - r))
        s, lab = scores[order][:n], labels[order][:n]
        assert curve.kept_pairs[row] == n and curve.kept_genuine[row] == lab.sum()
        if n == 0 or lab.all():
            assert np.isnan(curve.tar[row]).all()
            continue
        np.testing.assert_array_equal(curve.tar[row], tar_at_far(s, lab, fars, "nearest", allow_tiny_far=True).tar)


def test_every_reject_method_has_one_column_shape():
    scores, labels, unc = _data()
    shapes = {
        key: reject_result(scores, labels, unc, [0.0, 0.25, 0.5], [0.1, 0.3], *key).columns() for key in REJECT_METHODS
    }
    keys = {tuple(cols) for cols in shapes.values()}
    assert len(keys) == 1 and "discarded_fraction" in next(iter(keys))
    assert all(len(c["tar"]) == 6 for c in shapes.values())
    with pytest.raises(ValueError, match="no reject curve for threshold mode 'fixed' with the 'nearest'"):
        reject_result(scores, labels, unc, [0.0], [0.1], "fixed", "nearest")
