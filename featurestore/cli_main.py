"""The one entry-point wrapper of the four command lines: expected errors become a one-line
message and exit status 2 instead of a traceback (bad options too: one line naming the option, not click's
usage block); SIGINT/SIGTERM print one line and exit 130/143."""

from __future__ import annotations

import sys

import click

from .interrupts import Interrupted, raise_on_signals


def run_cli(command: click.Command, errors: tuple[type[BaseException], ...], prog_name: str) -> None:
    """Run a click command as `prog_name`; `errors` (bad data, stores, checkpoints, names...) print `error: ...`."""
    try:
        with raise_on_signals():
            command(standalone_mode=False, prog_name=prog_name)
    except Interrupted as exc:
        detail = exc.message or "nothing was marked done after the interruption"
        click.echo(f"interrupted ({exc.signal_name}): {detail}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # click's own prompts (EOF at a prompt)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # a bad option value or usage: one line, not click's usage block
        ctx = exc.ctx
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except errors as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
