"""The one entry-point wrapper of the four command lines: expected errors become a one-line
message and exit status 2 instead of a traceback (bad options too: one line naming the option, not click's
usage block); SIGINT/SIGTERM print one line and exit 130/143; every command gets `--version`."""

from __future__ import annotations

import sys

import click

from . import __version__
from .interrupts import Interrupted, raise_on_signals


def version_line(prog_name: str) -> str:
    """`extract (scaleface-toolkit) 0.1.0`: what `--version` prints."""
    return f"{prog_name} (scaleface-toolkit) {__version__}"


def add_version_option(command: click.Command, prog_name: str) -> None:
    """Give `command` an eager `--version` flag that prints `version_line` and exits (once per command)."""
    if any("--version" in getattr(p, "opts", ()) for p in command.params):
        return

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(version_line(prog_name))
            ctx.exit(0)

    command.params.append(
        click.Option(
            ["--version"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=show,
            help="Print the toolkit's version and exit.",
        )
    )


def run_cli(command: click.Command, errors: tuple[type[BaseException], ...], prog_name: str) -> None:
    """Run a click command as `prog_name` (with `--version`); `errors` (bad data, stores, checkpoints, names...)
    print `error: ...`."""
    add_version_option(command, prog_name)
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
