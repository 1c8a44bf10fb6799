"""`analyze roc` beside its wide table: the EER table, DET points and figure, and the tidy long ROC, each
checked against a brute-force computation on the scores of the same pairs (ties included by the fixture's
rounding-free cosines; the primitives' tie tests are in test_det.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_fixture import build_store
from sklearn.metrics import roc_curve

from analyze import commands
from analyze.commands import RocOptions
from analyze.experiments import log_spaced_index
from analyze.loading import build_pair_set, valid_rows
from analyze.scores import pair_scores


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "toy.zarr")


def _scores(store, model, fusion):
    proto = store.protocol("templates")
    ps = build_pair_set(store, model, proto, "template", fusion, valid_rows(store, [model], False))
    return pair_scores("cosine", ps.features, ps.i, ps.j), ps.labels


def test_roc_writes_eer_det_and_long_roc(store, tmp_path):
    res = commands.roc(store.path, tmp_path / "roc", RocOptions(fusions=("mean",), fars=(0.1,)))
    out = tmp_path / "roc"
    for name in ("eer", "det", "roc_long"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), res.tables[name])
        assert (out / f"{name}.csv").is_file()
    assert {p.name for p in (out / "figures").iterdir()} >= {"det.png", "det.pdf"}
    assert "EER" in res.text
    for model in store.models:
        s, lab = _scores(store, model, "mean")
        # long ROC: sklearn's roc_curve points, in order
        long = res.tables["roc_long"].query("model == @model")
        fpr, tpr, thr = roc_curve(lab, s)
        np.testing.assert_array_equal(long["far"], fpr)
        np.testing.assert_array_equal(long["tar"], tpr)
        np.testing.assert_array_equal(long["threshold"][1:], thr[1:])  # sklearn >= 1.3 writes inf first
        # EER: brute force over every operating point, the crossing of FNMR and FMR by linear interpolation
        distinct = np.r_[np.inf, np.unique(s)[::-1]]
        fmr = np.array([np.mean(s[~lab] >= t) for t in distinct])
        fnmr = np.array([1 - np.mean(s[lab] >= t) for t in distinct])
        d = fnmr - fmr
        k = int(np.flatnonzero(d <= 0)[0])
        expected = fmr[k - 1] + d[k - 1] / (d[k - 1] - d[k]) * (fmr[k] - fmr[k - 1])
        row = res.tables["eer"].query("model == @model").iloc[0]
        assert row["eer"] == pytest.approx(expected, abs=1e-12)
        assert row["fusion"] == "mean"
        # DET: a thinned subset of the full operating points, every row one of them
        det = res.tables["det"].query("model == @model")
        full = pd.DataFrame({"fmr": fmr, "fnmr": fnmr, "threshold": distinct})
        np.testing.assert_allclose(
            det[["fmr", "fnmr", "threshold"]].to_numpy(),
            full.iloc[log_spaced_index(fmr)].to_numpy(),
            atol=1e-15,
        )


def test_log_spaced_index_keeps_few_points_and_thins_many():
    small = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(log_spaced_index(small), [0, 1, 2, 3])
    big = np.linspace(0, 1, 1_000_001)
    idx = log_spaced_index(big, 50)
    assert idx[0] == 0 and idx[-1] == big.size - 1 and idx.size <= 51
    assert (np.diff(idx) > 0).all()


def test_roc_without_figures_writes_the_tables_only(store, tmp_path):
    commands.roc(store.path, tmp_path / "r", RocOptions(fars=(0.1,), figures=False))
    assert not (tmp_path / "r" / "figures").exists()
    assert (tmp_path / "r" / "eer.csv").is_file()
