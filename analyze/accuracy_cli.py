"""`analyze accuracy`: 10-fold verification accuracy (insightface), VAL@FAR (FaceNet), accuracy as uncertain
pairs are rejected, and optional subject-bootstrap intervals, per model and protocol of a store.

`run_accuracy(store, out, AccuracyOptions)` does the work; the click command is a thin wrapper over it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import pandas as pd

from analyze.accuracy import (
    VAL_FAR,
    accuracy_under_rejection,
    check_folds,
    kfold_accuracy,
    squared_distances,
    val_at_far,
)
from analyze.experiments import default_metrics, score_pairs
from analyze.loading import resolve_models, valid_rows
from analyze.outputs import check_out_dir, claim_out_dir, default_out_dir, resume_hint, write_json, write_table
from analyze.pair_ids import image_pairs, template_pairs
from featurestore.errors import StoreError
from featurestore.schema import ModelSpec
from featurestore.store import FeatureStore

ACCURACY_COLUMNS = [
    "model", "protocol", "level", "fusion", "flip", "folds", "pairs", "dropped_pairs",
    "accuracy_mean", "accuracy_std", "threshold_mean", "val", "val_std", "val_far", "val_far_achieved",
    "convention", "val_convention",
]  # fmt: skip
"""The accuracy table's contract; with --bootstrap N also accuracy_lo, accuracy_hi, bootstrap, resampled."""

CONVENTION = "insightface-10fold"
VAL_CONVENTION = "facenet"


@dataclass(frozen=True)
class AccuracyOptions:
    """What `analyze accuracy` computes: models and protocols (empty: all), folds, flip use, template fusion,
    the rejection metrics (empty: each family's default) and fractions, VAL's FAR, bootstrap replicates."""

    models: tuple[str, ...] = field(default=(), metadata={"key": "model"})  # keys: a pipeline step's YAML
    protocols: tuple[str, ...] = field(default=(), metadata={"key": "protocol"})
    folds: int = 10
    flip: bool = True
    fusion: str = "media"
    metrics: tuple[str, ...] = field(default=(), metadata={"key": "metric"})
    fractions: tuple[float, float, int] = field(default=(0.0, 0.5, 11), metadata={"key": "rejected"})
    val_far: float = VAL_FAR
    bootstrap: int = 0
    seed: int = 0
    level: float = 0.95
    partial: bool = False
    force: bool = field(default=False, metadata={"fingerprint": False})


@dataclass
class AccuracyRun:
    """The three tables and the summary written to the output folder."""

    accuracy: pd.DataFrame
    folds: pd.DataFrame
    reject: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None


def _rejection_metrics(spec: ModelSpec, wanted: tuple[str, ...]) -> list[str]:
    return list(wanted) or default_metrics(spec, "recompute")


def run_accuracy(store: FeatureStore, out: str | Path | None, options: AccuracyOptions) -> AccuracyRun:
    """Compute and write accuracy.parquet/.csv, accuracy_folds.parquet/.csv, accuracy_reject.parquet/.csv and
    summary.json into `out` (default: beside the store), claimed through analyze.outputs."""
    from analyze.bootstrap import accuracy_interval, pair_units
    from analyze.experiments import fractions_from

    t0 = time.perf_counter()
    target = out or default_out_dir(store.path, "accuracy")
    check_out_dir(target, options.force, [store.path])  # refuse a folder before the work, not after
    models = resolve_models(store.models, options.models, str(store.path))
    protos = list(options.protocols) or list(store.protocols_info)
    if not protos:
        raise StoreError(f"{store.path} has no protocol to verify")
    loaded = [store.protocol(p) for p in protos]
    for p in loaded:
        check_folds(len(p.label), options.folds, what=f"pairs in protocol {p.name!r}")
    fractions = fractions_from(options.fractions)
    valid = valid_rows(store, models, options.partial)
    rows, fold_rows, reject_rows = [], [], []
    summary: dict[str, Any] = {
        "store": str(store.path),
        "dataset": store.dataset,
        "params": {**asdict(options), "models": models, "protocols": protos},
        "excluded": {
            "images_not_done": valid.n_not_done,
            "images_failed": valid.n_failed,
            "images_nan": valid.n_nan,
        },
        "pairs": {},
    }
    for model in models:
        spec = store.model(model)
        for proto in loaded:
            if proto.level == "image":
                pp = image_pairs(store, model, proto, valid, flip=options.flip, normalize=True)
            else:
                pp = template_pairs(store, model, proto, valid, options.fusion, normalize=True)
            ps = pp.ps
            check_folds(len(ps.labels), options.folds, what=f"scored pairs in protocol {proto.name!r}")
            summary["pairs"][f"{model}/{proto.name}"] = {
                "pairs": ps.n_pairs_total,
                "dropped": ps.n_pairs_dropped,
                "scored": len(ps.labels),
                "genuine": int(ps.labels.sum()),
                "note": "dropped pairs shift the folds against insightface's" if ps.n_pairs_dropped else "",
            }
            dist = squared_distances(ps.features, ps.i, ps.j)
            acc = kfold_accuracy(dist, ps.labels, options.folds)
            val = val_at_far(dist, ps.labels, options.val_far, options.folds)
            row = {
                "model": model, "protocol": proto.name, "level": ps.level, "fusion": ps.fusion, "flip": pp.flip,
                "folds": options.folds, "pairs": len(ps.labels), "dropped_pairs": ps.n_pairs_dropped,
                "accuracy_mean": acc.accuracy_mean, "accuracy_std": acc.accuracy_std,
                "threshold_mean": acc.threshold_mean, "val": val.val_mean, "val_std": val.val_std,
                "val_far": options.val_far, "val_far_achieved": val.far_mean,
                "convention": CONVENTION, "val_convention": VAL_CONVENTION,
            }  # fmt: skip
            if options.bootstrap:
                units = pair_units(*pp.ids, *pp.subjects, id_kind=pp.id_kind)
                lo, hi = accuracy_interval(
                    dist, ps.labels, units, options.folds, options.bootstrap, options.seed, options.level
                )
                row.update(accuracy_lo=lo, accuracy_hi=hi, bootstrap=options.bootstrap, resampled=units.kind)
            rows.append(row)
            for f, (start, stop) in enumerate(acc.bounds):
                fold_rows.append(
                    {
                        "model": model, "protocol": proto.name, "fold": f, "test_start": int(start),
                        "test_stop": int(stop), "threshold": acc.threshold[f], "train_accuracy": acc.train_accuracy[f],
                        "accuracy": acc.accuracy[f], "val": val.val[f], "val_far_achieved": val.far[f],
                        "val_threshold": val.threshold[f],
                    }
                )  # fmt: skip
            for metric in _rejection_metrics(spec, options.metrics):
                _, unc, _, combo = score_pairs(ps, metric)
                rej = accuracy_under_rejection(dist, ps.labels, unc, fractions, options.folds)
                for k in range(rej.fractions.size):
                    reject_rows.append(
                        {
                            "model": model, "protocol": proto.name, "uncertainty": combo,
                            "rejected_fraction": rej.fractions[k], "kept_pairs": int(rej.kept_pairs[k]),
                            "accuracy_mean": rej.accuracy_mean[k], "accuracy_std": rej.accuracy_std[k],
                            "threshold_mean": rej.threshold_mean[k],
                        }
                    )  # fmt: skip
    extra = ["accuracy_lo", "accuracy_hi", "bootstrap", "resampled"] if options.bootstrap else []
    run = AccuracyRun(
        pd.DataFrame(rows, columns=ACCURACY_COLUMNS + extra), pd.DataFrame(fold_rows), pd.DataFrame(reject_rows)
    )
    summary["seconds"] = time.perf_counter() - t0
    run.summary = summary
    with claim_out_dir(target, options.force, "analyze accuracy", [store.path]) as owned:
        owned.add(*write_table(run.accuracy, owned.path, "accuracy"))
        owned.add(*write_table(run.folds, owned.path, "accuracy_folds"))
        owned.add(*write_table(run.reject, owned.path, "accuracy_reject"))
        owned.add(write_json(summary, owned.path / "summary.json"))
        owned.finish()
    run.out = owned.path
    return run


def _positive_far(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0 < value <= 1:
        raise click.BadParameter(f"{value}: must be in (0, 1]", param_hint="--val-far")
    return value


@click.command("accuracy")
@click.option("--cache", required=True, type=click.Path(), help="Feature store written by `extract`.")
@click.option("--model", "models", multiple=True, help="Model in the store (repeatable; default: all).")
@click.option("--protocol", "protocols", multiple=True, help="Protocol (repeatable; default: every protocol).")
@click.option("--folds", type=click.IntRange(min=1), default=10, show_default=True, help="Contiguous folds.")
@click.option("--no-flip", is_flag=True, help="Ignore a stored embedding_flip (insightface adds it).")
@click.option("--fusion", default="media", show_default=True, help="Template fusion for template-level protocols.")
@click.option(
    "--metric", "metrics", multiple=True, help="Pair uncertainty for the rejection table (default per family)."
)
@click.option("--val-far", type=float, default=VAL_FAR, show_default=True, callback=_positive_far, help="VAL's FAR.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, help="Subject-bootstrap replicates (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: beside the store)."
)
@click.option("--force", is_flag=True, help="Replace an output folder this tool wrote.")
@click.option("--partial", is_flag=True, help="Analyse the finished rows of an incomplete store.")
@resume_hint("analyze accuracy")
def accuracy(
    cache, models, protocols, folds, no_flip, fusion, metrics, val_far, bootstrap, seed, out, force, partial
) -> None:  # fmt: skip
    """10-fold verification accuracy (insightface's convention) and VAL@FAR (FaceNet's), per model and protocol.

    Writes accuracy.parquet/.csv, accuracy_folds (one row per fold), accuracy_reject (accuracy as the most
    uncertain pairs are rejected) and summary.json. --bootstrap N adds accuracy_lo/accuracy_hi, a 95%
    percentile interval from resampling subjects (images where subjects are unknown, as in .bin packs).

    \b
    Examples:
      analyze accuracy --cache ms1mv2-val.zarr
      analyze accuracy --cache lfw.zarr --bootstrap 100 --seed 1
    """
    from analyze.vocabulary import parse_fusion, parse_metric

    parse_fusion(fusion)
    for m in metrics:
        parse_metric(m)
    opts = AccuracyOptions(
        models=models, protocols=protocols, folds=folds, flip=not no_flip, fusion=fusion, metrics=metrics,
        val_far=val_far, bootstrap=bootstrap, seed=seed, partial=partial, force=force,
    )  # fmt: skip
    with FeatureStore.open(cache) as store:
        run = run_accuracy(store, out, opts)
    notes, lines = accuracy_lines(run, opts)
    for note in notes:
        click.echo(note, err=True)
    for line in lines:
        click.echo(line)
    click.echo(f"wrote {run.out}")


def accuracy_lines(run: AccuracyRun, options: AccuracyOptions) -> tuple[list[str], list[str]]:
    """(notes for stderr, lines for stdout) of a run: dropped pairs, then the accuracy table; the click command
    and a pipeline step print the same."""
    notes = [
        f"{key}: {p['dropped']:,} of {p['pairs']:,} pairs dropped ({p['note']})"
        for key, p in run.summary["pairs"].items()
        if p["dropped"]
    ]
    cols = ["model", "protocol", "flip", "accuracy_mean", "accuracy_std", "threshold_mean", "val", "val_far"]
    cols += ["accuracy_lo", "accuracy_hi"] if options.bootstrap else []
    table = run.accuracy[cols].to_string(index=False, float_format=lambda v: f"{v:.5f}")
    return notes, [f"10-fold accuracy ({CONVENTION}), VAL@FAR ({VAL_CONVENTION}):", table]
