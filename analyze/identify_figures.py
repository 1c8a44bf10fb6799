"""Figures of `analyze identify`: TPIR vs FPIR (log x), CMC, and TPIR as uncertain probes are rejected;
one curve per model, fusion and gallery (rejection: the galleries' mean), saved with analyze.figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analyze.figures import DPI, line_styles, safe_name, save_figure_sets


def _label(keys: tuple, names: list[str]) -> str:
    return " ".join(str(v) for k, v in zip(names, keys) if not (k == "fusion" and v == "none"))


def plot_identification(
    curve: pd.DataFrame,
    tpir: pd.DataFrame,
    cmc_curve: pd.DataFrame,
    reject: pd.DataFrame,
    out_dir: Path,
    dataset: str,
    part: tuple[int, int] | None = None,
) -> list[Path]:
    """Save the TPIR-vs-FPIR, CMC and rejection figures (PNG and PDF) under `out_dir` (with `part`, that share of
    them: analyze.figures.save_figure_sets); returns the paths."""
    figures = identification_figures(curve, tpir, cmc_curve, reject, dataset)
    return save_figure_sets([(figures, DPI)], out_dir, part)


def identification_figures(
    curve: pd.DataFrame, tpir: pd.DataFrame, cmc_curve: pd.DataFrame, reject: pd.DataFrame, dataset: str
) -> Iterator[tuple[str, Figure]]:
    """The TPIR-vs-FPIR figure, the CMC figure, and one rejection figure per (threshold mode, FPIR)."""
    head = f"{dataset}: " if dataset else ""
    keys = ["model", "fusion", "gallery"]
    if not curve.empty:
        groups = list(curve.groupby(keys, sort=False))
        fig, ax = plt.subplots(figsize=(7.0, 5.0))
        for (k, sub), style in zip(groups, line_styles(len(groups))):
            sub = sub.sort_values("fpir")
            line = ax.plot(sub["fpir"], sub["tpir"], label=_label(k, keys), **{**style, "marker": None})
            pts = tpir[(tpir[keys] == pd.Series(k, index=keys)).all(axis=1)]
            ax.plot(pts["fpir"], pts["tpir"], "o", color=line[0].get_color(), markersize=5)
            if "tpir_lo" in pts.columns:  # --bootstrap: the 95% interval at each requested FPIR
                t, lo, hi = (pts[c].to_numpy(float) for c in ("tpir", "tpir_lo", "tpir_hi"))
                err = np.vstack([t - lo, hi - t]).clip(min=0)
                ax.errorbar(pts["fpir"], t, yerr=err, fmt="none", ecolor=line[0].get_color(), capsize=3, lw=1)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("False positive identification rate (FPIR, log scale)")
        ax.set_ylabel("True positive identification rate (TPIR)")
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", alpha=0.15)
        ax.legend(loc="lower right", fontsize="small")
        bars = ", bars: bootstrap 95% intervals" if "tpir_lo" in tpir.columns else ""
        ax.set_title(f"{head}1:N identification, TPIR vs FPIR (dots: the requested FPIRs{bars})", fontsize="medium")
        yield safe_name("tpir_fpir", dataset), fig
    if not cmc_curve.empty:
        groups = list(cmc_curve.groupby(keys, sort=False))
        fig, ax = plt.subplots(figsize=(7.0, 5.0))
        for (k, sub), style in zip(groups, line_styles(len(groups))):
            ax.plot(sub["rank"], sub["rate"], label=_label(k, keys), **{**style, "marker": "."})
        ax.set_xlabel("Rank")
        ax.set_ylabel("Identification rate (mated probes with the mate within rank)")
        ax.grid(True, alpha=0.4)
        ax.legend(loc="lower right", fontsize="small")
        ax.set_title(f"{head}1:N identification, CMC", fontsize="medium")
        yield safe_name("cmc", dataset), fig
    if not reject.empty:
        sub_keys = ["model", "fusion", "uncertainty", "gallery"]
        for (mode, fpir), part in reject[reject["gallery"] == "mean"].groupby(["threshold_mode", "fpir"], sort=True):
            groups = list(part.groupby(sub_keys, sort=False))
            fig, ax = plt.subplots(figsize=(7.0, 5.0))
            for (k, sub), style in zip(groups, line_styles(len(groups))):
                ax.plot(sub["rejected_fraction"], sub["tpir"], label=_label(k, sub_keys), **{**style, "marker": None})
            ax.set_xlabel("Fraction of probes rejected (most uncertain first)")
            ax.set_ylabel(f"TPIR at FPIR {fpir:g}, mean of the galleries")
            ax.grid(True, alpha=0.4)
            ax.legend(loc="lower right", fontsize="small")
            ax.set_title(f"{head}identification with rejection ({mode} threshold), FPIR {fpir:g}", fontsize="medium")
            yield safe_name("reject", mode, f"fpir{fpir:g}", dataset), fig
