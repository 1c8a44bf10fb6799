"""Uncertainty distributions: per-image tables from a store, statistics vs numpy, shared bins,
gallery ordering, unreadable images, the `distribution` command, and importing without torch."""

from __future__ import annotations

import json

import cv2
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import make_models, make_tables
from torchless import run_without_torch

from analyze.distribution import (
    PERCENTILES,
    distribution_figures,
    gallery,
    gallery_rows,
    histograms,
    plot_distributions,
    shared_bins,
    summarize,
    uncertainty_table,
)
from analyze.distribution_cli import distribution
from featurestore.store import create_store

N, CHUNK, DIM = 10, 4, 4
# chunk 0: rows 0-3, chunk 1: rows 4-7 (left not done), chunk 2: rows 8-9
STATUS = {0: [1, 2, 1, 3], 2: [1, 4]}
OK_ROWS = [0, 2, 8]


def random_outputs(models, start, stop, rng):
    """Random positive outputs for rows [start, stop) (scale, norm, sigma_sq distinct per row)."""
    n = stop - start
    out = {}
    for spec in models:
        out[spec.name] = {}
        for name in spec.outputs:
            shape = (n, *spec.row_shape(name))
            out[spec.name][name] = rng.uniform(0.5, 50.0, size=shape).astype(np.float32)
    return out


def build_store(path, seed=0, name="toy", extra=None):
    """A store of 10 images, 3 chunks; chunk 1 never written; failed statuses in chunks 0 and 2."""
    rng = np.random.default_rng(seed)
    tables = make_tables(N, seed)
    tables.name = name
    models = make_models(DIM)
    store = create_store(path, tables, models, chunk_rows=CHUNK, extra_attrs=extra)
    written = {}
    with store.writer([0, 2]) as w:
        for chunk, status in STATUS.items():
            start, stop = store.chunk_rows_range(chunk)
            outs = random_outputs(models, start, stop, rng)
            w.write_chunk(chunk, np.array(status), outs)
            written[chunk] = outs
    return store, written


def expected(written, model, output):
    """Output values of OK_ROWS from what was written."""
    by_row = {}
    for chunk, outs in written.items():
        for k, row in enumerate(range(chunk * CHUNK, min(chunk * CHUNK + CHUNK, N))):
            by_row[row] = outs[model][output][k]
    return np.array([by_row[r] for r in OK_ROWS], dtype=np.float64)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_uncertainty_table_only_ok_done_rows_with_known_values(tmp_path, suffix):
    store, written = build_store(tmp_path / f"toy{suffix}")
    sf = uncertainty_table(store, "scaleface")
    assert list(sf["row"]) == OK_ROWS
    assert list(sf.columns) == ["dataset", "model", "row", "path", "subject", "template", "status", "scale", "norm"]
    assert list(sf["path"]) == [f"id{r // 3}/img_{r:04d}.jpg" for r in OK_ROWS]
    assert list(sf["subject"]) == [r // 3 for r in OK_ROWS] and list(sf["template"]) == [r // 2 for r in OK_ROWS]
    assert (sf["status"] == 1).all() and (sf["dataset"] == "toy").all() and (sf["model"] == "scaleface").all()
    np.testing.assert_array_equal(sf["scale"], expected(written, "scaleface", "scale"))
    np.testing.assert_array_equal(sf["norm"], expected(written, "scaleface", "norm"))
    pfe = uncertainty_table(store, "pfe")
    assert "scale" not in pfe.columns
    sig = np.stack([written[r // CHUNK]["pfe"]["sigma_sq"][r % CHUNK].astype(np.float64) for r in OK_ROWS])  # (3, D)
    harmonic = np.array([len(s) / np.sum(1.0 / s) for s in sig])
    np.testing.assert_allclose(pfe["sigma_sq_harmonic"], harmonic, rtol=1e-12)
    store.close()


def test_unknown_model_names_the_known_ones(tmp_path):
    store, _ = build_store(tmp_path / "toy.zarr")
    with pytest.raises(Exception, match="no model 'magface'; it has: scaleface, pfe"):
        uncertainty_table(store, "magface")


def test_summary_matches_numpy_and_skips_nan():
    rng = np.random.default_rng(3)
    a = rng.normal(10, 2, 101)
    b = rng.exponential(1.0, 57)
    a_with_nan = a.copy()
    a_with_nan[[3, 50]] = [np.nan, np.inf]
    df = pd.concat(
        [
            pd.DataFrame({"dataset": "ijbc", "model": "sf", "scale": a_with_nan, "norm": a * 2}),
            pd.DataFrame({"dataset": "lfw", "model": "sf", "scale": b, "norm": b + 1}),
        ]
    )
    s = summarize(df)
    assert len(s) == 4
    row = s[(s.dataset == "ijbc") & (s.quantity == "scale")].iloc[0]
    finite = a_with_nan[np.isfinite(a_with_nan)]
    assert row["count"] == 99 and row["n_missing"] == 2 and row["kind"] == "confidence"
    assert row["mean"] == pytest.approx(finite.mean(), rel=1e-14)
    assert row["std"] == pytest.approx(finite.std(), rel=1e-14)
    assert row["min"] == finite.min() and row["max"] == finite.max()
    for p, v in zip(PERCENTILES, np.percentile(finite, PERCENTILES)):
        assert row[f"p{p}"] == pytest.approx(v, rel=1e-14)
    row = s[(s.dataset == "lfw") & (s.quantity == "norm")].iloc[0]
    assert row["p50"] == pytest.approx(np.median(b + 1)) and row["count"] == 57 and row["n_missing"] == 0


def test_summary_of_concatenated_tables_skips_outputs_a_model_lacks():
    df = pd.concat(
        [
            pd.DataFrame({"dataset": "d", "model": "sf", "scale": [1.0, 2.0], "norm": [3.0, 4.0]}),
            pd.DataFrame({"dataset": "d", "model": "pfe", "sigma_sq_harmonic": [0.5, 0.5, 1.0], "norm": 1.0}),
            pd.DataFrame({"dataset": "d", "model": "inf", "norm": [np.inf, np.inf]}),
        ]
    )
    s = summarize(df)
    assert list(zip(s.model, s.quantity)) == [
        ("inf", "norm"),
        ("pfe", "norm"),
        ("pfe", "sigma_sq_harmonic"),
        ("sf", "scale"),
        ("sf", "norm"),
    ]
    row = s.iloc[0]  # all values infinite: nothing finite to summarise
    assert row["count"] == 0 and row["n_missing"] == 2 and np.isnan(row["mean"])
    assert s.iloc[2]["p50"] == 0.5 and s.iloc[2]["kind"] == "uncertainty"


def test_shared_bins_span_all_datasets_and_figures_use_them():
    rng = np.random.default_rng(1)
    tables = {
        ("ijbc", "sf"): pd.DataFrame({"scale": rng.uniform(5, 20, 300), "norm": rng.uniform(1, 2, 300)}),
        ("lfw", "sf"): pd.DataFrame({"scale": rng.uniform(15, 40, 100), "norm": rng.uniform(1, 3, 100)}),
        ("ms1mv2", "sf"): pd.DataFrame({"scale": np.r_[rng.uniform(0, 30, 50), np.nan], "norm": rng.uniform(0, 2, 51)}),
        ("ijbc", "pfe"): pd.DataFrame({"sigma_sq_harmonic": rng.uniform(0.1, 0.2, 30), "norm": rng.uniform(9, 10, 30)}),
    }
    edges = shared_bins([t["scale"].to_numpy() for (_, m), t in tables.items() if m == "sf"], bins=20)
    all_scale = np.concatenate([t["scale"].to_numpy() for (_, m), t in tables.items() if m == "sf"])
    assert edges[0] == np.nanmin(all_scale) and edges[-1] == np.nanmax(all_scale) and len(edges) == 21
    hists = {(h.quantity, h.model): h for h in histograms(tables, bins=20)}
    assert set(hists) == {("scale", "sf"), ("norm", "sf"), ("norm", "pfe"), ("sigma_sq_harmonic", "pfe")}
    h = hists[("scale", "sf")]
    np.testing.assert_array_equal(h.edges, edges)
    for ds in ("ijbc", "lfw", "ms1mv2"):
        v = tables[(ds, "sf")]["scale"].to_numpy()
        np.testing.assert_array_equal(h.counts[ds], np.histogram(v[np.isfinite(v)], bins=edges)[0])
    figs = dict(distribution_figures(tables, bins=20))
    assert set(figs) == {"distribution_scale", "distribution_norm", "distribution_sigma_sq_harmonic"}
    visible = [ax for ax in figs["distribution_norm"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["pfe", "sf"]
    sf_ax = visible[1]
    steps = sf_ax.patches
    assert len(steps) == 3  # one per dataset
    all_edges = [p.get_data().edges for p in steps]
    for e in all_edges:
        np.testing.assert_array_equal(e, all_edges[0])  # the same bins for every dataset
    for p in steps:  # densities: area 1 each
        d = p.get_data()
        assert np.sum(d.values * np.diff(d.edges)) == pytest.approx(1.0)
    for fig in figs.values():
        plt.close(fig)


def test_plot_distributions_writes_readable_files(tmp_path):
    tables = {("a", "m"): pd.DataFrame({"norm": np.arange(20.0)}), ("b", "m"): pd.DataFrame({"norm": [3.0] * 5})}
    paths = plot_distributions(tables, tmp_path)
    assert [p.name for p in paths] == ["distribution_norm.png", "distribution_norm.pdf"]
    assert mpimg.imread(paths[0]).std() > 0 and paths[1].stat().st_size > 5000


def test_shared_bins_edge_cases():
    np.testing.assert_array_equal(shared_bins([np.array([2.0, 2.0])], bins=2), [1.5, 2.0, 2.5])
    with pytest.raises(ValueError, match="no finite values"):
        shared_bins([np.array([np.nan])])


def test_gallery_rows_follow_the_uncertainty_direction():
    rng = np.random.default_rng(5)
    df = pd.DataFrame(
        {"row": np.arange(30), "scale": rng.permutation(30).astype(float), "sigma_sq_harmonic": rng.random(30)}
    )
    df.loc[[4, 7], "scale"] = np.nan
    most, least = gallery_rows(df, "scale", n=5)  # a confidence: most uncertain = smallest scale
    finite = df[df["scale"].notna()]
    order = np.argsort(finite["scale"].to_numpy(), kind="stable")
    assert list(most["row"]) == list(finite["row"].to_numpy()[order[:5]])
    assert list(least["row"]) == list(finite["row"].to_numpy()[order[::-1][:5]])
    assert 4 not in set(most["row"]) | set(least["row"])
    most, least = gallery_rows(df, "sigma_sq_harmonic", n=3)  # an uncertainty: most = largest
    order = np.argsort(df["sigma_sq_harmonic"].to_numpy())
    assert list(most["row"]) == list(order[::-1][:3]) and list(least["row"]) == list(order[:3])
    most, least = gallery_rows(df.head(4), "scale", n=10)  # fewer rows than asked: all of them
    assert len(most) == len(least) == 4
    with pytest.raises(ValueError, match="no 'norm' column"):
        gallery_rows(df, "norm")


def write_images(root, rows):
    """Face-sized test images at the toy dataset's paths for `rows` (others stay missing)."""
    for r in rows:
        p = root / f"id{r // 3}" / f"img_{r:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        img = np.full((112, 112, 3), (r * 25) % 255, np.uint8)
        cv2.circle(img, (56, 56), 30, (0, 0, 255), -1)
        cv2.imwrite(str(p), img)


def test_gallery_reads_images_and_draws_grey_tiles_for_unreadable(tmp_path):
    store, written = build_store(tmp_path / "toy.zarr")
    root = tmp_path / "data"
    write_images(root, [0, 8])  # row 2 missing
    (root / "id0").mkdir(exist_ok=True)
    png = gallery(store, "scaleface", "scale", root, tmp_path / "out", n=2)
    assert png.name == "gallery_toy_scaleface_scale.png" and png.with_suffix(".pdf").exists()
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.std() > 0
    with pytest.raises(Exception, match="no quantity 'scale'"):
        gallery(store, "pfe", "scale", root, tmp_path / "out")


def run_cli(args):
    return CliRunner().invoke(distribution, args, catch_exceptions=False)


def test_cli_writes_tables_figures_and_galleries(tmp_path):
    root = tmp_path / "data"
    write_images(root, range(N))
    build_store(tmp_path / "a.zarr", seed=0, name="ijbc", extra={"data_root": str(root)})
    build_store(tmp_path / "b.h5", seed=1, name="lfw")
    out = tmp_path / "out"
    res = run_cli(["--cache", str(tmp_path / "a.zarr"), "--cache", str(tmp_path / "b.h5"), "--out", str(out),
                   "--gallery-size", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(out / "distribution_summary.csv")
    assert len(summary) == 2 * (2 + 2)  # datasets x (scaleface: scale, norm; pfe: norm, sigma_sq_harmonic)
    assert set(summary["dataset"]) == {"ijbc", "lfw"} and (summary["count"] == len(OK_ROWS)).all()
    records = json.loads((out / "distribution_summary.json").read_text())
    assert len(records) == 8 and records[0]["mean"] == pytest.approx(summary["mean"][0])
    per_image = pd.read_parquet(out / "uncertainty.parquet")
    assert len(per_image) == 2 * 2 * len(OK_ROWS)
    for q in ("scale", "norm", "sigma_sq_harmonic"):
        assert (out / f"distribution_{q}.png").exists() and (out / f"distribution_{q}.pdf").exists()
    assert sorted(p.name for p in out.glob("gallery_*.png")) == [
        "gallery_ijbc_pfe_norm.png",
        "gallery_ijbc_pfe_sigma_sq_harmonic.png",
        "gallery_ijbc_scaleface_norm.png",
        "gallery_ijbc_scaleface_scale.png",
    ]
    assert res.output.count("note:") == 1 and "b.h5: no data root recorded" in res.output
    assert "sigma_sq_harmonic" in res.output and "uncertainty" in res.output


def test_cli_model_selection_data_root_and_out_checks(tmp_path):
    build_store(tmp_path / "a.zarr")
    root = tmp_path / "data"
    write_images(root, [0])
    out = tmp_path / "out"
    res = run_cli(["--cache", str(tmp_path / "a.zarr"), "--model", "pfe", "--data-root", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert set(pd.read_csv(out / "distribution_summary.csv")["model"]) == {"pfe"}
    assert (out / "gallery_toy_pfe_sigma_sq_harmonic.png").exists()

    res = run_cli(["--cache", str(tmp_path / "a.zarr"), "--out", str(out)])
    assert res.exit_code == 2 and "not empty" in res.output and "--force" in res.output
    res = run_cli(["--cache", str(tmp_path / "a.zarr"), "--out", str(out), "--force", "--gallery-size", "0"])
    assert res.exit_code == 0, res.output
    assert set(pd.read_csv(out / "distribution_summary.csv")["model"]) == {"pfe", "scaleface"}

    res = run_cli(["--cache", str(tmp_path / "a.zarr"), "--model", "magface", "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2
    assert "unknown model(s) magface" in res.output and "scaleface, pfe" in res.output
    res = run_cli(["--cache", str(tmp_path / "a.zarr"), "--data-root", "x", "--data-root", "y", "--out",
                   str(tmp_path / "o3")])  # fmt: skip
    assert res.exit_code == 2 and "one --data-root per --cache" in res.output
    res = run_cli(["--cache", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "o4")])
    assert res.exit_code == 1 and "no store at" in res.output


def test_distribution_runs_without_torch(tmp_path):
    build_store(tmp_path / "toy.zarr")
    code = f"""
import sys
from analyze.distribution import uncertainty_table, summarize, plot_distributions, gallery
from featurestore.store import FeatureStore
store = FeatureStore.open({str(tmp_path / "toy.zarr")!r})
df = uncertainty_table(store, "pfe")
print(summarize(df)["count"].tolist())
plot_distributions({{("toy", "pfe"): df}}, {str(tmp_path / "figs")!r})
gallery(store, "pfe", "sigma_sq_harmonic", {str(tmp_path)!r}, {str(tmp_path / "figs")!r}, n=2)
assert "torch" not in sys.modules
"""
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[3, 3]"
    assert (tmp_path / "figs" / "gallery_toy_pfe_sigma_sq_harmonic.png").exists()
