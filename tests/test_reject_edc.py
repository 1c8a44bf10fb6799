"""ISO/IEC 29794-1:2024 EDC in `reject --threshold fixed`: the ideal curve and the partial area minus it, the
oracle and random reference curves (here and with recomputed thresholds), against brute force with ties."""

from __future__ import annotations

import re

import matplotlib.pyplot
import numpy as np
import pandas as pd
import pytest
from analysis_fixture import build_store

from analyze import commands
from analyze.commands import RejectOptions
from analyze.curves import auc
from analyze.figures import reject_comparison_figures, reject_curve_figures
from analyze.reject import fixed_threshold_edc, ideal_edc_fnmr, reference_uncertainty
from analyze.tarfar import tar_at_far

FRACTIONS = np.linspace(0, 0.6, 13)


def tied(seed: int, n: int = 120):
    """Integer scores and qualities: ties everywhere."""
    rng = np.random.default_rng(seed)
    lab = rng.random(n) < 0.35
    lab[:2] = [True, False]
    s = rng.integers(-3, 4, n).astype(np.float64) + lab
    q = rng.integers(0, 4, n).astype(np.float64)
    return s, lab, q


def brute_ideal(s, lab, t, discarded):
    """Discard false non-matches first (then the other pairs, impostors before genuine), d n pairs in all."""
    n = s.size
    fnm = lab & (s < t)
    order = np.r_[np.flatnonzero(fnm), np.flatnonzero(~lab), np.flatnonzero(lab & ~fnm)]
    out = []
    for d in discarded:
        kept = np.ones(n, bool)
        kept[order[: int(round(d * n))]] = False
        g = kept & lab
        out.append(np.mean(s[g] < t) if g.any() else np.nan)
    return np.array(out)


def brute_edc(s, lab, q, t, fractions):
    """The EDC by its definition: discard the n - int(n(1 - r)) lowest qualities and every tie of the last."""
    n = s.size
    xs, ys = [], []
    for r in fractions:
        m = n - int(n * (1 - r))
        cut = np.sort(q)[m - 1] if m else -np.inf
        kept = q > cut
        xs.append(1 - kept.mean())
        g = kept & lab
        ys.append(np.mean(s[g] < t) if g.any() else np.nan)
    return np.array(xs), np.array(ys)


def brute_partial_area(x, y, limit):
    """Trapezoids up to `limit`, the last one cut at it by linear interpolation."""
    area = 0.0
    for a, b, ya, yb in zip(x[:-1], x[1:], y[:-1], y[1:]):
        if a >= limit:
            break
        if b > limit:
            yb, b = ya + (yb - ya) * (limit - a) / (b - a), limit
        area += (b - a) * (ya + yb) / 2
    return area


@pytest.mark.parametrize("seed", range(5))
def test_ideal_curve_and_partial_areas_equal_brute_force(seed):
    s, lab, q = tied(seed)
    fars = np.array([0.05, 0.2, 0.5])
    edc = fixed_threshold_edc(s, lab, q, FRACTIONS, fars, allow_tiny_far=True)
    limit = 0.3
    for jf, t in enumerate(edc.threshold):
        x, y = brute_edc(s, lab, q, t, FRACTIONS)
        np.testing.assert_allclose(edc.discarded_fraction, x, atol=1e-15)
        np.testing.assert_allclose(edc.fnmr[:, jf], y, atol=1e-15)
        ideal = brute_ideal(s, lab, t, edc.discarded_fraction)
        np.testing.assert_allclose(edc.ideal_fnmr()[:, jf], ideal, atol=1e-12)
        assert edc.partial_auc(limit)[jf] == pytest.approx(brute_partial_area(x, y, limit), abs=1e-12)
        assert edc.ideal_partial_auc(limit)[jf] == pytest.approx(brute_partial_area(x, ideal, limit), abs=1e-12)
        assert (edc.ideal_fnmr()[:, jf] <= np.nan_to_num(y, nan=1) + 1e-12).all()  # nothing beats the ideal


def test_ideal_known_answers_and_empty_cases():
    # 10 pairs, 4 genuine, 2 of them false non-matches: discarding 10% leaves 1 of 3, 20% none
    np.testing.assert_allclose(ideal_edc_fnmr([0.0, 0.1, 0.2, 0.5], [2], 4, 10)[:, 0], [0.5, 1 / 3, 0.0, 0.0])
    assert ideal_edc_fnmr([0.0, 0.3], [0], 4, 10).tolist() == [[0.0], [0.0]]  # no false non-match
    assert np.isnan(ideal_edc_fnmr([0.0], [0], 0, 10)).all()  # no genuine pair: undefined
    # over mated pairs only (n = n_genuine) it is the standard's max(0, (e0 - d) / (1 - d))
    d = np.linspace(0, 0.9, 10)
    np.testing.assert_allclose(ideal_edc_fnmr(d, [30], 100, 100)[:, 0], np.maximum(0, (0.3 - d) / (1 - d)))


@pytest.mark.parametrize("seed", range(4))
def test_fixed_oracle_is_the_ideal_curve_without_false_matches(seed):
    s, lab, _ = tied(seed)
    res = tar_at_far(s, lab, [1e-9], "exact", allow_tiny_far=True)  # k = 0: above every impostor
    t = float(res.threshold[0])
    u = reference_uncertainty(s, lab, "oracle", t)
    edc = fixed_threshold_edc(s, lab, u, FRACTIONS, [1e-9], order="uncertainty", allow_tiny_far=True)
    kept = edc.kept_genuine > 0  # past that the oracle has discarded every genuine pair: FNMR undefined
    assert kept[: int(np.argmax(edc.fnmr[:, 0] == 0)) + 1].all()
    np.testing.assert_allclose(edc.fnmr[kept, 0], edc.ideal_fnmr()[kept, 0], atol=1e-12)


def test_reference_orders():
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    lab = np.array([True, True, False, False, True])
    np.testing.assert_allclose(reference_uncertainty(s, lab, "oracle", 0.5), [-0.4, 0.4, 0.3, -0.3, 0.0])
    r = reference_uncertainty(s, lab, "random")
    np.testing.assert_array_equal(r, np.random.default_rng(0).random(5))
    np.testing.assert_array_equal(r, reference_uncertainty(s, lab, "random"))
    with pytest.raises(ValueError, match="threshold"):
        reference_uncertainty(s, lab, "oracle")
    with pytest.raises(ValueError, match="oracle, random"):
        reference_uncertainty(s, lab, "best")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("edc") / "toy.zarr")


def test_reject_fixed_writes_edc_and_reference_tables(store, tmp_path):
    opts = RejectOptions(protocol="images", fars=(0.05, 0.2), fractions=(0.0, 0.5, 11), threshold_mode="fixed",
                         discard_limit=0.25, figures=False)  # fmt: skip
    res = commands.reject(store.path, tmp_path / "r", opts)
    edc, auc_df, ref = res.tables["edc"], res.tables["auc"], res.tables["reference"]
    for name in ("edc", "reference"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r" / f"{name}.parquet"), res.tables[name])
    assert set(ref["uncertainty"]) == {"oracle", "random"}
    assert set(edc["uncertainty"]) == set(auc_df["uncertainty"]) | {"oracle", "random"}
    # the raw partial area is auc.csv's number; minus the ideal is the difference
    merged = edc.merge(auc_df, on=["model", "fusion", "distance", "uncertainty", "far"])
    np.testing.assert_array_equal(merged["pauc"], merged["auc"])
    np.testing.assert_allclose(edc["pauc_minus_ideal"], edc["pauc"] - edc["pauc_ideal"])
    assert (edc["discard_limit"] == 0.25).all()
    # the oracle with a fixed threshold is never above the ideal curve's area by more than its false matches cost
    oracle = edc[edc["uncertainty"] == "oracle"]
    assert (oracle["pauc_minus_ideal"] >= -1e-12).all()
    assert (edc[edc["uncertainty"] == "random"]["pauc_minus_ideal"] >= -1e-12).all()
    # reference curves use the methods' thresholds: FNMR at no discard equals theirs
    start = ref[ref["rejected_fraction"] == 0].merge(
        res.tables["reject"].query("rejected_fraction == 0"), on=["model", "fusion", "distance", "far"]
    )
    np.testing.assert_array_equal(start["tar_x"], start["tar_y"])
    assert "EDC partial AUC" in res.text and "oracle" in res.text


def test_every_reject_figure_names_its_reference_curves(store, tmp_path):
    for mode in ("recompute", "fixed"):
        opts = RejectOptions(protocol="images", fars=(0.1,), fractions=(0.0, 0.5, 6), threshold_mode=mode)
        res = commands.reject(store.path, tmp_path / mode, opts)
        df, ref = res.tables["reject"], res.tables["reference"]
        figures = [*reject_curve_figures(df, reference=ref), *reject_comparison_figures(df, reference=ref)]
        assert figures
        for _, fig in figures:
            texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
            assert any(t.startswith("oracle reference") for t in texts), texts
            assert any(t.startswith("random reference") for t in texts), texts
        # a reference AUC row per reference, threshold mode and FAR
        ref_auc = pd.read_csv(tmp_path / mode / "reference_auc.csv")
        assert set(ref_auc["uncertainty"]) == {"oracle", "random"}
        assert (ref_auc["threshold_mode"] == mode).all()
        # the recompute AUC of a reference is the trapezoid area of its curve
        for _, g in ref.groupby(["model", "distance", "uncertainty", "far"]):
            row = ref_auc[(ref_auc["model"] == g["model"].iloc[0]) & (ref_auc["uncertainty"] == g["uncertainty"].iloc[0])
                          & (ref_auc["distance"] == g["distance"].iloc[0])]  # fmt: skip
            if mode == "recompute":
                assert row["auc"].iloc[0] == pytest.approx(auc(g["rejected_fraction"], g["tar"]), nan_ok=True)


def test_no_references_leaves_them_out(store, tmp_path):
    from analyze.commands import options_from_args

    opts = options_from_args(RejectOptions, {"protocol": "images", "far": 0.1, "rejected": "0:0.5:3",
                                             "no_references": True, "no_figures": True}, "test")  # fmt: skip
    assert opts.references is False
    res = commands.reject(store.path, tmp_path / "n", opts)
    assert "reference" not in res.tables and not (tmp_path / "n" / "reference.csv").exists()
    assert res.report.params["references"] == {}


def test_a_comparison_figure_draws_the_references_of_its_own_far(store, tmp_path):
    """Each comparison figure is of one FAR: its oracle and random lines are that FAR's reference rows only (the
    rows of every FAR drawn as one line zig-zagged between their TARs)."""
    opts = RejectOptions(protocol="images", fars=(0.05, 0.3), fractions=(0.0, 0.5, 6), figures=False)
    res = commands.reject(store.path, tmp_path / "r", opts)
    df, ref = res.tables["reject"], res.tables["reference"]
    figures = list(reject_comparison_figures(df, reference=ref))
    assert len(figures) == 2
    for _, fig in figures:
        far = float(re.search(r"TAR@FAR=([0-9.e-]+)", fig.axes[0].get_ylabel()).group(1))
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        for kind in ("oracle", "random"):
            drawn = [line for name, line in lines.items() if name.startswith(f"{kind} reference")]
            rows = ref[(ref["uncertainty"] == kind) & np.isclose(ref["far"], far)]
            wanted = [g.sort_values("rejected_fraction") for _, g in rows.groupby(["model", "distance", "fusion"],
                                                                                   dropna=False)]  # fmt: skip
            assert drawn and len(drawn) == len(wanted)
            for line in drawn:  # each line is one (model, distance, fusion)'s curve at this FAR
                x, y = (np.asarray(v, float) for v in line.get_data())
                assert any(
                    np.array_equal(x, w["rejected_fraction"].to_numpy(float)) and np.array_equal(y, w["tar"].to_numpy(float), equal_nan=True)
                    for w in wanted
                )
        matplotlib.pyplot.close(fig)
