"""`analyze`: questions asked of a feature store on CPUs, never touching a model (no torch)."""

from __future__ import annotations

import math
import os
import sys

import click

from analyze.figure_options import FIGURE_OPTIONS, style_from
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
      analyze reject --cache ijbc.zarr --model scaleface --metric cosine_harmonic-harmonic --far 1e-3
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
            *FIGURE_OPTIONS,
        ]
    ):
        f = opt(f)
    return f


CONVENTION_HELP = (
    "TAR@FAR: exact = the paper's (k-th impostor score), nearest = insightface's (ROC point nearest the FAR)."
)

FAR_TYPE = click.FloatRange(0, 1, min_open=True)
"""A FAR: in (0, 1]."""

TINY_FAR_HELP = (
    "Accept FARs below 1/n_impostors of the scored pairs (k = round(FAR x n) may be 0: threshold above every "
    "impostor). Without it such FARs are refused when given, and dropped with a note when they are defaults."
)


def _rejected(ctx: click.Context, param: click.Parameter, text: str) -> tuple[float, float, int]:
    """--rejected START:STOP:NUM with 0 <= START <= STOP < 1 and NUM >= 2 (np.linspace's arguments)."""
    from analyze.commands import parse_fractions

    try:
        return parse_fractions(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rejected") from None


def _bootstrap(f):
    """--bootstrap N and --seed S (analyze.bootstrap: subjects resampled, templates or images where unknown)."""
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap's draws.")(f)
    return click.option(
        "--bootstrap",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Replicates of a subject-resampling bootstrap: 95% percentile intervals as *_lo/*_hi columns "
        "and bands in the figures (0: none).",
    )(f)


MLS_EXACT_HELP = (
    "MLS by the exact kernel: numpy's per-dimension logs and pairwise sum, bit-identical to runs before the fast "
    "default (which takes one log per pair and agrees to ~1e-12 relative; docs/metrics.md). Several times slower."
)


def mls_exact_option(f):
    """--mls-exact (analyze.scores.mls_summation), for every command that scores MLS."""
    return click.option("--mls-exact", is_flag=True, help=MLS_EXACT_HELP)(f)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value}: must be a finite number", param_hint=f"--{param.name.replace('_', '-')}")
    return value


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
    help=CONVENTION_HELP + " Default exact: reject verification is the paper's, and so is its convention.",
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
@click.option(
    "--no-references",
    is_flag=True,
    help="No oracle and random reference curves (each costs one more curve per model, fusion and distance; "
    "the oracle one per FAR).",
)
@mls_exact_option
@_bootstrap
@resume_hint("analyze reject")
def reject(
    cache,
    out,
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
    no_references,
    mls_exact,
    bootstrap,
    seed,
    **common,
) -> None:
    """Reject verification: TAR@FAR as the most uncertain pairs are rejected.

    With only --cache it runs the paper's defaults for every model (FARs 1e-4..5e-2, 250 fractions in
    [0, 0.5]) and prints the area under each curve. Writes reject.parquet/.csv (tidy: one row per
    method, FAR and fraction), auc.csv, summary.json and figures (per metric; per FAR all methods).

    \b
    Examples:
      analyze reject --cache ijbc.zarr
      analyze reject --cache ijbc.zarr --model pfe --level template --fusion PFE --metric MLS_harmonic-sum
      analyze reject --cache ijbc.zarr --threshold fixed --metric cosine_min
    """
    from analyze.commands import RejectOptions
    from analyze.commands import reject as run

    options = _options(
        RejectOptions, common, level=level, fusions=fusions, metrics=metrics, fars=fars, fractions=rejected,
        threshold_mode=threshold_mode, convention=convention, bias=bias, discard_limit=discard_limit,
        allow_tiny_far=allow_tiny_far, bootstrap=bootstrap, seed=seed, references=not no_references,
        mls_exact=mls_exact,
    )  # fmt: skip
    from analyze.commands import command_errors

    with command_errors():
        _echo(run(cache, out, options))


def _options(cls: type, common: dict, **own: object):
    """A command's options dataclass from the options every table command shares (`_common`) and its own."""
    style = style_from(common)
    return cls(
        models=common["models"], protocol=common["protocol"], partial=common["partial"],
        figures=not common["no_figures"], force=common["force"], scheduler=common["scheduler"],
        cluster=common["cluster"], figure_style=style, **own,
    )  # fmt: skip


def _echo(result) -> None:
    """What a command says: its notes on stderr (what it left out), then its tables and where it wrote them."""
    for note in result.notes:
        click.echo(note, err=True)
    click.echo(result.text)
    click.echo(result.footer)


@cli.command()
@_common
@click.option("--fusion", "fusions", multiple=True, help="Fusions to compare (default: mean, first, media + family's).")
@click.option("--distance", "distances", multiple=True, help="Distances (default: cosine, plus MLS for PFE).")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="As in reject: a distance or DISTANCE_UNCERTAINTY string, whose distance is used (fusion pairs carry no "
    "pair uncertainty); the same as --distance DISTANCE.",
)
@click.option("--far", "fars", multiple=True, type=FAR_TYPE, help="FARs in (0, 1] (default 1e-6 ... 1e-1).")
@click.option(
    "--convention",
    type=click.Choice(["exact", "nearest"]),
    default="exact",
    show_default=True,
    help=CONVENTION_HELP + " Default exact: the paper's fusion script's convention.",
)
@click.option("--allow-tiny-far", is_flag=True, help=TINY_FAR_HELP)
@click.option("--media-no-norm", is_flag=True, help="media fusion: L2-normalise images first (insightface N0).")
@click.option("--media-no-detector", is_flag=True, help="media fusion: no detector-score weighting (D0).")
@click.option("--media-no-flip", is_flag=True, help="media fusion: do not add the flipped embedding (F1).")
@mls_exact_option
@_bootstrap
@resume_hint("analyze fusion")
def fusion(
    cache,
    out,
    fusions,
    distances,
    metrics,
    fars,
    convention,
    allow_tiny_far,
    media_no_norm,
    media_no_detector,
    media_no_flip,
    mls_exact,
    bootstrap,
    seed,
    **common,
) -> None:
    """Template fusion: TAR@FAR of each fusion x distance on template pairs, as the paper's fusion script.

    \b
    Example:
      analyze fusion --cache ijbc.zarr --fusion mean --fusion PFE --fusion softmax-0.5
    """
    from analyze.commands import FusionOptions
    from analyze.commands import fusion as run
    from analyze.vocabulary import parse_metric

    try:
        from_metrics = [m if "_" not in m else parse_metric(m)[0] for m in metrics]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metric") from None
    distances = tuple(dict.fromkeys([*distances, *from_metrics]))

    options = _options(
        FusionOptions, common, fusions=fusions, distances=distances, fars=fars, convention=convention,
        allow_tiny_far=allow_tiny_far, media_norm=not media_no_norm, media_detector=not media_no_detector,
        media_flip=not media_no_flip, bootstrap=bootstrap, seed=seed, mls_exact=mls_exact,
    )  # fmt: skip
    _echo(run(cache, out, options))


@cli.command()
@_common
@click.option("--fusion", "fusions", multiple=True, help="Template fusions (default: media, insightface's).")
@click.option("--far", "fars", multiple=True, type=FAR_TYPE, help="FARs in (0, 1] (default 1e-6 ... 1e-1).")
@click.option(
    "--convention",
    type=click.Choice(["exact", "nearest"]),
    default="nearest",
    show_default=True,
    help=CONVENTION_HELP + " Default nearest: this is insightface's ROC table, which reads the ROC point nearest "
    "each FAR, so its numbers match insightface's.",
)
@click.option("--allow-tiny-far", is_flag=True, help=TINY_FAR_HELP)
@_bootstrap
@resume_hint("analyze roc")
def roc(cache, out, fusions, fars, convention, allow_tiny_far, bootstrap, seed, **common) -> None:  # fmt: skip
    """ROC table as insightface prints it (TAR at FAR 1e-6 ... 1e-1) and an ROC plot, per model and fusion.

    \b
    Example:
      analyze roc --cache ijbc.zarr --fusion media --fusion mean
    """
    from analyze.commands import RocOptions
    from analyze.commands import roc as run

    options = _options(
        RocOptions, common, fusions=fusions, fars=fars, convention=convention, allow_tiny_far=allow_tiny_far,
        bootstrap=bootstrap, seed=seed,
    )  # fmt: skip
    _echo(run(cache, out, options))


@cli.command("list")
def list_cmd() -> None:
    """Every distance, pair-uncertainty combination and fusion name, with its meaning.

    Metric strings combine a distance and an uncertainty as DISTANCE_UNCERTAINTY (e.g. cosine_mean,
    MLS_harmonic-sum), exactly as the ScaleFace paper's scripts write them.
    """
    from analyze.vocabulary import describe_all

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


def _register_commands() -> None:
    """The commands defined in their own modules (each a thin click wrapper over a Python entry)."""
    from analyze.accuracy_cli import accuracy
    from analyze.compare import compare
    from analyze.distribution_cli import distribution
    from analyze.identify_cli import identify
    from analyze.scores_cli import scores

    for command in (distribution, accuracy, scores, identify, compare):
        cli.add_command(command)


_register_commands()


def main() -> None:
    """Console entry point: store, name and output errors become one-line messages and exit status 2. The process
    ends by `quick_exit` once the command has returned (or exited)."""
    from analyze.outputs import OutputExistsError

    try:
        run_cli(cli, (StoreError, OutputExistsError, ValueError), "analyze")
    except SystemExit as exc:
        quick_exit(exc.code)
    quick_exit(0)


def quick_exit(code: int | str | None) -> None:
    """Exit without the interpreter's teardown: at IJB-C scale, freeing every module and array one by one takes
    ~1 s of a 10 s command. Every output is closed by then (each file is written and closed within its command),
    the thread and process pools are idle or shut down, and the atexit handlers still run; the streams are
    flushed. `code` as sys.exit takes it (None: 0; a text: printed, status 1)."""
    import atexit

    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
