"""`analyze distribution`: per-image uncertainty tables, summaries, shared-bin histograms and
galleries for one or several feature stores (datasets) and their models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import pandas as pd

from analyze.distribution import (
    gallery,
    plot_distributions,
    quantities_of,
    summarize,
    uncertainty_table,
)
from featurestore.errors import StoreError
from featurestore.store import FeatureStore


def _open(path: str) -> FeatureStore:
    try:
        return FeatureStore.open(path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} exists and is not a folder", param_hint="--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise click.BadParameter(
            f"{out} exists and is not empty; choose another folder or pass --force to write into it",
            param_hint="--out",
        )


def _resolve_models(stores: list[FeatureStore], wanted: tuple[str, ...]) -> list[str]:
    """The models to analyse: those asked for (each must be in at least one store), else all."""
    known = list(dict.fromkeys(m for s in stores for m in s.models))
    if not wanted:
        return known
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown model(s) {', '.join(unknown)}; the stores have: {', '.join(known) or 'none'}",
            param_hint="--model",
        )
    return list(dict.fromkeys(wanted))


def _dataset_names(stores: list[FeatureStore]) -> list[str]:
    """Each store's dataset name, made unique with the store's file stem where two share one."""
    names = [s.dataset or Path(s.path).stem for s in stores]
    return [f"{n}[{Path(s.path).stem}]" if names.count(n) > 1 else n for n, s in zip(names, stores)]


def _summary_text(summary: pd.DataFrame) -> str:
    cols = ["dataset", "model", "quantity", "kind", "count", "mean", "std", "p5", "p50", "p95"]
    if summary.empty:
        return "(no images with status ok in the selected stores and models)"
    return summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


@click.command("distribution", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--cache",
    "caches",
    multiple=True,
    required=True,
    type=click.Path(),
    help="Feature store (NAME.zarr or NAME.h5); repeat for several datasets.",
)
@click.option("--model", "models", multiple=True, help="Model to analyse; repeat for several (default: every model).")
@click.option(
    "--data-root",
    "data_roots",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Image root for the galleries, one per --cache in the same order "
    "(default: the data root recorded in each store; without one, galleries are skipped).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (must be new or empty).")
@click.option("--force", is_flag=True, help="Write into a non-empty --out, replacing files of the same names.")
@click.option(
    "--gallery-size", default=8, show_default=True, type=click.IntRange(min=0), help="Images per gallery row (0: none)."
)
@click.option("--bins", default=50, show_default=True, type=click.IntRange(min=1), help="Histogram bins.")
def distribution(
    caches: tuple[str, ...],
    models: tuple[str, ...],
    data_roots: tuple[str, ...],
    out: str,
    force: bool,
    gallery_size: int,
    bins: int,
) -> None:
    """Distributions of per-image uncertainty: ScaleFace scale and embedding norm (confidences), PFE
    harmonic-mean sigma^2 (uncertainty), over images whose status is ok.

    Writes distribution_summary.csv/.json (count, mean, std, min, percentiles, max per dataset x
    model x quantity), uncertainty.parquet (one row per image), distribution_<quantity>.png/.pdf
    (datasets on shared bins) and gallery_<dataset>_<model>_<quantity>.png/.pdf (most and least
    uncertain faces).

    \b
    Examples:
      analyze distribution --cache ijbc.zarr --out dist_ijbc
      analyze distribution --cache ijbc.zarr --cache lfw.h5 --cache ms1mv2.zarr \\
          --model scaleface --model pfe --out dist_all
      analyze distribution --cache ijbc.zarr --data-root /data/ijbc --gallery-size 10 --out dist --force
    """
    out_dir = Path(out)
    _check_out(out_dir, force)
    if data_roots and len(data_roots) != len(caches):
        raise click.BadParameter(
            f"give one --data-root per --cache ({len(caches)}), in the same order; got {len(data_roots)}",
            param_hint="--data-root",
        )
    stores = [_open(c) for c in caches]
    try:
        selected = _resolve_models(stores, models)
        names = _dataset_names(stores)
        out_dir.mkdir(parents=True, exist_ok=True)
        tables: dict[tuple[str, str], pd.DataFrame] = {}
        notes: list[str] = []
        galleries: list[Path] = []
        for i, (store, dataset) in enumerate(zip(stores, names)):
            root = data_roots[i] if data_roots else (store.attrs.get("extra") or {}).get("data_root")
            for model in selected:
                if model not in store.models:
                    notes.append(f"{store.path}: no model {model!r}, skipped")
                    continue
                if not quantities_of(store, model):
                    notes.append(f"{store.path}: model {model!r} has no per-image uncertainty output, skipped")
                    continue
                df = uncertainty_table(store, model)
                df["dataset"] = dataset
                tables[(dataset, model)] = df
                if gallery_size == 0:
                    continue
                if not root:
                    notes.append(f"{store.path}: no data root recorded (give --data-root), galleries skipped")
                    continue
                if not Path(root).is_dir():
                    notes.append(f"{store.path}: data root {root} is not a folder, galleries skipped")
                    continue
                for q in quantities_of(store, model):
                    if df[q].notna().any():
                        galleries.append(
                            gallery(store, model, q, root, out_dir, n=gallery_size, table=df, dataset=dataset)
                        )
    finally:
        for s in stores:
            s.close()
    if not tables:
        raise click.ClickException("nothing to analyse: no selected model has scale, norm or sigma_sq outputs")
    per_image = pd.concat(list(tables.values()), ignore_index=True)
    per_image.to_parquet(out_dir / "uncertainty.parquet", index=False)
    summary = summarize(per_image)
    summary.to_csv(out_dir / "distribution_summary.csv", index=False)
    records = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in summary.to_dict(orient="records")
    ]
    (out_dir / "distribution_summary.json").write_text(json.dumps(records, indent=2, default=_json_default) + "\n")
    figures = plot_distributions(tables, out_dir, bins=bins)
    click.echo(_summary_text(summary))
    for note in dict.fromkeys(notes):
        click.echo(f"note: {note}")
    click.echo(f"wrote {len(figures)} distribution figure files and {len(galleries)} galleries to {out_dir}")


def _json_default(value: object) -> object:
    """numpy scalars in the summary become plain numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
