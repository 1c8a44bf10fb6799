"""`analyze distribution`: per-image uncertainty tables, summaries, shared-bin histograms and
galleries for one or several feature stores (datasets) and their models; the click command over
`analyze.commands.distribution`."""

from __future__ import annotations

import click

from analyze.commands import dataset_labels
from analyze.outputs import resume_hint

__all__ = ["dataset_labels", "distribution"]


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
    from analyze.commands import DistributionOptions, command_errors
    from analyze.commands import distribution as run

    options = DistributionOptions(
        models=models, data_roots=data_roots, gallery_size=gallery_size, bins=bins, force=force
    )  # fmt: skip
    with command_errors():
        result = run(list(caches), out, options)
    click.echo(result.text)
    for note in result.notes:
        click.echo(note, err=True)
    click.echo(result.footer)
