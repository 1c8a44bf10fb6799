"""Tidy tables and summary.json (issue 12 item 6): the same key columns in every table, resolved parameters,
headline results, command line, toolkit version and store digest."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from analysis_fixture import build_store

from analyze import commands
from analyze.outputs import store_digest
from analyze.tables import add_keys
from featurestore.store import FeatureStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("tidy") / "toy.zarr")


def test_add_keys_adds_only_missing_columns_and_keeps_the_others():
    df = pd.DataFrame({"model": ["a", "b"], "0.1": [0.5, 0.6]})
    out = add_keys(df, before="0.1", model="ignored", dataset="toy", protocol=None)
    assert list(out.columns) == ["model", "dataset", "protocol", "0.1"]
    assert out["model"].tolist() == ["a", "b"] and out["dataset"].tolist() == ["toy", "toy"]
    assert out["protocol"].isna().all() and list(df.columns) == ["model", "0.1"]  # the input is not changed


def test_every_table_has_the_key_columns(store, tmp_path):
    opts = dict(figures=False, fars=(0.05, 0.1))
    rej = commands.reject(store.path, tmp_path / "r", commands.RejectOptions(protocol="templates", **opts))
    fus = commands.fusion(store.path, tmp_path / "f", commands.FusionOptions(fusions=("mean",), **opts))
    roc = commands.roc(store.path, tmp_path / "o", commands.RocOptions(**opts))
    keys = {"dataset", "model", "level", "protocol", "fusion", "distance", "convention"}
    for name, df in [*rej.tables.items(), *fus.tables.items(), ("roc_table", roc.tables["roc_table"])]:
        assert keys <= set(df.columns), (name, keys - set(df.columns))
        assert set(df["dataset"]) == {"toyset"}
    assert {"uncertainty", "kept_pairs"} <= set(rej.tables["reject"].columns)
    f = fus.tables["fusion"]
    assert (f["level"] == "template").all() and (f["kept_pairs"] == f["pairs"]).all()
    assert {"protocol", "dataset"} <= set(roc.tables["roc_curve"].columns)


def test_summary_records_resolved_parameters_results_and_provenance(store, tmp_path):
    res = commands.reject(
        store.path, tmp_path / "r", commands.RejectOptions(protocol="templates", figures=False, fars=(0.05,))
    )
    s = json.loads((res.out_dir / "summary.json").read_text())
    p = s["params"]
    assert p["models"] == ["scaleface", "pfe", "magface"] and p["fusions"] and p["metrics"]
    assert "MLS_harmonic-sum" in p["metrics"] and "PFE" in p["fusions"]
    auc = pd.read_csv(res.out_dir / "auc.csv")
    assert len(s["results"]["auc"]) == len(auc)
    assert [r["auc"] for r in s["results"]["auc"]] == pytest.approx(auc["auc"].tolist())
    prov = s["provenance"]
    assert prov["toolkit_version"] and prov["command_line"]
    with FeatureStore.open(store.path) as st:
        assert prov["store_digest"] == store_digest(st) and len(prov["store_digest"]) == 64


def test_store_digest_changes_with_the_values(tmp_path):
    a = build_store(tmp_path / "a.zarr", seed=0)
    b = build_store(tmp_path / "b.zarr", seed=0)
    c = build_store(tmp_path / "c.zarr", seed=1)
    with FeatureStore.open(a.path) as x, FeatureStore.open(b.path) as y, FeatureStore.open(c.path) as z:
        assert store_digest(x) == store_digest(y) != store_digest(z)
