"""`analyze compare DIR...`: overlay the results of several runs or stores in one set of figures.

Each DIR is an output folder of `analyze reject` and/or `analyze roc` (a pipeline step's folder works too).
Their tables are read back (nothing is recomputed), each run named by its folder (the shortest path part
that tells them apart, as `analyze distribution` names stores), and drawn with the figures of
`analyze.figures`: reject curves per FAR (AUC in the legend) and ROC curves, one colour per run and model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd

from analyze.commands import CommandError, command_errors, dataset_labels
from analyze.figure_options import figure_options, style_from
from analyze.figures import FigureStyle, plot_reject_comparison, plot_roc
from analyze.outputs import claim_out_dir, write_json, write_table

__all__ = ["CompareOptions", "compare", "run_compare"]

TABLES = {"reject": "reject.parquet", "roc": "roc_curve.parquet"}
"""What a compared folder may hold (at least one of them)."""


@dataclass(frozen=True)
class CompareOptions:
    """What `analyze compare` draws and where."""

    force: bool = False
    style: FigureStyle | None = None


def _read(dirs: list[Path]) -> dict[str, pd.DataFrame]:
    """Every compared folder's tables, the model column prefixed with the run's name (`run/model`)."""
    names = dataset_labels(["run"] * len(dirs), dirs) if len(dirs) > 1 else ["run"]
    names = [n.removeprefix("run[").removesuffix("]") if n != "run" else d.name for n, d in zip(names, dirs)]
    names = [n.removesuffix(".analysis") for n in names]
    found: dict[str, list[pd.DataFrame]] = {k: [] for k in TABLES}
    for name, d in zip(names, dirs):
        if not d.is_dir():
            raise CommandError(f"{d}: not a folder", "DIR")
        tables = {k: d / f for k, f in TABLES.items() if (d / f).is_file()}
        if not tables:
            raise CommandError(
                f"{d}: holds neither reject.parquet nor roc_curve.parquet (not an analyze output)", "DIR"
            )
        for k, path in tables.items():
            df = pd.read_parquet(path)
            df.insert(0, "run", name)
            df["model"] = name + "/" + df["model"].astype(str)
            df["dataset"] = None  # runs of different stores go on one axis
            found[k].append(df)
    return {k: pd.concat(v, ignore_index=True) for k, v in found.items() if v}


def run_compare(dirs: list[str | Path], out: str | Path, options: CompareOptions) -> dict:
    """Overlay the reject and ROC results of `dirs` into `out` (figures/ plus the combined tables)."""
    paths = [Path(d) for d in dirs]
    if len(paths) < 1:
        raise CommandError("give at least one results folder", "DIR")
    tables = _read(paths)
    figures: list[Path] = []
    with claim_out_dir(out, options.force, "analyze compare", paths) as owned:
        for name, df in tables.items():
            owned.add(*write_table(df, owned.path, f"compare_{name}"))
        if "reject" in tables:
            figures += plot_reject_comparison(tables["reject"], owned.path / "figures", style=options.style)
        if "roc" in tables:
            figures += plot_roc(tables["roc"], owned.path / "figures", style=options.style)
        summary = {"runs": [str(p) for p in paths], "tables": sorted(tables), "figures": [p.name for p in figures]}
        owned.add(write_json(summary, owned.path / "summary.json"))
        owned.finish()
    return summary | {"out": str(owned.path)}


@click.command("compare")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="compare", show_default=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Replace an output folder this tool wrote.")
@figure_options
def compare(dirs, out, force, **figure) -> None:
    """Overlay results of several runs or stores: reject curves per FAR and ROC, AUC in the legend.

    Each DIR is an `analyze reject` or `analyze roc` output folder (e.g. run1.analysis/reject); runs are named
    by the shortest part of their path that tells them apart, models as RUN/MODEL (--label RUN/MODEL=Name).

    \b
    Example:
      analyze compare run1.analysis/reject run2.analysis/reject --out compare --label run1/pfe=PFE
    """
    with command_errors():
        summary = run_compare(list(dirs), out, CompareOptions(force=force, style=style_from(figure)))
    click.echo(f"compared {len(dirs)} runs ({', '.join(summary['tables'])}): {len(summary['figures'])} figure files")
    click.echo(f"wrote {summary['out']}")
