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
@resume_hint("analyze identify")
def identify(
    cache, models, protocol, fusions, fpirs, ranks, allow_tiny_far, no_reject, out, force, partial, no_figures
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
    )
    res = run_identify(cache, out, options)
    s = res.summary
    for key, d in s["fpirs_dropped"].items():
        fp = ", ".join(f"{f:g}" for f in d["fpirs"])
        click.echo(
            f"note: {key}: default FPIR {fp} not reported: below 1/n_nonmated = {d['smallest_fpir']:.3g} "
            f"(n_nonmated = {d['n_nonmated']:,}); --allow-tiny-far reports such FPIRs anyway",
            err=True,
        )
    for key, d in s["templates_dropped"].items():
        click.echo(f"{key}: templates without usable images left out: {d}", err=True)
    for note in s["notes"]:
        click.echo(f"note: {note}", err=True)
    if not res.tpir.empty:
        t = res.tpir.pivot_table(index=["model", "fusion", "gallery"], columns="fpir", values="tpir", sort=False)
        t.columns = [f"FPIR={c:g}" for c in t.columns]
        click.echo(f"TPIR@FPIR ({s['params']['convention']} threshold rule):")
        click.echo(t.to_string(float_format=lambda v: f"{v:.4f}"))
    c = res.cmc.pivot_table(index=["model", "fusion", "gallery"], columns="rank", values="rate", sort=False)
    c.columns = [f"rank {r}" for r in c.columns]
    click.echo("CMC:")
    click.echo(c.to_string(float_format=lambda v: f"{v:.4f}"))
    click.echo(f"wrote {res.out} in {s['seconds']:.1f} s")
