"""--bootstrap N on reject, fusion, roc and identify: the weighted TPIR equals TPIR on the explicitly duplicated
probe list, pair units are the pairs' subjects, and the commands write the interval columns (only then)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_fixture import build_store
from click.testing import CliRunner

from analyze import commands
from analyze.bootstrap import percentile_interval, replicate_multiplicities, tar_at_far_interval, tpir_replicates
from analyze.cli import cli
from analyze.commands import FusionOptions, RejectOptions, RocOptions
from analyze.identification import Search, fpir_thresholds, tpir_at_fpir
from analyze.loading import build_pair_set, valid_rows
from analyze.pair_ids import template_pairs
from analyze.scores import pair_scores


def toy_search(seed: int, n: int = 60) -> tuple[Search, np.ndarray]:
    """A search result with tied scores: mated probes at rank 1 or not, non-mated top-1 scores."""
    rng = np.random.default_rng(seed)
    mated = rng.random(n) < 0.5
    mated[:2] = [True, False]
    rank = np.where(mated, rng.integers(1, 3, n), 0)
    mate = np.where(mated, np.round(rng.random(n), 1), np.nan)
    top1 = np.where(mated, np.maximum(mate, 0.5), np.round(rng.random(n), 1))
    subjects = rng.integers(0, 15, n)
    return Search("g", mated, mate, rank, top1, 10), subjects


def brute_tpir(res: Search, copies: np.ndarray, fpirs: np.ndarray) -> np.ndarray:
    """TPIR@FPIR of the probe list with probe p repeated copies[p] times (fpir_thresholds' exact rule)."""
    rep = np.repeat(np.arange(copies.size), copies.astype(int))
    mated, rank, mate, top1 = res.mated[rep], res.mate_rank[rep], res.mate_score[rep], res.top1[rep]
    if not (~mated).any() or not mated.any():
        return np.full(fpirs.size, np.nan)
    thr, _ = fpir_thresholds(top1[~mated], fpirs)
    ok = mated & (rank == 1)
    return np.array([np.sum(ok & (mate >= t)) / mated.sum() for t in thr])


@pytest.mark.parametrize("seed", range(4))
def test_tpir_replicates_equal_tpir_on_duplicated_probes(seed):
    res, subjects = toy_search(seed)
    uniq, units = np.unique(subjects, return_inverse=True)
    fpirs = np.array([0.05, 0.2, 0.5])
    ident = np.where(res.mate_rank == 1, res.mate_score, -np.inf)
    reps = tpir_replicates(res.mated, ident, res.top1, units, uniq.size, fpirs, n_boot=6, seed=seed)
    for rep, m in zip(reps, replicate_multiplicities(uniq.size, 6, seed)):
        np.testing.assert_allclose(rep, brute_tpir(res, m[units], fpirs), atol=1e-12, equal_nan=True)
    # all weights 1: the unweighted TPIR of analyze.identification
    one = tpir_replicates(res.mated, ident, res.top1, np.arange(res.mated.size), res.mated.size, fpirs, 1, 0)
    ones = brute_tpir(res, np.ones(res.mated.size), fpirs)
    np.testing.assert_allclose(ones, tpir_at_fpir(res, fpirs).tpir)
    assert one.shape == (1, 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("boot") / "toy.zarr")


def test_pair_units_are_the_pairs_subjects(store):
    proto = store.protocol("templates")
    valid = valid_rows(store, ["scaleface"], False)
    ps = build_pair_set(store, "scaleface", proto, "template", "mean", valid)
    units = ps.units(store)
    ids = template_pairs(store, "scaleface", proto, valid, "mean")
    assert units.kind == "subject"
    # same subject <=> same unit, on every scored pair side
    subj = np.r_[ids.subjects[0], ids.subjects[1]]
    unit = np.r_[units.a, units.b]
    assert len({(s, u) for s, u in zip(subj, unit)}) == len(set(subj)) == units.n_units
    # image level: the images' subjects
    img = build_pair_set(store, "scaleface", store.protocol("images"), "image", "none", valid)
    u = img.units(store)
    subject = store.image_column("subject")
    np.testing.assert_array_equal(subject[img.row_ids[img.i]] == subject[img.row_ids[img.j]], u.a == u.b)


def test_fusion_and_roc_write_intervals_from_the_subject_bootstrap(store, tmp_path):
    res = commands.fusion(store.path, tmp_path / "f", FusionOptions(fusions=("mean",), distances=("cosine",),
                                                                    fars=(0.05, 0.2), bootstrap=20, seed=3))  # fmt: skip
    df = res.tables["fusion"]
    assert {"tar_lo", "tar_hi", "bootstrap", "resampled"} <= set(df.columns)
    ps = build_pair_set(
        store, "pfe", store.protocol("templates"), "template", "mean", valid_rows(store, list(store.models), False)
    )
    s = pair_scores("cosine", ps.features, ps.i, ps.j)
    lo, hi = tar_at_far_interval(s, ps.labels, ps.units(store), [0.05, 0.2], "exact", 20, 3)
    got = df[df["model"] == "pfe"].sort_values("far")
    np.testing.assert_array_equal(got["tar_lo"], lo)
    np.testing.assert_array_equal(got["tar_hi"], hi)
    assert (got["tar_lo"] <= got["tar_hi"]).all() and (got["resampled"] == "subject").all()
    roc = commands.roc(store.path, tmp_path / "r", RocOptions(fusions=("mean",), fars=(0.1,), bootstrap=10))
    ci = roc.tables["roc_interval"]
    assert list(ci.columns) == ["model", "fusion", "convention", "far", "tar", "tar_lo", "tar_hi", "bootstrap",
                                "resampled", "level", "protocol", "dataset"]  # fmt: skip
    assert (tmp_path / "r" / "roc_interval.csv").is_file()
    wide = roc.tables["roc_table"].set_index("model")["0.1"]
    np.testing.assert_array_equal(ci.set_index("model")["tar"].loc[wide.index], wide)
    plain = commands.roc(store.path, tmp_path / "p", RocOptions(fusions=("mean",), fars=(0.1,)))
    assert "roc_interval" not in plain.tables and "bootstrap" not in plain.report.params


def test_reject_bootstrap_columns_and_refusals(store, tmp_path):
    opts = RejectOptions(protocol="images", fars=(0.1,), fractions=(0.0, 0.5, 5), bootstrap=8, figures=True,
                         metrics=("cosine_mean",), models=("scaleface",))  # fmt: skip
    res = commands.reject(store.path, tmp_path / "b", opts)
    df, auc_df = res.tables["reject"], res.tables["auc"]
    assert {"tar_lo", "tar_hi"} <= set(df.columns) and {"auc_lo", "auc_hi", "resampled"} <= set(auc_df.columns)
    assert (df["tar_lo"] <= df["tar_hi"]).all()
    r = pd.read_csv(tmp_path / "b" / "reject.csv")
    assert "tar_lo" in r.columns
    args = [
        "reject",
        "--cache",
        str(store.path),
        "--threshold",
        "fixed",
        "--bootstrap",
        "3",
        "--out",
        str(tmp_path / "x"),
    ]
    out = CliRunner().invoke(cli, args)
    assert (
        out.exit_code != 0
        and "resamples the recompute curve only" in out.output
        and "--bootstrap" in out.output
    )
    assert not (tmp_path / "x").exists()


def test_percentile_interval_of_the_gallery_mean_is_of_the_mean_replicates():
    a = np.array([[0.1], [0.3], [0.5]])
    b = np.array([[0.3], [0.5], [0.7]])
    lo, hi = percentile_interval((a + b) / 2, 0.5)
    np.testing.assert_allclose([lo[0], hi[0]], np.percentile([0.2, 0.4, 0.6], [25, 75]))


def test_identify_bootstrap_columns_per_gallery_and_mean(tmp_path):
    from analyze.identify import IdentifyOptions, run_identify
    from facedata.synthetic.store import synthesize_store

    path = tmp_path / "tiny.zarr"
    synthesize_store(path, "tiny-store", seed=0, chunk_rows=512, progress=False, models=("scaleface",))
    base = IdentifyOptions(fpirs=(0.1, 0.3), reject=False, figures=False)
    plain = run_identify(path, tmp_path / "a", base)
    boot = run_identify(path, tmp_path / "b", IdentifyOptions(fpirs=(0.1, 0.3), reject=False, bootstrap=30, seed=1))
    assert "tpir_lo" not in plain.tpir.columns
    t = boot.tpir
    pd.testing.assert_frame_equal(t[plain.tpir.columns], plain.tpir)  # the point estimates are unchanged
    assert t["tpir_lo"].notna().all() and (t["tpir_lo"] <= t["tpir_hi"]).all()
    assert set(t["gallery"]) == set(plain.tpir["gallery"]) and "mean" in set(t["gallery"])
    assert (t["resampled"] == "subject").all() and boot.summary["params"]["bootstrap"] == 30
    again = run_identify(path, tmp_path / "c", IdentifyOptions(fpirs=(0.1, 0.3), reject=False, bootstrap=30, seed=1,
                                                                figures=False))  # fmt: skip
    pd.testing.assert_frame_equal(again.tpir, t)  # seeded: reproducible
