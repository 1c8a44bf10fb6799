"""The one entry-point wrapper of the four command lines: expected errors become a one-line
message and exit status 2 instead of a traceback; Ctrl-C exits 130."""

from __future__ import annotations

import sys

import click


def run_cli(command: click.Command, errors: tuple[type[BaseException], ...]) -> None:
    """Run a click command; `errors` (bad data, stores, checkpoints, names...) print `error: ...`."""
    try:
        command(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except errors as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
