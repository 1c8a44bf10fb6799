"""`analyze identify`: a thin click wrapper over analyze.identify.run_identify."""

from __future__ import annotations

import click

from analyze.outputs import resume_hint

FPIR_TYPE = click.FloatRange(0, 1, min_open=True)


@click.command("identify")
@click.option("--cache", required=True, type=click.Path(), help="Feature store written by `extract`.")
@click.option("--model", "models", multiple=True, help="Model in the store (repeatable; default: all).")
@click.option("--protocol", default=None, help="Identification (1:N) protocol in the store (default: its first).")
@click.option("--fusion", "fusions", multiple=True, help="Template fusion (repeatable; default: media, insightface's).")
@click.option("--fpir", "fpirs", multiple=True, type=FPIR_TYPE, help="FPIRs in (0, 1] (default 1e-2 and 1e-1).")
@click.option("--rank", "ranks", multiple=True, type=click.IntRange(min=1), help="CMC ranks (default 1, 5, 10).")
@click.option(
    "--allow-tiny-far",
    is_flag=True,
    help="Accept FPIRs below 1/n_nonmated (k = round(FPIR x n) may be 0). Without it such FPIRs are refused "
    "when given, and dropped with a note when they are defaults.",
)
@click.option("--no-reject", is_flag=True, help="No identification-with-rejection curves.")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: beside the store)."
)
@click.option("--force", is_flag=True, help="Replace an output folder this tool wrote (only the files it lists).")
@click.option("--partial", is_flag=True, help="Analyse the finished rows of an incomplete store.")
@click.option("--no-figures", is_flag=True, help="Tables only.")
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Replicates of a probe-subject bootstrap: tpir_lo/tpir_hi (95% percentile) in tpir (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap's draws.")
@resume_hint("analyze identify")
def identify(
    cache, models, protocol, fusions, fpirs, ranks, allow_tiny_far, no_reject, out, force, partial, no_figures,
    bootstrap, seed,
) -> None:  # fmt: skip
    """1:N identification (IJB-B/C): TPIR@FPIR and CMC per gallery and their mean, never one merged gallery.

    Writes tpir.parquet/.csv, cmc.parquet/.csv, reject.parquet/.csv and reject_auc (TPIR as the most
    uncertain probes are rejected), summary.json and figures.

    \b
    Examples:
      analyze identify --cache ijbc.zarr
      analyze identify --cache ijbc.zarr --model scaleface --fpir 0.05 --fpir 0.1 --rank 1 --rank 20
    """
    from analyze.identify import IdentifyOptions, run_identify

    options = IdentifyOptions(
        models=tuple(models),
        protocol=protocol,
        fusions=tuple(fusions) or ("media",),
        fpirs=tuple(fpirs),
        ranks=tuple(ranks),
        allow_tiny_far=allow_tiny_far,
        partial=partial,
        reject=not no_reject,
        figures=not no_figures,
        force=force,
        bootstrap=bootstrap,
        seed=seed,
    )
    from analyze.identify import result_lines

    notes, lines = result_lines(run_identify(cache, out, options))
    for note in notes:
        click.echo(note, err=True)
    for line in lines:
        click.echo(line)
