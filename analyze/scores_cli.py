"""`analyze scores`: one Parquet file with a row per protocol pair (both ids, the label, and each requested
method's score and pair uncertainty), to take the scores elsewhere.

`run_scores(store, out, ScoresOptions)` does the work; the click command is a thin wrapper over it. Scores
are computed per (model, metric) from per-image or per-template features (never per-pair features) and
written in row groups. A file is replaced only when this tool wrote it (its Parquet metadata says so).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analyze.experiments import default_fusions, default_metrics, score_pairs
from analyze.loading import resolve_models, valid_rows
from analyze.outputs import OutputExistsError, resume_hint
from analyze.pair_ids import image_pairs, template_pairs
from analyze.scores import mls_summation
from featurestore.errors import StoreError
from featurestore.store import FeatureStore

OWNER_KEY = b"scaleface-toolkit"
"""Parquet key-value metadata marking a file this tool wrote (the value: command and parameters, JSON)."""

ROW_GROUP = 1 << 20
"""Rows per Parquet row group (1 Mi pairs: ~8 MiB per float64 column)."""


@dataclass(frozen=True)
class ScoresOptions:
    """Models (empty: all), metric strings (empty: each family's defaults), protocol (None: the first), level
    (None: the protocol's), template fusion (None: the family's default), --force, --partial."""

    models: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    protocol: str | None = None
    level: str | None = None
    fusion: str | None = None
    force: bool = False
    partial: bool = False
    mls_exact: bool = False
    """MLS by the exact kernel (analyze.scores.mls_summation) instead of the fast default."""


def column_name(model: str, metric: str, what: str) -> str:
    """`<model>.<metric>.score` / `<model>.<metric>.uncertainty` (uncertainty: larger = reject first)."""
    return f"{model}.{metric}.{what}"


def check_out_file(path: Path, force: bool, store_path: Path) -> None:
    """Refuse a path that is the store or inside it, a folder, or an existing file without --force, or (with
    --force) one this tool did not write; one line each."""
    res, store = path.resolve(), Path(store_path).resolve()
    if res == store or store in res.parents:
        raise OutputExistsError(f"--out {path} is inside the input store {store_path}; choose a file outside it")
    if path.is_dir():
        raise OutputExistsError(f"--out {path} is a folder; give a file name such as scores.parquet")
    if not path.exists() and not path.is_symlink():
        return
    if not force:
        raise OutputExistsError(f"--out {path} exists; pass --force to replace a file `analyze scores` wrote")
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        meta = {}
    if path.is_symlink() or OWNER_KEY not in meta:
        raise OutputExistsError(
            f"--out {path} was not written by this tool (no {OWNER_KEY.decode()} metadata); it replaces only "
            "files it wrote: choose another name or remove it yourself"
        )


def run_scores(store: FeatureStore, out: str | Path, options: ScoresOptions) -> dict:
    """Write the per-pair table to `out`; return a summary (pairs, columns, scored pairs per method)."""
    from analyze.vocabulary import parse_fusion, parse_metric

    out = Path(out)
    check_out_file(out, options.force, store.path)
    for m in options.metrics:
        parse_metric(m)
    if options.fusion:
        parse_fusion(options.fusion)
    models = resolve_models(store.models, options.models, str(store.path))
    name = options.protocol or next(iter(store.protocols_info), None)
    if name is None:
        raise StoreError(f"{store.path} has no protocol to score")
    proto = store.protocol(name)
    level = options.level or proto.level
    if level != proto.level:
        raise StoreError(f"protocol {proto.name!r} pairs {proto.level}s; give --level {proto.level} (or leave it out)")
    valid = valid_rows(store, models, options.partial)
    id_kind = "image" if level == "image" else "template"
    columns: dict[str, np.ndarray] = {
        f"{id_kind}_a": proto.pairs[:, 0],
        f"{id_kind}_b": proto.pairs[:, 1],
        "label": proto.label.astype(bool),
    }
    scored: dict[str, int] = {}
    methods = []
    for model in models:
        spec = store.model(model)
        fusion = options.fusion or default_fusions(spec)[0]
        pp = (
            image_pairs(store, model, proto, valid)
            if level == "image"
            else template_pairs(store, model, proto, valid, fusion)
        )
        for metric in list(options.metrics) or default_metrics(spec, "recompute"):
            with mls_summation(options.mls_exact):
                scores, unc, _, _ = score_pairs(pp.ps, metric)
            for what, values in (("score", scores), ("uncertainty", unc)):
                col = np.full(len(proto.label), np.nan)
                col[pp.kept] = values
                columns[column_name(model, metric, what)] = col
            scored[f"{model}/{metric}"] = int(pp.kept.sum())
            methods.append({"model": model, "metric": metric, "fusion": pp.ps.fusion})
        del pp
    meta = {
        "command": "analyze scores",
        "store": str(store.path),
        "protocol": proto.name,
        "level": level,
        "ids": f"{id_kind}_a, {id_kind}_b: " + ("store image rows" if level == "image" else "template ids"),
        "methods": methods,
        "unscored": "NaN score and uncertainty: a pair touching an image or template without valid outputs",
    }
    table_schema = pa.schema(
        [pa.field(k, pa.from_numpy_dtype(v.dtype)) for k, v in columns.items()],
        metadata={OWNER_KEY: json.dumps(meta).encode()},
    )
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with pq.ParquetWriter(tmp, table_schema) as writer:
            for a in range(0, len(proto.label), ROW_GROUP):
                batch = [pa.array(v[a : a + ROW_GROUP]) for v in columns.values()]
                writer.write_table(pa.Table.from_arrays(batch, schema=table_schema))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {**meta, "pairs": len(proto.label), "scored": scored, "columns": list(columns), "out": str(out)}


@click.command("scores")
@click.option("--cache", required=True, type=click.Path(), help="Feature store written by `extract`.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Parquet file to write (scores.parquet).")
@click.option("--model", "models", multiple=True, help="Model in the store (repeatable; default: all).")
@click.option("--metric", "metrics", multiple=True, help="DISTANCE_UNCERTAINTY (repeatable; default per family).")
@click.option("--protocol", default=None, help="Protocol in the store (default: its first).")
@click.option("--level", type=click.Choice(["image", "template"]), default=None, help="Default: the protocol's.")
@click.option("--fusion", default=None, help="Template fusion (default per family: PFE, weighted or mean).")
@click.option("--force", is_flag=True, help="Replace a file `analyze scores` wrote (never another file).")
@click.option("--partial", is_flag=True, help="Score the finished rows of an incomplete store.")
@click.option("--mls-exact", is_flag=True, help="MLS by the exact kernel (bit-identical to earlier runs; slower).")
@resume_hint("analyze scores")
def scores(cache, out, models, metrics, protocol, level, fusion, force, partial, mls_exact) -> None:
    """Per-pair scores: ids, label, and each method's score and pair uncertainty, as one Parquet file.

    \b
    Example:
      analyze scores --cache ijbc.zarr --model pfe --out pfe.parquet --metric cosine_mean --metric MLS_harmonic-sum
    """
    opts = ScoresOptions(tuple(models), tuple(metrics), protocol, level, fusion, force, partial, mls_exact)
    with FeatureStore.open(cache) as store:
        summary = run_scores(store, out, opts)
    click.echo(f"{summary['pairs']:,} pairs of {summary['protocol']} ({summary['level']} level): {summary['ids']}")
    for method, n in summary["scored"].items():
        click.echo(f"  {method}: {n:,} scored")
    click.echo(f"wrote {out}")
