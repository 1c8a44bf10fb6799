"""`pipelines`: run the paper's experiments end to end (extract, analyses, report), resumable after a crash."""

from __future__ import annotations

import click

from featurestore.cli_main import run_cli
from pipelines.spec import PipelineError, parse_param_value

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Run a pipeline file (configs/pipelines/*.yaml or your own): extract, analyses and an HTML report.

    A step whose outputs are complete and were made from the same inputs and parameters is skipped, so a
    rerun after a crash continues where it stopped. See docs/pipelines.md.

    \b
    Examples:
      pipelines list
      pipelines run demo
      pipelines run ijbc-reject-verification --data-root /data/IJBC \\
          --param scaleface_checkpoint=sf.pt --param pfe_checkpoint=pfe.pt --param magface_checkpoint=mf.pth
      pipelines run my_pipeline.yaml --out runs/mine --param device=cuda
    """


def _params(values: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--param")
        out[key.strip()] = parse_param_value(value)
    return out


@cli.command()
@click.argument("pipeline")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (default: runs/<pipeline name>/). Rerunning into it skips finished steps.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Sets the pipeline's data_root parameter (the dataset folder).",
)
@click.option(
    "--param",
    "param_values",
    multiple=True,
    metavar="KEY=VALUE",
    help="A pipeline parameter (repeatable); VALUE is YAML, so '[1e-4, 1e-3]' is a list.",
)
def run(pipeline: str, out: str | None, data_root: str | None, param_values: tuple[str, ...]) -> None:
    """Run PIPELINE (a built-in name or a YAML file), or continue it where it stopped."""
    from pipelines.runner import run_pipeline

    params = _params(param_values)
    if data_root is not None:
        if "data_root" in params:
            raise click.UsageError("give the data root once: --data-root or --param data_root=..., not both")
        params["data_root"] = data_root
    summary = run_pipeline(pipeline, out, params)
    if summary.report:
        click.echo(f"report: {summary.report}")


@cli.command("list")
def list_cmd() -> None:
    """The built-in pipelines, what each does and its parameters (* = required)."""
    from pipelines.spec import available_pipelines

    for spec in available_pipelines():
        click.echo(f"{spec.name}")
        if spec.description:
            click.echo(f"    {' '.join(spec.description.split())}")
        params = [f"{n}*" if p.required else f"{n}={p.default}" for n, p in spec.params.items()]
        if params:
            click.echo(f"    params: {', '.join(params)}")
        click.echo(f"    steps: {', '.join(f'{s.id} ({s.kind})' for s in spec.steps)}")


def main() -> None:
    """Console entry point: pipeline, store and step errors become one-line messages and exit status 2."""
    from analyze.outputs import OutputExistsError
    from facedata.errors import DataError
    from featurestore.errors import StoreError
    from pipelines.steps import StepError

    run_cli(cli, (PipelineError, StepError, StoreError, DataError, OutputExistsError), "pipelines")


if __name__ == "__main__":  # pragma: no cover
    main()
