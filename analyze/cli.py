"""`analyze`: questions asked of a feature store on CPUs, never touching a model (no torch)."""

from __future__ import annotations

import sys

import click

from featurestore.describe import describe
from featurestore.errors import StoreError
from featurestore.store import FeatureStore

CACHE_HELP = "Feature store written by `extract` (NAME.zarr directory or NAME.h5 file)."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Analyse a feature store: store contents, pair scores, ROC, reject verification, fusion.

    \b
    Examples:
      analyze info --cache ijbc.zarr
    """


@cli.command()
@click.option("--cache", "cache", required=True, type=click.Path(), help=CACHE_HELP)
def info(cache: str) -> None:
    """Print what a store holds: dataset, models and outputs, counts, progress, failures, provenance.

    \b
    Example:
      analyze info --cache ijbc.zarr
    """
    with FeatureStore.open(cache) as store:
        click.echo(describe(store))


def main() -> None:
    """Console entry point: store errors become one-line messages and exit status 2."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
