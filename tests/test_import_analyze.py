"""Imported (`external`) models are analysed like built-in ones: their declared direction and the external
policy's defaults, and the same numbers as a built-in model given the same features and values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyze import commands
from analyze.accuracy_cli import AccuracyOptions, run_accuracy
from analyze.identify import IdentifyOptions, run_identify
from analyze.policy import POLICIES, external_policy, policy_for
from facedata.importing import import_store, parse_quality
from facedata.manifest import load_manifest
from facedata.readers import read_dataset
from featurestore.errors import StoreError
from featurestore.schema import Identification, ModelSpec, TemplateSet
from featurestore.store import FeatureStore
from tests.import_fixture import write_table_dataset

FARS = (0.01, 0.05, 0.1)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The fixture dataset with a 1:N protocol, and its ScaleFace features imported with two qualities:
    `sf` (the ScaleFace scale, a confidence) and `hm` (PFE's harmonic-mean sigma^2, an uncertainty)."""
    root = tmp_path_factory.mktemp("byo-analyze")
    ds = write_table_dataset(root)
    tables = read_dataset(load_manifest(str(ds["manifest"])), root)
    tpl, subj = np.unique(np.c_[tables.images.template, tables.images.subject], axis=0).T
    first = np.r_[True, subj[1:] != subj[:-1]] & (subj < 7)  # subjects 7-9 are not in the gallery
    tables.identification = {
        "ident": Identification(
            "ident", {"G1": TemplateSet(tpl[first], subj[first])}, TemplateSet(tpl[~first], subj[~first])
        )
    }
    np.savez(root / "emb.npz", paths=ds["paths"], embeddings=ds["embedding"])
    hm = 1.0 / np.mean(1.0 / ds["sigma"].astype(np.float64), axis=1)
    pd.DataFrame({"path": ds["paths"], "sf": ds["scale"], "hm": hm}).to_parquet(root / "q.parquet")
    import_store(
        tables,
        root / "byo.zarr",
        str(root / "emb.npz"),
        qualities=[parse_quality(f"sf={root}/q.parquet:confidence"), parse_quality(f"hm={root}/q.parquet:uncertainty")],
        chunk_rows=16,
    )
    return {**ds, "store": root / "byo.zarr", "hm": hm}


def import_one(imported: dict, out, name: str, paths, values, kind: str = "confidence") -> None:
    """Import the fixture's embeddings with one quality `name` given for `paths`."""
    pd.DataFrame({"path": paths, name: values}).to_parquet(out.with_suffix(".parquet"))
    tables = read_dataset(load_manifest(str(imported["manifest"])), imported["root"])
    qualities = [parse_quality(f"{name}={out.with_suffix('.parquet')}:{kind}")]
    import_store(tables, out, str(imported["root"] / "emb.npz"), qualities=qualities, chunk_rows=16)


def test_external_policy_reads_the_declared_direction():
    conf = ModelSpec("q", "external", outputs=("embedding", "norm", "q"), config={"quality": {"q": "confidence"}})
    unc = ModelSpec("u", "external", outputs=("embedding", "norm", "u"), config={"quality": {"u": "uncertainty"}})
    p, u = policy_for(conf), policy_for(unc)
    assert (p.name, p.value_output, p.value_kind, p.fusions, p.edc_metric) == (
        "external",
        "q",
        "confidence",
        ("mean",),
        "cosine_min",
    )
    assert (u.value_kind, u.edc_metric) == ("uncertainty", "cosine_max")
    assert p.metrics == POLICIES["scaleface"].metrics and p.metrics_for("fixed") == ["cosine_min"]
    assert policy_for(ModelSpec("e", "external", outputs=("embedding", "norm"))).name == "norm"
    assert policy_for(("embedding", "norm", "scale")).name == "scaleface"  # outputs still work
    assert external_policy("x", "uncertainty").stored().kind == "uncertainty"
    two = ModelSpec(
        "t", "external", outputs=("embedding", "a", "b"), config={"quality": {"a": "confidence", "b": "uncertainty"}}
    )
    with pytest.raises(StoreError, match="has 2 quality outputs .* one model per quality"):
        policy_for(two)


def _numbers(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in ("model", "family") if c in df.columns]).reset_index(drop=True)


@pytest.mark.parametrize("level, fusion", [("image", ()), ("template", ("weighted",))])
def test_reject_with_an_external_quality_equals_the_builtin_scale(imported, tmp_path, level, fusion):
    protocol = "images" if level == "image" else "templates"
    opts = dict(protocol=protocol, level=level, fusions=fusion, fars=FARS, fractions=(0.0, 0.5, 11), figures=False)
    ext = commands.reject(imported["store"], tmp_path / "ext", commands.RejectOptions(models=("sf",), **opts))
    ref = commands.reject(imported["builtin"], tmp_path / "ref", commands.RejectOptions(models=("scaleface",), **opts))
    e, r = ext.tables["reject"], ref.tables["reject"]
    assert len(e) == len(r) > 0 and set(zip(e["distance"], e["uncertainty"])) == {
        ("cosine", "mean"),
        ("cosine", "harmonic-harmonic"),
    }
    pd.testing.assert_frame_equal(_numbers(e), _numbers(r))
    pd.testing.assert_frame_equal(_numbers(ext.tables["auc"]), _numbers(ref.tables["auc"]))


def test_an_uncertainty_rejects_the_most_uncertain_first(imported, tmp_path):
    """`hm` declared an uncertainty: rejecting by it equals rejecting by its negation declared a confidence,
    and the EDC's pair value is the max (worse image)."""
    st = imported["store"]
    opts = dict(protocol="images", level="image", fars=FARS, fractions=(0.0, 0.5, 11), figures=False)
    unc = commands.reject(st, tmp_path / "u", commands.RejectOptions(models=("hm",), metrics=("cosine_mean",), **opts))
    import_one(imported, tmp_path / "neg.zarr", "neg", imported["paths"], -imported["hm"])
    conf = commands.reject(
        tmp_path / "neg.zarr", tmp_path / "c", commands.RejectOptions(models=("neg",), metrics=("cosine_mean",), **opts)
    )
    a, b = unc.tables["reject"], conf.tables["reject"]
    np.testing.assert_array_equal(a["tar"].to_numpy(), b["tar"].to_numpy())
    fixed = commands.reject(st, tmp_path / "f", commands.RejectOptions(models=("hm",), threshold_mode="fixed", **opts))
    assert set(fixed.tables["reject"]["uncertainty"]) == {"max"}
    tar = a[a["far"] == 0.1].sort_values("rejected_fraction")["tar"].to_numpy()
    assert tar[-1] > tar[0]  # hm drives the noise of the fixture's embeddings: rejecting it helps


@pytest.mark.slow
def test_roc_fusion_distribution_identify_accuracy_run_on_external_models(imported, tmp_path):
    st = imported["store"]
    roc = commands.roc(
        st, tmp_path / "roc", commands.RocOptions(protocol="templates", fusions=("mean",), fars=FARS, figures=False)
    )
    assert set(roc.tables["roc_curve"]["model"]) == {"sf", "hm"}
    fus = commands.fusion(
        st,
        tmp_path / "fus",
        commands.FusionOptions(protocol="templates", fars=FARS, figures=False, media_detector=False),
    )
    assert {"mean", "first", "media"} <= set(fus.tables["fusion"]["fusion"])
    dist = commands.distribution([st], tmp_path / "dist", commands.DistributionOptions(gallery_size=0))
    summary = dist.tables["summary"].set_index(["model", "quantity"])
    assert summary.loc[("sf", "external_confidence"), "kind"] == "confidence"
    assert summary.loc[("hm", "external_uncertainty"), "kind"] == "uncertainty"
    np.testing.assert_allclose(
        summary.loc[("sf", "external_confidence"), "mean"], imported["scale"].astype(np.float64).mean()
    )
    ident = run_identify(
        st, tmp_path / "id", IdentifyOptions(models=("sf", "hm"), fusions=("mean",), fpirs=(0.25,), figures=False)
    )
    assert set(ident.tpir["model"]) == {"sf", "hm"} and set(ident.reject["uncertainty"]) == {"sf", "hm"}
    with FeatureStore.open(st) as s:
        acc = run_accuracy(s, tmp_path / "acc", AccuracyOptions(models=("sf",), protocols=("images",), folds=5))
    assert set(acc.accuracy["model"]) == {"sf"} and not acc.reject.empty


def test_images_a_quality_file_lacks_are_left_out_of_that_model(imported, tmp_path):
    from analyze.loading import valid_rows

    import_one(imported, tmp_path / "gap.zarr", "q", imported["paths"][2:], imported["scale"][2:])
    with FeatureStore.open(tmp_path / "gap.zarr") as st:
        v = valid_rows(st, ["q"], partial=False)
    assert v.n_nan == {"q/q": 2} and v.mask.sum() == len(imported["paths"]) - 2 and not v.mask[:2].any()
