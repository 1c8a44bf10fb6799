"""The roc shortcuts pinned against the plain paths: binary_counts' value-sort path against the argsort
construction, TAR@FAR read off shared counts against its own sorts, the DET thinned before the frame is built."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyze import curves
from analyze.det import det_points, det_table, eer
from analyze.experiments import log_spaced_index
from analyze.tarfar import tar_at_far

FARS = np.array([0.0, 1e-6, 1e-3, 0.01, 0.1, 0.25, 0.5, 0.999, 1.0])


def _cases():
    rng = np.random.default_rng(7)
    n = 2000
    cont = rng.standard_normal(n)
    lab = rng.random(n) < 0.1
    yield "continuous", cont + lab, lab
    yield "heavy ties", np.round(cont + lab, 1), lab
    yield "few values", rng.integers(0, 3, n).astype(np.float64), lab
    yield "all one score", np.full(50, 0.3), rng.random(50) < 0.5
    yield "single impostor", np.array([0.2]), np.array([False])
    yield "single genuine", np.array([0.2]), np.array([True])
    yield "no genuine", rng.standard_normal(30), np.zeros(30, bool)
    yield "no impostor", rng.standard_normal(30), np.ones(30, bool)
    yield (
        "genuine only above impostors",
        np.r_[np.full(5, 2.0), np.linspace(0, 1, 20)],
        np.r_[np.ones(5, bool), np.zeros(20, bool)],
    )
    yield (
        "signed zeros",
        np.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 1e-300, -1e-300]),
        np.array([1, 0, 0, 1, 0, 1, 1, 0], bool),
    )
    yield "extremes", np.array([1e308, -1e308, 5e-324, 0.0, 1e308]), np.array([1, 0, 1, 0, 0], bool)
    yield "float32 values", (cont + lab).astype(np.float32), lab


@pytest.mark.parametrize("name,scores,labels", list(_cases()), ids=[c[0] for c in _cases()])
def test_binary_counts_equals_argsort_path(name, scores, labels):
    got = curves.binary_counts(labels, scores)
    ref = curves._argsort_counts(labels, scores)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype == np.float64 or g.dtype == r.dtype
        assert np.array_equal(g, r)  # -0.0 == 0.0: a mixed-sign run's threshold may carry either sign


def test_binary_counts_integer_labels_and_nonfinite_fallback():
    scores = np.array([0.5, np.nan, 0.1, np.inf, 0.5, -np.inf])
    labels = np.array([1, 0, 1, 0, 0, 1])
    got = curves.binary_counts(labels, scores)
    ref = curves._argsort_counts(labels, scores)
    for g, r in zip(got, ref):
        assert np.array_equal(g, r, equal_nan=True)
    fin = np.array([0.5, 0.2, 0.5, 0.9])
    lab01 = np.array([1, 0, 0, 1])
    for g, r in zip(curves.binary_counts(lab01, fin), curves._argsort_counts(lab01, fin)):
        assert np.array_equal(g, r)


@pytest.mark.parametrize("convention", ["exact", "nearest"])
@pytest.mark.parametrize("name,scores,labels", list(_cases()), ids=[c[0] for c in _cases()])
def test_tar_at_far_from_shared_counts_equals_own_sort(name, scores, labels, convention):
    if labels.all():
        with pytest.raises(ValueError, match="no impostor"):
            tar_at_far(
                scores, labels, FARS, convention, allow_tiny_far=True, counts=curves.binary_counts(labels, scores)
            )
        return
    ref = tar_at_far(scores, labels, FARS, convention, allow_tiny_far=True)
    got = tar_at_far(scores, labels, FARS, convention, allow_tiny_far=True, counts=curves.binary_counts(labels, scores))
    for field in ("tar", "threshold", "far_achieved"):
        a, b = getattr(got, field), getattr(ref, field)
        assert a.dtype == b.dtype
        assert np.array_equal(a, b, equal_nan=True), field
    assert (got.n_genuine, got.n_impostor, got.convention) == (ref.n_genuine, ref.n_impostor, ref.convention)


def test_det_rows_equal_thinning_the_full_table():
    rng = np.random.default_rng(3)
    lab = rng.random(5000) < 0.2
    scores = np.round(rng.standard_normal(5000) + lab, 2)
    key = {"model": "m", "fusion": "media"}
    full = det_table(scores, lab, key)
    rows = log_spaced_index(full["fmr"].to_numpy())
    pd.testing.assert_frame_equal(det_table(scores, lab, key, rows=rows), full.iloc[rows].reset_index(drop=True))


def _eer_on_full_curve(scores, labels):
    """The EER as computed before the bisection: d = FNMR - FMR over every DET point, first d <= 0."""
    fmr, fnmr, thr = det_points(scores, labels)
    d = fnmr - fmr
    k = int(np.argmax(d <= 0))
    d0, d1 = d[k - 1], d[k]
    value = float(fmr[k - 1] + d0 / (d0 - d1) * (fmr[k] - fmr[k - 1]))
    near = k if abs(d1) < abs(d0) else k - 1
    return value, float(thr[near]), float(fmr[near]), float(fnmr[near])


@pytest.mark.parametrize("name,scores,labels", list(_cases()), ids=[c[0] for c in _cases()])
def test_eer_bisection_equals_full_curve(name, scores, labels):
    if labels.all() or not labels.any():
        with pytest.raises(ValueError, match="genuine and impostor"):
            eer(scores, labels)
        return
    r = eer(scores, labels, curves.binary_counts(labels, scores))
    assert (r.eer, r.threshold, r.fmr, r.fnmr) == _eer_on_full_curve(scores, labels)


def test_eer_bisection_on_crossings_at_both_ends():
    # the crossing at the first and at the last operating point, and exactly on a point (d = 0)
    for scores, labels in (
        (np.array([0.9, 0.1, 0.2, 0.3]), np.array([1, 0, 0, 0], bool)),
        (np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 1, 1, 0], bool)),
        (np.array([0.1, 0.9, 0.5, 0.4]), np.array([1, 1, 0, 0], bool)),
        (np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0], bool)),
    ):
        r = eer(scores, labels)
        assert (r.eer, r.threshold, r.fmr, r.fnmr) == _eer_on_full_curve(scores, labels)


def test_shared_counts_remember_their_roc_points_read_only():
    rng = np.random.default_rng(11)
    lab = rng.random(3000) < 0.2
    scores = np.round(rng.standard_normal(3000) + lab, 2)
    counts = curves.binary_counts(lab, scores)
    fps, tps, thr = counts  # still the plain 3-tuple
    first = curves.roc_curve_points(lab, scores, counts)
    again = curves.roc_curve_points(lab, scores, counts)
    assert all(a is b for a, b in zip(first, again))
    fresh = curves.roc_curve_points(lab, scores)
    assert all(np.array_equal(a, b) for a, b in zip(first, fresh))
    with pytest.raises(ValueError, match="read-only"):
        first[0][0] = 1.0
    plain = curves.roc_curve_points(lab, scores, (fps, tps, thr))  # a plain tuple: computed, not remembered
    assert all(np.array_equal(a, b) for a, b in zip(plain, fresh)) and plain[0].flags.writeable


def test_save_figure_writes_png_and_pdf(tmp_path):
    from analyze import figures

    fig, ax = figures.plt.subplots()
    ax.loglog([1e-6, 1e-3, 1.0], [1.0, 0.1, 1e-3])
    paths = figures.save_figure(fig, tmp_path, "det figure")
    assert [p.name for p in paths] == ["det_figure.png", "det_figure.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
