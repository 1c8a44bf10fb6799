"""The figure options of every `analyze` command that draws (`--label`, `--method`, `--no-titles`, `--style`,
`--size`, `--dpi`) and the `analyze.figures.FigureStyle` they make; shared by analyze/cli.py and compare."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["FIGURE_OPTIONS", "figure_options", "style_from"]


def _size(ctx: click.Context, param: click.Parameter, value: str | None):
    from analyze.figures import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None


def _labels(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
    from analyze.figures import parse_labels

    try:
        return parse_labels(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--label") from None


FIGURE_OPTIONS = [
    click.option("--label", "labels", multiple=True, callback=_labels, metavar="MODEL=NAME",
                 help="Name a model in figure legends (repeatable), e.g. --label pfe_r50=PFE."),
    click.option("--method", "methods", multiple=True, metavar="TEXT",
                 help="Draw only the methods whose legend label contains TEXT (repeatable; default: all)."),
    click.option("--no-titles", is_flag=True, help="Figures without titles (for papers: the caption says it)."),
    click.option("--style", "style_file", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="A matplotlib style sheet (.mplstyle) applied to the figures."),
    click.option("--size", callback=_size, default=None, metavar="W,H", help="Figure size in inches, e.g. 6.4,4.8."),
    click.option("--dpi", type=click.IntRange(30, 1200), default=150, show_default=True, help="PNG resolution."),
]  # fmt: skip
"""Figure options of every command that draws (analyze.figures.FigureStyle)."""


def figure_options(f):
    """Decorate a click command with FIGURE_OPTIONS."""
    for opt in reversed(FIGURE_OPTIONS):
        f = opt(f)
    return f


def style_from(values: dict[str, Any]):
    """The FigureStyle of a command's parsed figure options (popped from `values`, the command's kwargs)."""
    from analyze.figures import FigureStyle

    return FigureStyle(
        labels=values.pop("labels", ()), methods=tuple(values.pop("methods", ())),
        titles=not values.pop("no_titles", False), size=values.pop("size", None), dpi=values.pop("dpi", 150),
        style_file=values.pop("style_file", None),
    )  # fmt: skip
