"""`analyze scores`: per-pair rows equal what reject scores; ids, labels, NaN for dropped pairs; file ownership."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from analysis_fixture import build_store

from analyze.accuracy_cli import AccuracyOptions, run_accuracy
from analyze.experiments import build_pair_set, score_pairs
from analyze.loading import valid_rows
from analyze.outputs import OutputExistsError
from analyze.scores_cli import ROW_GROUP, ScoresOptions, column_name, run_scores

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "toy.zarr", failed=(4, 31))


@pytest.mark.parametrize(("protocol", "fusion"), [("templates", None), ("templates", "mean"), ("images", None)])
def test_scores_equal_reject_scoring(store, tmp_path, protocol, fusion):
    out = tmp_path / "scores.parquet"
    metrics = ("cosine_mean", "cosine_harmonic-harmonic")
    summary = run_scores(store, out, ScoresOptions(models=("scaleface", "pfe"), metrics=metrics, protocol=protocol,
                                                   fusion=fusion))  # fmt: skip
    df = pd.read_parquet(out)
    proto = store.protocol(protocol)
    kind = "image" if protocol == "images" else "template"
    np.testing.assert_array_equal(df[f"{kind}_a"], proto.pairs[:, 0])
    np.testing.assert_array_equal(df[f"{kind}_b"], proto.pairs[:, 1])
    np.testing.assert_array_equal(df["label"], proto.label)
    valid = valid_rows(store, ["scaleface", "pfe"], False)
    for model in ("scaleface", "pfe"):
        default = "weighted" if model == "scaleface" else "PFE"
        ps = build_pair_set(store, model, proto, proto.level, fusion or default, valid)
        for metric in metrics:
            s, u, _, _ = score_pairs(ps, metric)
            col = df[column_name(model, metric, "score")].to_numpy()
            kept = ~np.isnan(col)
            assert kept.sum() == len(s) == summary["scored"][f"{model}/{metric}"]
            np.testing.assert_array_equal(col[kept], s)
            np.testing.assert_array_equal(df[column_name(model, metric, "uncertainty")].to_numpy()[kept], u)
            np.testing.assert_array_equal(df["label"].to_numpy()[kept], ps.labels)
    if protocol == "images":  # images 4 and 31 failed: their pairs carry NaN
        bad = np.isin(proto.pairs, [4, 31]).any(axis=1)
        assert np.isnan(df[column_name("pfe", "cosine_mean", "score")].to_numpy()[bad]).all()


def test_row_groups_and_ownership(store, tmp_path, monkeypatch):
    import analyze.scores_cli as sc

    monkeypatch.setattr(sc, "ROW_GROUP", 100)
    out = tmp_path / "s.parquet"
    run_scores(store, out, ScoresOptions(models=("scaleface",), metrics=("cosine_mean",), protocol="templates"))
    f = pq.ParquetFile(out)
    assert f.metadata.num_rows == len(store.protocol("templates").label) and f.num_row_groups > 1
    assert all(f.metadata.row_group(k).num_rows <= 100 for k in range(f.num_row_groups)) and ROW_GROUP > 100
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        run_scores(store, out, ScoresOptions(protocol="templates"))
    run_scores(store, out, ScoresOptions(protocol="templates", force=True))  # ours: replaced
    assert column_name("pfe", "MLS_harmonic-sum", "score") in pd.read_parquet(out).columns
    mine = tmp_path / "mine.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(mine)
    with pytest.raises(OutputExistsError, match="was not written by this tool"):
        run_scores(store, mine, ScoresOptions(force=True))
    assert pd.read_parquet(mine)["x"].tolist() == [1]
    with pytest.raises(OutputExistsError, match="inside the input store"):
        run_scores(store, store.path / "x.parquet", ScoresOptions())


def test_scores_cli_one_line_errors(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from analyze.cli import main; main()", "scores", "--cache", str(store.path)]
    r = subprocess.run([*cmd, "--out", str(tmp_path / "a.parquet"), "--protocol", "templates", "--level", "image"],
                       capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "give --level template" in r.stderr
    assert not (tmp_path / "a.parquet").exists()
    r = subprocess.run([*cmd, "--out", str(tmp_path / "b.parquet"), "--model", "pfe"],
                       capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "pfe/MLS_harmonic-sum" in r.stdout and (tmp_path / "b.parquet").is_file()


def test_accuracy_on_template_protocol_resamples_subjects(store, tmp_path):
    run = run_accuracy(store, tmp_path / "acc", AccuracyOptions(models=("magface",), protocols=("templates", "images"),
                                                                bootstrap=10, seed=1))  # fmt: skip
    acc = run.accuracy.set_index("protocol")
    assert acc.loc["templates", "resampled"] == "subject" and acc.loc["images", "resampled"] == "subject"
    assert acc.loc["images", "flip"] and not acc.loc["templates", "flip"]  # media fusion adds the flip itself
    assert acc.loc["images", "dropped_pairs"] > 0  # images 4 and 31 failed
    assert (acc["accuracy_lo"] <= acc["accuracy_hi"]).all()
    assert len(run.folds) == 20
