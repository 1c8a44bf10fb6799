"""Reject verification from a store, checked against a brute-force computation from the definitions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from analysis_fixture import build_store
from click.testing import CliRunner
from torchless import run_without_torch

from analyze.cli import cli
from analyze.experiments import REJECT_COLUMNS, run_fusion_table, run_reject
from featurestore.errors import StoreError


def brute_tar(scores, labels, far):
    """Paper convention by definition: k = round(far * n_imp); threshold = k-th highest impostor
    (k = 0: highest + 1e-8); TAR = share of genuine >= threshold."""
    imp = np.sort(scores[~labels])[::-1]
    gen = scores[labels]
    if len(imp) == 0 or len(gen) == 0:
        return np.nan
    k = int(np.round(far * len(imp)))
    thr = imp[0] + 1e-8 if k == 0 else imp[k - 1]
    return float((gen >= thr).mean())


def brute_reject(scores, labels, unc, fractions, far):
    order = np.argsort(unc, kind="stable")
    out = []
    for r in fractions:
        keep = order[: int(len(scores) * (1 - r))]
        out.append(brute_tar(scores[keep], labels[keep], far))
    return np.array(out)


def cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "toy.zarr", failed=(4, 31))


FR = (0.0, 0.5, 11)


def test_image_level_cosine_mean_matches_brute_force(store):
    df, auc_df, report = run_reject(
        store, models=["scaleface"], protocol="images", metrics=["cosine_mean"], fars=(0.01, 0.1), fractions=FR
    )
    assert list(df.columns) == REJECT_COLUMNS
    proto = store.protocol("images")
    ok = ~np.isin(proto.pairs, [4, 31]).any(axis=1)
    p, lab = proto.pairs[ok], proto.label[ok]
    emb, q = store.truth["emb"], store.truth["quality"]
    scores = cos(emb[p[:, 0]], emb[p[:, 1]])
    unc = -(q[p[:, 0]].astype(np.float64) + q[p[:, 1]])  # 'mean' of confidences: sum, larger = keep first
    fr = np.linspace(*FR[:2], FR[2])
    for far in (0.01, 0.1):
        got = df[df.far == far].sort_values("rejected_fraction")["tar"].to_numpy()
        np.testing.assert_array_equal(got, brute_reject(scores, lab, unc, fr, far))
    assert report.pairs["scaleface/none"]["dropped"] == int((~ok).sum())
    assert report.excluded["images_failed"] == 2
    assert set(auc_df.columns) >= {"model", "level", "fusion", "distance", "uncertainty", "far", "auc"}
    assert (auc_df.level == "image").all() and len(auc_df) == 2


def test_template_level_mean_fusion_matches_direct(store):
    df, _, report = run_reject(
        store,
        models=["pfe"],
        protocol="templates",
        fusions=["mean"],
        metrics=["cosine_harmonic-sum"],
        fars=(0.05,),
        fractions=FR,
    )
    t = store.image_column("template")
    valid = store.truth["status"] == 1
    emb, sig = store.truth["emb"], store.truth["sigma"].astype(np.float64)
    ids = np.unique(t)
    feats = np.stack([(emb[(t == i) & valid] / 1).mean(0) for i in ids])
    sigs = np.stack([sig[(t == i) & valid].mean(0) for i in ids])
    proto = store.protocol("templates")
    a, b = np.searchsorted(ids, proto.pairs[:, 0]), np.searchsorted(ids, proto.pairs[:, 1])
    scores = cos(feats[a], feats[b])
    hm = lambda x: 1 / (1 / x).mean(1)  # noqa: E731
    unc = hm(sigs[a]) + hm(sigs[b])
    expected = brute_reject(scores, proto.label, unc, np.linspace(*FR[:2], FR[2]), 0.05)
    got = df.sort_values("rejected_fraction")["tar"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=0)
    assert (df.fusion == "mean").all() and (df.level == "template").all()
    assert report.pairs["pfe/mean"]["dropped"] == 0


def test_fixed_threshold_keeps_one_threshold(store):
    df, auc_df, _ = run_reject(
        store, models=["scaleface"], protocol="images", threshold_mode="fixed", fars=(0.1,), fractions=FR
    )
    assert (df.distance == "cosine").all() and (df.uncertainty == "min").all()
    assert df.threshold.nunique() == 1
    assert (df.discarded_fraction >= df.rejected_fraction - 1e-12).all()
    assert auc_df.auc_kind.str.startswith("fnmr_vs_discarded_fraction").all()


def test_nearest_convention_matches_per_fraction_roc(store):
    from sklearn.metrics import roc_curve

    df, _, _ = run_reject(
        store,
        models=["magface"],
        protocol="images",
        metrics=["cosine_min"],
        fars=(0.1,),
        fractions=(0.0, 0.4, 3),
        convention="nearest",
    )
    proto = store.protocol("images")
    ok = ~np.isin(proto.pairs, [4, 31]).any(axis=1)
    p, lab = proto.pairs[ok], proto.label[ok]
    emb, q = store.truth["emb"], store.read("magface", "norm")
    s = cos(emb[p[:, 0]], emb[p[:, 1]])
    order = np.argsort(-np.minimum(q[p[:, 0]], q[p[:, 1]]).astype(np.float64), kind="stable")
    for r, got in zip(np.linspace(0, 0.4, 3), df.sort_values("rejected_fraction").tar):
        keep = order[: int(len(s) * (1 - r))]
        fpr, tpr, _ = roc_curve(lab[keep], s[keep])
        fpr, tpr = np.flipud(fpr), np.flipud(tpr)
        assert got == tpr[np.argmin(np.abs(fpr - 0.1))]


def test_incomplete_store_refused_unless_partial(tmp_path):
    store = build_store(tmp_path / "part.zarr", write_chunks=[0, 1, 2])
    with pytest.raises(StoreError, match=r"extraction is incomplete \(42 of 90 images not done\).*--partial"):
        run_reject(store, protocol="templates", fars=(0.1,), fractions=FR)
    _, _, report = run_reject(store, protocol="templates", fars=(0.1,), fractions=FR, partial=True)
    assert report.excluded["images_not_done"] == 42


def test_fusion_table_has_every_fusion_and_distance(store):
    df, _ = run_fusion_table(store, models=["pfe"], fars=(0.01, 0.1))
    assert set(df.fusion) == {"mean", "first", "media", "PFE"}
    assert set(df[df.fusion == "PFE"].distance) == {"cosine", "MLS"}
    assert df.tar.between(0, 1).all()


def test_cli_outputs_and_errors(tmp_path, store):
    runner = CliRunner()
    out = tmp_path / "res"
    args = [
        "reject",
        "--cache",
        str(store.path),
        "--far",
        "0.05",
        "--far",
        "0.1",
        "--rejected",
        "0:0.5:6",
        "--out",
        str(out),
    ]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "reject.parquet")
    assert list(df.columns) == REJECT_COLUMNS
    assert set(df.model) == {"scaleface", "pfe", "magface"}
    assert pd.read_csv(out / "reject.csv").shape == df.shape
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"]["threshold_mode"] == "recompute" and summary["params"]["convention"] == "exact"
    assert summary["excluded"]["images_failed"] == 2
    assert any(p.suffix == ".png" for p in (out / "figures").iterdir())
    assert any(p.suffix == ".pdf" for p in (out / "figures").iterdir())
    assert "FAR=0.05" in res.output and "scaleface weighted cosine_mean" in res.output
    res = runner.invoke(cli, args)
    assert res.exit_code != 0 and "already holds results" in str(res.exception)
    res = runner.invoke(cli, [*args, "--force", "--metric", "cosine_harmonc-sum"])
    assert "unknown uncertainty combination 'harmonc-sum'. Did you mean 'harmonic-sum'" in str(res.exception)
    res = runner.invoke(cli, [*args, "--force", "--model", "arcface"])
    assert "no model 'arcface'; it has: scaleface, pfe, magface" in str(res.exception)
    res = runner.invoke(cli, [*args, "--force", "--far", "1e-5"])
    assert "below the smallest meaningful FAR" in str(res.exception)


def test_reject_runs_without_torch(tmp_path, store):
    code = (
        "import sys; from analyze.cli import main; "
        f"sys.argv=['analyze','reject','--cache',{str(store.path)!r},'--far','0.1','--rejected','0:0.5:3',"
        f"'--out',{str(tmp_path / 'nt')!r},'--no-figures']; main()"
    )
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "nt" / "reject.parquet").exists()


def test_non_finite_uncertainty_drops_its_pairs(tmp_path):
    import zarr

    store = build_store(tmp_path / "inf.zarr")
    zarr.open_array(str(store.path / "models" / "pfe" / "sigma_sq"), mode="r+")[0:3] = np.inf  # template 100
    df, _, report = run_reject(store, models=["pfe"], protocol="templates", fusions=["PFE"],
                               metrics=["cosine_harmonic-sum"], fars=(0.1,), fractions=FR)
    proto = store.protocol("templates")
    touching = int(np.isin(proto.pairs, [100]).any(axis=1).sum())
    assert report.pairs["pfe/PFE"]["dropped"] == touching > 0
    assert df.tar.notna().all()
