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
from analyze.outputs import resume_hint
from featurestore.errors import StoreError
from featurestore.store import FeatureStore


def _open(path: str) -> FeatureStore:
    try:
        return FeatureStore.open(path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _distinct_caches(caches: tuple[str, ...]) -> None:
    """The same store given twice would be counted twice under two labels: refuse it."""
    seen: dict[Path, str] = {}
    for c in caches:
        key = Path(c).resolve()
        if key in seen:
            raise click.BadParameter(
                f"{c} is the same store as {seen[key]}; give each store once", param_hint="--cache"
            )
        seen[key] = c


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


def dataset_labels(names: list[str], paths: list[str | Path]) -> list[str]:
    """A unique label per store: its dataset name, and where two share one, `name[part]` with the shortest
    path part that tells them apart: the file stem, else the nearest differing parent folder
    (run1/ijbc.zarr, run2/ijbc.zarr -> ijbc[run1], ijbc[run2]), else the whole path."""
    labels = list(names)
    resolved = [Path(p).resolve() for p in paths]
    for name in dict.fromkeys(names):
        idx = [i for i, n in enumerate(names) if n == name]
        if len(idx) < 2:
            continue
        candidates = [[resolved[i].stem] for i in idx]
        parents = [list(reversed(resolved[i].parent.parts)) for i in idx]
        for depth in range(max(len(p) for p in parents)):
            for c, p in zip(candidates, parents):
                c.append(p[depth] if depth < len(p) else "")
        tags = None
        for k in range(len(candidates[0])):
            parts = [c[k] for c in candidates]
            if len(set(parts)) == len(parts) and all(parts):
                tags = parts
                break
        tags = tags or [str(resolved[i]) for i in idx]
        for i, tag in zip(idx, tags):
            labels[i] = f"{name}[{tag}]"
    return labels


def _dataset_names(stores: list[FeatureStore]) -> list[str]:
    """Each store's dataset name, made unique (dataset_labels) where two stores share one."""
    return dataset_labels([s.dataset or Path(s.path).stem for s in stores], [s.path for s in stores])


def _exclusions(store: FeatureStore, label: str, models: list[str], tables: dict) -> dict:
    """Which images of one store the distributions leave out and why: not done, status not ok, and per
    model output the ok images whose value is NaN (counted in the table, skipped by the statistics)."""
    from featurestore.schema import STATUS_OK

    done = store.row_done()
    ok = store.status() == STATUS_OK
    nan = {}
    for m in models:
        df = tables.get((label, m))
        if df is None:
            continue
        for q in quantities_of(store, m):
            n = int(df[q].isna().sum())
            if n:
                nan[f"{m}/{q}"] = n
    return {
        "store": str(store.path),
        "dataset": label,
        "images": int(store.n_images),
        "images_not_done": int((~done).sum()),
        "images_failed": int((done & ~ok).sum()),
        "images_nan": nan,
        "images_used": int((done & ok).sum()),
    }


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
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Output folder (new, empty, or with --force ours)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an --out this tool wrote (only the files its .scaleface-output.json lists are deleted).",
)
@click.option(
    "--gallery-size", default=8, show_default=True, type=click.IntRange(min=0), help="Images per gallery row (0: none)."
)
@click.option("--bins", default=50, show_default=True, type=click.IntRange(min=1), help="Histogram bins.")
@resume_hint("analyze distribution")
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
    from analyze.outputs import OutputExistsError, check_out_dir, claim_out_dir

    _distinct_caches(caches)
    try:
        check_out_dir(out, force, caches)
    except OutputExistsError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    if data_roots and len(data_roots) != len(caches):
        raise click.BadParameter(
            f"give one --data-root per --cache ({len(caches)}), in the same order; got {len(data_roots)}",
            param_hint="--data-root",
        )
    stores = [_open(c) for c in caches]
    try:
        selected = _resolve_models(stores, models)
        names = _dataset_names(stores)
        owned = claim_out_dir(out, force, "analyze distribution", caches)
        out_dir = owned.path
        with owned:
            _write(stores, names, selected, data_roots, out_dir, gallery_size, bins, owned)
    finally:
        for s in stores:
            s.close()


def _write(stores, names, selected, data_roots, out_dir, gallery_size, bins, owned) -> None:
    """Tables, summaries, figures and galleries of `distribution` into its claimed folder."""
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
                    galleries.append(gallery(store, model, q, root, out_dir, n=gallery_size, table=df, dataset=dataset))
    excluded = [_exclusions(s, n, selected, tables) for s, n in zip(stores, names)]
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
    params = {"stores": [str(s.path) for s in stores], "datasets": names, "models": selected, "bins": bins}
    (out_dir / "summary.json").write_text(
        json.dumps({"params": params, "excluded": excluded}, indent=2, default=_json_default) + "\n"
    )
    owned.finish()
    click.echo(_summary_text(summary))
    for note in dict.fromkeys(notes):
        click.echo(f"note: {note}")
    for ex in excluded:
        if ex["images_not_done"] or ex["images_failed"] or ex["images_nan"]:
            click.echo(
                f"{ex['dataset']}: excluded {ex['images_not_done']:,} images not done, {ex['images_failed']:,} "
                f"failed images and NaN outputs {ex['images_nan']}",
                err=True,
            )
    click.echo(f"wrote {len(figures)} distribution figure files and {len(galleries)} galleries to {out_dir}")


def _json_default(value: object) -> object:
    """numpy scalars in the summary become plain numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
