"""`analyze`: questions asked of a feature store on CPUs, never touching a model (no torch)."""

from __future__ import annotations

import math

import click

from analyze.outputs import resume_hint
from featurestore.cli_main import run_cli
from featurestore.describe import describe
from featurestore.errors import StoreError
from featurestore.store import FeatureStore

CACHE_HELP = "Feature store written by `extract` (NAME.zarr directory or NAME.h5 file)."
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Analyse a feature store: contents, reject verification, template fusion, ROC tables, distributions.

    Works from the store alone (no model, no torch). Outputs go beside the store by default
    (ijbc.zarr -> ijbc.analysis/<command>/) as Parquet + CSV tables, summary.json and PNG/PDF figures.

    \b
    Examples:
      analyze info --cache ijbc.zarr
      analyze reject --cache ijbc.zarr
      analyze reject --cache ijbc.zarr --model scaleface --metric cosine_harmonic-harmonic --far 1e-4
      analyze fusion --cache ijbc.zarr
      analyze roc --cache ijbc.zarr --fusion media
      analyze distribution --cache ijbc.zarr --cache lfw.zarr --out dist/
      analyze list
    """


def _cluster(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--cluster local:N with N >= 1, checked while parsing (before any folder is made)."""
    if value is None:
        return None
    kind, _, n = value.partition(":")
    if kind != "local" or not n.isdigit() or int(n) < 1:
        raise click.BadParameter(f"{value!r}: expected local:N with N >= 1, e.g. local:4", param_hint="--cluster")
    return value


def _common(f):
    """Options every table-producing command shares."""
    for opt in reversed(
        [
            click.option("--cache", required=True, type=click.Path(), help=CACHE_HELP),
            click.option("--model", "models", multiple=True, help="Model in the store (repeatable; default: all)."),
            click.option("--protocol", default=None, help="Protocol in the store (default: its first)."),
            click.option(
                "--out",
                type=click.Path(file_okay=False),
                default=None,
                help="Output folder (default: beside the store, <store>.analysis/<command>/).",
            ),
            click.option(
                "--force",
                is_flag=True,
                help="Replace an output folder this tool wrote (it deletes only the files its "
                ".scaleface-output.json lists; a folder holding anything else is refused).",
            ),
            click.option(
                "--partial",
                is_flag=True,
                help="Analyse the finished rows of an incomplete store (says how many were left out).",
            ),
            click.option(
                "--scheduler", default=None, help="dask.distributed scheduler address (default: local threads)."
            ),
            click.option(
                "--cluster",
                default=None,
                metavar="local:N",
                callback=_cluster,
                help="Start a LocalCluster of N workers for the run.",
            ),
            click.option("--no-figures", is_flag=True, help="Tables only."),
        ]
    ):
        f = opt(f)
    return f


FAR_TYPE = click.FloatRange(0, 1, min_open=True)
"""A FAR: in (0, 1]."""

TINY_FAR_HELP = (
    "Accept FARs below 1/n_impostors of the scored pairs (k = round(FAR x n) may be 0: threshold above every "
    "impostor). Without it such FARs are refused when given, and dropped with a note when they are defaults."
)


def _rejected(ctx: click.Context, param: click.Parameter, text: str) -> tuple[float, float, int]:
    """--rejected START:STOP:NUM with 0 <= START <= STOP < 1 and NUM >= 2 (np.linspace's arguments)."""
    try:
        a, b, n = text.split(":")
        start, stop, num = float(a), float(b), int(n)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected START:STOP:NUM, e.g. 0:0.5:250", param_hint="--rejected"
        ) from None
    if not (math.isfinite(start) and math.isfinite(stop)) or not 0 <= start <= stop:
        raise click.BadParameter(f"{text!r}: need 0 <= START <= STOP", param_hint="--rejected")
    if stop >= 1:
        raise click.BadParameter(
            f"{text!r}: STOP must be below 1: rejecting every pair leaves no pairs to measure a TAR on",
            param_hint="--rejected",
        )
    if num < 2:
        raise click.BadParameter(f"{text!r}: NUM must be at least 2 (a curve has two ends)", param_hint="--rejected")
    return start, stop, num


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value}: must be a finite number", param_hint=f"--{param.name.replace('_', '-')}")
    return value


def _check_names(metrics=(), fusions=(), distances=()) -> None:
    """Metric, fusion and distance names, checked before the store is read or a folder made."""
    from analyze.names import check_distance, parse_fusion, parse_metric

    for m in metrics:
        parse_metric(m)
    for f in fusions:
        parse_fusion(f)
    for d in distances:
        check_distance(d)


@cli.command()
@_common
@click.option(
    "--level",
    type=click.Choice(["image", "template"]),
    default=None,
    help="Pairs of images or of fused templates (default: the protocol's level).",
)
@click.option(
    "--fusion",
    "fusions",
    multiple=True,
    help="Template fusion (repeatable; default per family: PFE, weighted or mean). See `analyze list`.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="DISTANCE_UNCERTAINTY as in the paper's scripts, e.g. cosine_mean, MLS_harmonic-sum (repeatable).",
)
@click.option(
    "--far",
    "fars",
    multiple=True,
    type=FAR_TYPE,
    help="FARs in (0, 1] (repeatable; default 1e-4 5e-4 1e-3 5e-3 1e-2 5e-2).",
)
@click.option(
    "--rejected",
    default="0:0.5:250",
    show_default=True,
    callback=_rejected,
    help="Rejected fractions, np.linspace(START, STOP, NUM); 0 <= START <= STOP < 1, NUM >= 2.",
)
@click.option(
    "--threshold",
    "threshold_mode",
    type=click.Choice(["recompute", "fixed"]),
    default="recompute",
    show_default=True,
    help="recompute: the paper's threshold re-found on kept pairs; fixed: EDC, set once.",
)
@click.option(
    "--convention",
    type=click.Choice(["exact", "nearest"]),
    default="exact",
    show_default=True,
    help="TAR@FAR: exact = paper (k-th impostor score), nearest = insightface (ROC point nearest the FAR).",
)
@click.option(
    "--bias",
    type=float,
    default=None,
    callback=_finite,
    help="Bias for *biased-cosine distances (mean validation cosine).",
)
@click.option(
    "--discard-limit",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.3,
    show_default=True,
    help="Partial-AUC limit for --threshold fixed, in (0, 1].",
)
@click.option("--allow-tiny-far", is_flag=True, help=TINY_FAR_HELP)
@resume_hint("analyze reject")
def reject(
    cache,
    models,
    protocol,
    out,
    force,
    partial,
    scheduler,
    cluster,
    no_figures,
    level,
    fusions,
    metrics,
    fars,
    rejected,
    threshold_mode,
    convention,
    bias,
    discard_limit,
    allow_tiny_far,
) -> None:
    """Reject verification: TAR@FAR as the most uncertain pairs are rejected.

    With only --cache it runs the paper's defaults for every model (FARs 1e-4..5e-2, 250 fractions in
    [0, 0.5]) and prints the area under each curve. Writes reject.parquet/.csv (tidy: one row per
    method, FAR and fraction), auc.csv, summary.json and figures (per metric; per FAR all methods).

    \b
    Examples:
      analyze reject --cache ijbc.zarr
      analyze reject --cache ijbc.zarr --level template --fusion PFE --metric MLS_harmonic-sum
      analyze reject --cache ijbc.zarr --threshold fixed --metric cosine_min
    """
    from analyze.experiments import run_reject, select
    from analyze.outputs import auc_table_text, claim_out_dir, dask_scheduler, default_out_dir, write_json, write_table

    _check_names(metrics, fusions)
    with FeatureStore.open(cache) as store, dask_scheduler(scheduler, cluster) as where:
        select(store, list(models) or None, protocol)
        with claim_out_dir(out or default_out_dir(cache, "reject"), force, "analyze reject", [cache]) as owned:
            df, auc_df, report = run_reject(
                store,
                models=list(models) or None,
                protocol=protocol,
                level=level,
                fusions=list(fusions) or None,
                metrics=list(metrics) or None,
                fars=tuple(fars) or None,
                fractions=rejected,
                threshold_mode=threshold_mode,
                convention=convention,
                partial=partial,
                bias=bias,
                discard_limit=discard_limit,
                allow_tiny_far=allow_tiny_far,
            )
            report.params["scheduler"] = where
            out_dir = owned.path
            owned.add(*write_table(df, out_dir, "reject"))
            auc_df.to_csv(out_dir / "auc.csv", index=False)
            owned.add(out_dir / "auc.csv", write_json(report, out_dir / "summary.json"))
            if not no_figures:
                from analyze.figures import plot_reject_comparison, plot_reject_curves

                plot_reject_curves(df, out_dir / "figures")
                plot_reject_comparison(df, out_dir / "figures")
            owned.finish()
    _print_exclusions(report)
    click.echo(f"AUC of TAR over rejected fraction ({threshold_mode}, {convention} convention):")
    click.echo(auc_table_text(auc_df))
    click.echo(f"wrote {out_dir}")


def _print_exclusions(report) -> None:
    """What the run left out and why, on stderr: images not done, failed or NaN; pairs dropped; FARs dropped."""
    ex = report.excluded
    left = ex.get("images_not_done", 0)
    if left:
        click.echo(f"--partial: {left:,} images not yet extracted were left out", err=True)
    if ex.get("images_failed") or ex.get("images_nan"):
        click.echo(f"excluded {ex['images_failed']:,} failed images and NaN outputs {ex['images_nan']}", err=True)
    for key, p in report.pairs.items():
        if p["dropped"]:
            click.echo(
                f"{key}: {p['dropped']:,} of {p['pairs']:,} pairs dropped (an image or template without valid outputs)",
                err=True,
            )
    for key, d in report.fars_dropped.items():
        fars = ", ".join(f"{f:g}" for f in d["fars"])
        click.echo(
            f"note: {key}: default FAR {fars} not reported: below 1/n_impostors = {d['smallest_far']:.3g} "
            f"(n_impostors = {d['n_impostors']:,}); --allow-tiny-far reports such FARs anyway",
            err=True,
        )


@cli.command()
@_common
@click.option("--fusion", "fusions", multiple=True, help="Fusions to compare (default: mean, first, media + family's).")
@click.option("--distance", "distances", multiple=True, help="Distances (default: cosine, plus MLS for PFE).")
@click.option("--far", "fars", multiple=True, type=FAR_TYPE, help="FARs in (0, 1] (default 1e-6 ... 1e-1).")
@click.option("--convention", type=click.Choice(["exact", "nearest"]), default="exact", show_default=True)
@click.option("--allow-tiny-far", is_flag=True, help=TINY_FAR_HELP)
@click.option("--media-no-norm", is_flag=True, help="media fusion: L2-normalise images first (insightface N0).")
@click.option("--media-no-detector", is_flag=True, help="media fusion: no detector-score weighting (D0).")
@click.option("--media-no-flip", is_flag=True, help="media fusion: do not add the flipped embedding (F1).")
@resume_hint("analyze fusion")
def fusion(
    cache,
    models,
    protocol,
    out,
    force,
    partial,
    scheduler,
    cluster,
    no_figures,
    fusions,
    distances,
    fars,
    convention,
    allow_tiny_far,
    media_no_norm,
    media_no_detector,
    media_no_flip,
) -> None:
    """Template fusion: TAR@FAR of each fusion x distance on template pairs, as the paper's fusion script.

    \b
    Example:
      analyze fusion --cache ijbc.zarr --fusion mean --fusion PFE --fusion softmax-0.5
    """
    from analyze.experiments import run_fusion_table, select
    from analyze.outputs import claim_out_dir, dask_scheduler, default_out_dir, write_json, write_table

    _check_names(fusions=fusions, distances=distances)
    options = {
        "keep_norm": not media_no_norm,
        "use_detector_score": not media_no_detector,
        "add_flip": not media_no_flip,
    }
    with FeatureStore.open(cache) as store, dask_scheduler(scheduler, cluster) as where:
        select(store, list(models) or None, protocol)
        with claim_out_dir(out or default_out_dir(cache, "fusion"), force, "analyze fusion", [cache]) as owned:
            df, report = run_fusion_table(
                store,
                models=list(models) or None,
                protocol=protocol,
                fusions=list(fusions) or None,
                distances=list(distances) or None,
                fars=tuple(fars) or None,
                convention=convention,
                partial=partial,
                fusion_options=options,
                allow_tiny_far=allow_tiny_far,
            )
            report.params["scheduler"] = where
            out_dir = owned.path
            owned.add(*write_table(df, out_dir, "fusion"), write_json(report, out_dir / "summary.json"))
            owned.finish()
    _print_exclusions(report)
    table = df.pivot_table(index=["model", "fusion", "distance"], columns="far", values="tar", sort=False)
    table.columns = [f"FAR={c:g}" for c in table.columns]
    click.echo(f"TAR@FAR ({convention} convention):")
    click.echo(table.to_string(float_format=lambda v: f"{v:.4f}"))
    click.echo(f"wrote {out_dir}")


@cli.command()
@_common
@click.option("--fusion", "fusions", multiple=True, help="Template fusions (default: media, insightface's).")
@click.option("--far", "fars", multiple=True, type=FAR_TYPE, help="FARs in (0, 1] (default 1e-6 ... 1e-1).")
@click.option("--convention", type=click.Choice(["exact", "nearest"]), default="nearest", show_default=True)
@click.option("--allow-tiny-far", is_flag=True, help=TINY_FAR_HELP)
@resume_hint("analyze roc")
def roc(
    cache, models, protocol, out, force, partial, scheduler, cluster, no_figures, fusions, fars, convention,
    allow_tiny_far,
) -> None:  # fmt: skip
    """ROC table as insightface prints it (TAR at FAR 1e-6 ... 1e-1) and an ROC plot, per model and fusion.

    \b
    Example:
      analyze roc --cache ijbc.zarr --fusion media --fusion mean
    """
    from analyze.experiments import run_roc, select
    from analyze.outputs import claim_out_dir, dask_scheduler, default_out_dir, write_json, write_table

    _check_names(fusions=fusions)
    with FeatureStore.open(cache) as store, dask_scheduler(scheduler, cluster) as where:
        select(store, list(models) or None, protocol)
        with claim_out_dir(out or default_out_dir(cache, "roc"), force, "analyze roc", [cache]) as owned:
            table, curve_df, report = run_roc(
                store, models=list(models) or None, protocol=protocol, fusions=list(fusions) or None,
                fars=tuple(fars) or None, convention=convention, partial=partial, allow_tiny_far=allow_tiny_far,
            )  # fmt: skip
            report.params["scheduler"] = where
            out_dir = owned.path
            owned.add(*write_table(table, out_dir, "roc_table"), *write_table(curve_df, out_dir, "roc_curve"))
            owned.add(write_json(report, out_dir / "summary.json"))
            if not no_figures:
                from analyze.figures import plot_roc

                plot_roc(curve_df, out_dir / "figures")
            owned.finish()
    _print_exclusions(report)
    click.echo(f"TAR@FAR ({convention} convention):")
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(f"wrote {out_dir}")


@cli.command("list")
def list_cmd() -> None:
    """Every distance, pair-uncertainty combination and fusion name, with its meaning.

    Metric strings combine a distance and an uncertainty as DISTANCE_UNCERTAINTY (e.g. cosine_mean,
    MLS_harmonic-sum), exactly as the ScaleFace paper's scripts write them.
    """
    from analyze.names import describe_all

    kind = None
    for k, name, meaning in describe_all():
        if k != kind:
            click.echo(f"\n{k}s:" if kind else f"{k}s:")
            kind = k
        click.echo(f"  {name:<32} {meaning}")


@cli.command()
@click.option("--cache", "cache", required=True, type=click.Path(), help=CACHE_HELP)
@click.option(
    "--verify",
    is_flag=True,
    help="Read everything back and recompute the checksums; list damaged chunks and exit 1 if any.",
)
def info(cache: str, verify: bool) -> None:
    """Print what a store holds: dataset, models and outputs, counts, progress, failures, provenance.

    With --verify, also recompute every done chunk's and creation-time array's checksum (this reads the
    whole store) and list what is damaged; a store too damaged to open normally still opens for it.

    \b
    Example:
      analyze info --cache ijbc.zarr
      analyze info --cache ijbc.zarr --verify
    """
    if not verify:
        with FeatureStore.open(cache) as store:
            click.echo(describe(store))
        return
    import sys

    from featurestore.integrity import format_report
    from featurestore.integrity import verify as verify_store

    with FeatureStore.open(cache, check=False) as store:
        damages = verify_store(store)
        if not damages:
            click.echo(describe(store))
        click.echo(format_report(store, damages))
    if damages:
        sys.exit(1)


def _register_distribution() -> None:
    from analyze.distribution_cli import distribution

    cli.add_command(distribution)


_register_distribution()
cli.add_command(__import__("analyze.identify_cli", fromlist=["identify"]).identify)


def main() -> None:
    """Console entry point: store, name and output errors become one-line messages and exit status 2."""
    from analyze.outputs import OutputExistsError

    run_cli(cli, (StoreError, OutputExistsError, ValueError), "analyze")


if __name__ == "__main__":  # pragma: no cover
    main()
