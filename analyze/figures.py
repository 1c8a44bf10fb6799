"""Figures of `analyze` in the style of the ScaleFace paper: reject-verification curves, method
comparisons and ROC curves, each saved as PNG (150 dpi) and PDF with file-system-safe names.

Every `plot_*` function has a `*_figures` twin that yields `(stem, Figure)` without saving, so
callers and tests can inspect the Axes; `plot_*` saves each figure and closes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (and work on headless machines)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analyze.curves import auc  # noqa: E402
from analyze.tables import REJECT_KEY_COLUMNS, method_label  # noqa: E402
from analyze.tables import present as _present  # noqa: E402

__all__ = [
    "DPI",
    "REJECT_COLUMNS",
    "ROC_COLUMNS",
    "line_styles",
    "method_label",
    "det_figures",
    "plot_det",
    "plot_reject_comparison",
    "plot_reject_curves",
    "plot_roc",
    "reject_comparison_figures",
    "reject_curve_figures",
    "roc_figures",
    "safe_name",
    "save_figure",
]

DPI = 150
REJECT_COLUMNS = REJECT_KEY_COLUMNS
"""Columns a reject table must have (the tidy table's contract, analyze.tables)."""
ROC_COLUMNS = ("model", "level", "fusion", "distance", "fpr", "tpr")
ROC_FPR_RANGE = (1e-6, 1.0)

_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(*parts: Any) -> str:
    """A file stem from `parts`: runs of characters outside [A-Za-z0-9._-] become '_', joined by '_'."""
    words = [_UNSAFE.sub("_", str(p)).strip("_") for p in parts if _present(p)]
    stem = "_".join(w for w in words if w) or "figure"
    return stem.lstrip(".") or "figure"


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write `fig` as `<stem>.png` (DPI 150) and `<stem>.pdf` under `out_dir`, close it, return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(stem)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    try:
        for p in paths:
            fig.savefig(p, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return paths


def line_styles(n: int) -> list[dict[str, Any]]:
    """`n` distinct line styles: the 10-colour tab10 cycle first, then a new dash pattern and marker
    for every further 10, so up to 40 curves stay distinguishable in print and on screen."""
    colours = plt.get_cmap("tab10").colors
    out = []
    for i in range(n):
        block = i // len(colours)
        out.append(
            {
                "color": colours[i % len(colours)],
                "linestyle": _LINESTYLES[block % len(_LINESTYLES)],
                "marker": _MARKERS[block % len(_MARKERS)] if block else None,
                "markevery": 0.1 if block else None,
                "markersize": 4,
            }
        )
    return out


def _check_columns(df: pd.DataFrame, required: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; it has {list(df.columns)}")


def _groups(df: pd.DataFrame, keys: list[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """Groups of `df` by `keys` (NaN is a group of its own), keys as a dict, in sorted key order."""
    keys = [k for k in keys if k in df.columns]
    if not keys:
        yield {}, df
        return
    for values, sub in df.groupby(keys, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values)), sub


def _far_text(far: float) -> str:
    return f"{far:.0e}".replace("e-0", "e-").replace("e+0", "e+") if far < 1e-2 else f"{far:g}"


def _pct_axis(ax: Any, which: str) -> None:
    from matplotlib.ticker import PercentFormatter

    fmt = PercentFormatter(xmax=1.0, decimals=0)
    (ax.xaxis if which == "x" else ax.yaxis).set_major_formatter(fmt)


def _context(keys: dict[str, Any], names: Iterable[str]) -> str:
    """`name value` for each present key, joined with commas, for titles."""
    labels = {
        "dataset": "",
        "protocol": "protocol",
        "level": "level",
        "fusion": "fusion",
        "threshold_mode": "threshold",
        "convention": "TAR@FAR convention",
    }
    parts = []
    for name in names:
        value = keys.get(name)
        if _present(value):
            parts.append(f"{labels.get(name, name)} {value}".strip())
    return ", ".join(parts)


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    """Legend area under TAR over rejected fraction: `auc` (as auc.csv) on the sorted fractions; NaN for 1 point."""
    order = np.argsort(x, kind="stable")
    return (
        auc(np.asarray(x, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]) if len(x) > 1 else math.nan
    )


def _style_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)


def _method_legend(ax: Any, n: int) -> None:
    """Legend inside the axes for a few curves; beside them, in columns of at most 12, for many."""
    if n <= 8:
        ax.legend(loc="lower right", fontsize="small")
    else:
        ax.legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small", ncol=math.ceil(n / 12), borderaxespad=0.0
        )


# ---- reject curves, one method per figure ---------------------------------------------------------

_CURVE_KEYS = ["dataset", *REJECT_KEY_COLUMNS[: REJECT_KEY_COLUMNS.index("far")]]
"""What identifies one curve: the dataset and every method/convention column before `far`."""


def reject_curve_figures(
    df: pd.DataFrame, dataset: str = "", reference: pd.DataFrame | None = None
) -> Iterator[tuple[str, Figure]]:
    """One figure per method (model, level, fusion, distance, uncertainty, threshold mode; protocol and
    convention too when a table mixes them): TAR against the rejected fraction, one curve per FAR; with
    `reference` (rows with uncertainty oracle / random) each FAR's oracle (dashed) and random (dotted) too."""
    _check_columns(df, REJECT_COLUMNS, "reject table")
    for keys, sub in _groups(df, _CURVE_KEYS):
        keys.setdefault("dataset", dataset)
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        fars = sorted(sub["far"].unique())
        refs = _references_of(reference, keys)
        for far, style in zip(fars, line_styles(len(fars))):
            curve = sub[sub["far"] == far].sort_values("rejected_fraction", kind="stable")
            x, y = curve["rejected_fraction"].to_numpy(float), curve["tar"].to_numpy(float)
            ax.plot(x, y, label=f"TAR@FAR={_far_text(far)} (AUC {_auc(x, y):.4f})", **style)
            _band(ax, x, curve, "tar", style["color"])
            for ref, ref_curve in refs:
                _reference_line(ax, ref, ref_curve[ref_curve["far"] == far], style["color"], far == fars[0])
        _style_axes(ax, "Rejected fraction of pairs", "TAR")
        _pct_axis(ax, "x")
        _pct_axis(ax, "y")
        ax.legend(loc="best", fontsize="small")
        method = method_label(keys["model"], keys["distance"], keys["uncertainty"])
        head = f"{keys['dataset']}: " if _present(keys["dataset"]) else ""
        ax.set_title(
            f"{head}reject verification, {method}\n"
            + _context(keys, ["level", "protocol", "fusion", "threshold_mode", "convention"]),
            fontsize="medium",
        )
        stem = safe_name("reject", *(keys.get(k) for k in _CURVE_KEYS))
        yield stem, fig


def plot_reject_curves(
    df: pd.DataFrame, out_dir: str | Path, dataset: str = "", reference: pd.DataFrame | None = None
) -> list[Path]:
    """Save `reject_curve_figures` (PNG and PDF per method) under `out_dir`; returns the paths."""
    figures = reject_curve_figures(df, dataset, reference)
    return [p for stem, fig in figures for p in save_figure(fig, out_dir, stem)]


REFERENCE_STYLES = {"oracle": "--", "random": ":"}
"""Line style of each reference curve (analyze.reject.REFERENCE_ORDERS), named in the legend."""


def _references_of(reference: pd.DataFrame | None, keys: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """The reference curves (oracle, random) measured like the method `keys` (same model, level, protocol,
    fusion, distance, threshold mode, convention)."""
    if reference is None or reference.empty:
        return []
    mask = np.ones(len(reference), dtype=bool)
    for k in ("model", "level", "protocol", "fusion", "distance", "threshold_mode", "convention"):
        if k in keys and k in reference.columns and _present(keys[k]):
            mask &= (reference[k] == keys[k]).to_numpy()
    sub = reference[mask]
    return [(ref, sub[sub["uncertainty"] == ref]) for ref in REFERENCE_STYLES if (sub["uncertainty"] == ref).any()]


def _reference_line(ax: Any, ref: str, curve: pd.DataFrame, color: Any, label: bool, name: str = "") -> None:
    """One reference curve, thin, in the method's colour and the reference's line style; labelled once."""
    curve = curve.sort_values("rejected_fraction", kind="stable")
    x, y = curve["rejected_fraction"].to_numpy(float), curve["tar"].to_numpy(float)
    text = f"{ref} reference{name} (AUC {_auc(x, y):.4f})" if label else None
    ax.plot(x, y, color=color, linestyle=REFERENCE_STYLES[ref], linewidth=0.9, alpha=0.8, label=text)


# ---- comparison of methods at one FAR (the paper's benchmark figure) -----------------------------

_COMPARE_KEYS = ["dataset", "level", "protocol", "far", "threshold_mode", "convention"]
_METHOD_KEYS = ["model", "distance", "uncertainty", "fusion"]


def reject_comparison_figures(
    df: pd.DataFrame, dataset: str = "", reference: pd.DataFrame | None = None
) -> Iterator[tuple[str, Figure]]:
    """One figure per (level, FAR, threshold mode; protocol and convention when mixed): every method's
    TAR against rejected fraction on one axis, legend `model: distance_uncertainty [fusion]` with AUC; with
    `reference`, each (model, distance, fusion)'s oracle (dashed) and random (dotted) curves in grey."""
    _check_columns(df, REJECT_COLUMNS, "reject table")
    for keys, sub in _groups(df, _COMPARE_KEYS):
        keys.setdefault("dataset", dataset)
        methods = list(_groups(sub, _METHOD_KEYS))
        refs = []
        ref_keys = {k: keys[k] for k in ("level", "protocol", "threshold_mode", "convention", "far") if k in keys}
        for bases, _ in _groups(sub, ["model", "distance", "fusion"]) if reference is not None else ():
            name = f", {method_label(bases['model'], bases['distance'], fusion=bases.get('fusion'))}"
            refs += [(ref, curve, name) for ref, curve in _references_of(reference, {**ref_keys, **bases})]
        fig, ax = plt.subplots(figsize=(7.5, 5.0) if len(methods) + len(refs) <= 8 else (9.5, 5.5))
        for (mkeys, curve), style in zip(methods, line_styles(len(methods))):
            curve = curve.sort_values("rejected_fraction", kind="stable")
            x, y = curve["rejected_fraction"].to_numpy(float), curve["tar"].to_numpy(float)
            label = method_label(mkeys["model"], mkeys["distance"], mkeys["uncertainty"], mkeys.get("fusion"))
            ax.plot(x, y, label=f"{label} (AUC {_auc(x, y):.4f})", **style)
            _band(ax, x, curve, "tar", style["color"])
        for ref, curve, name in refs:
            _reference_line(ax, ref, curve, "grey", True, name)
        _style_axes(ax, "Rejected fraction of pairs", f"TAR@FAR={_far_text(float(keys['far']))}")
        _pct_axis(ax, "x")
        _pct_axis(ax, "y")
        _method_legend(ax, len(methods) + len(refs))
        head = f"{keys['dataset']}: " if _present(keys["dataset"]) else ""
        ax.set_title(
            f"{head}TAR@FAR={_far_text(float(keys['far']))} under rejection\n"
            + _context(keys, ["level", "protocol", "threshold_mode", "convention"]),
            fontsize="medium",
        )
        stem = safe_name("compare", *(keys.get(k) for k in _COMPARE_KEYS if k != "far"), f"far{keys['far']:g}")
        yield stem, fig


def plot_reject_comparison(
    df: pd.DataFrame, out_dir: str | Path, dataset: str = "", reference: pd.DataFrame | None = None
) -> list[Path]:
    """Save `reject_comparison_figures` (PNG and PDF per level, FAR, threshold mode); returns the paths."""
    figures = reject_comparison_figures(df, dataset, reference)
    return [p for stem, fig in figures for p in save_figure(fig, out_dir, stem)]


# ---- ROC ----------------------------------------------------------------------------------------------


def roc_figures(
    roc_df: pd.DataFrame, dataset: str = "", intervals: pd.DataFrame | None = None
) -> Iterator[tuple[str, Figure]]:
    """One log-x ROC figure per level (and protocol when present), FPR 1e-6..1, one curve per method;
    points with FPR 0 cannot sit on a log axis and are left out. With `intervals` (roc_interval: model,
    fusion, far, tar, tar_lo, tar_hi) each method's bootstrap interval at each FAR as an error bar."""
    _check_columns(roc_df, ROC_COLUMNS, "ROC table")
    for keys, sub in _groups(roc_df, ["dataset", "level", "protocol"]):
        keys.setdefault("dataset", dataset)
        methods = list(_groups(sub, ["model", "distance", "uncertainty", "fusion"]))
        fig, ax = plt.subplots(figsize=(7.0, 5.0) if len(methods) <= 8 else (9.5, 5.5))
        for (mkeys, curve), style in zip(methods, line_styles(len(methods))):
            curve = curve.sort_values("fpr", kind="stable")
            fpr, tpr = curve["fpr"].to_numpy(float), curve["tpr"].to_numpy(float)
            keep = fpr > 0
            label = method_label(mkeys["model"], mkeys["distance"], mkeys.get("uncertainty"), mkeys.get("fusion"))
            style = {**style, "marker": None}
            ax.plot(fpr[keep], tpr[keep], label=label, **style)
            if intervals is not None:
                ci = intervals[(intervals["model"] == mkeys["model"]) & (intervals["fusion"] == mkeys.get("fusion"))]
                if not ci.empty:
                    tar, lo, hi = (ci[c].to_numpy(float) for c in ("tar", "tar_lo", "tar_hi"))
                    err = np.vstack([tar - lo, hi - tar]).clip(min=0)
                    ax.errorbar(ci["far"], tar, yerr=err, fmt="none", ecolor=style["color"], capsize=3, lw=1)
        ax.set_xscale("log")
        ax.set_xlim(*ROC_FPR_RANGE)
        _style_axes(ax, "False accept rate (FPR, log scale)", "True accept rate (TPR)")
        _pct_axis(ax, "y")
        _method_legend(ax, len(methods))
        head = f"{keys['dataset']}: " if _present(keys["dataset"]) else ""
        ax.set_title(f"{head}ROC\n" + _context(keys, ["level", "protocol"]), fontsize="medium")
        yield safe_name("roc", keys.get("dataset"), keys.get("level"), keys.get("protocol")), fig


def plot_roc(
    roc_df: pd.DataFrame, out_dir: str | Path, dataset: str = "", intervals: pd.DataFrame | None = None
) -> list[Path]:
    """Save `roc_figures` (PNG and PDF per level) under `out_dir`; returns the paths."""
    return [p for stem, fig in roc_figures(roc_df, dataset, intervals) for p in save_figure(fig, out_dir, stem)]


def _band(ax: Any, x: np.ndarray, rows: pd.DataFrame, value: str, color: Any) -> None:
    """The bootstrap interval of `value` (columns `<value>_lo`, `<value>_hi`, when the table has them) as a
    translucent band under its curve."""
    lo, hi = f"{value}_lo", f"{value}_hi"
    if lo in rows.columns and hi in rows.columns:
        ax.fill_between(x, rows[lo].to_numpy(float), rows[hi].to_numpy(float), color=color, alpha=0.18, lw=0)


# ---- template fusion -----------------------------------------------------------------------------------

FUSION_COLUMNS = ("model", "fusion", "distance", "far", "tar")


def fusion_figures(fusion_df: pd.DataFrame, dataset: str = "") -> Iterator[tuple[str, Figure]]:
    """One figure per protocol and distance: TAR at each FAR (log x), one line per model and fusion."""
    _check_columns(fusion_df, FUSION_COLUMNS, "fusion table")
    for keys, sub in _groups(fusion_df, ["protocol", "distance", "convention"]):
        methods = list(_groups(sub, ["model", "fusion"]))
        fig, ax = plt.subplots(figsize=(7.0, 5.0) if len(methods) <= 8 else (9.5, 5.5))
        for (mkeys, rows), style in zip(methods, line_styles(len(methods))):
            rows = rows.sort_values("far", kind="stable")
            label = method_label(mkeys["model"], keys["distance"], fusion=mkeys["fusion"])
            ax.plot(rows["far"].to_numpy(float), rows["tar"].to_numpy(float), label=label, **style)
            _band(ax, rows["far"].to_numpy(float), rows, "tar", style["color"])
        ax.set_xscale("log")
        _style_axes(ax, "False accept rate (log scale)", "True accept rate at that FAR")
        _pct_axis(ax, "y")
        _method_legend(ax, len(methods))
        head = f"{dataset}: " if dataset else ""
        ax.set_title(f"{head}TAR@FAR per template fusion\n" + _context(keys, ["protocol", "distance", "convention"]),
                     fontsize="medium")  # fmt: skip
        yield safe_name("fusion", dataset, keys.get("protocol"), keys.get("distance"), keys.get("convention")), fig


def plot_fusion(fusion_df: pd.DataFrame, out_dir: str | Path, dataset: str = "") -> list[Path]:
    """Save `fusion_figures` (PNG and PDF per protocol and distance) under `out_dir`; returns the paths."""
    return [p for stem, fig in fusion_figures(fusion_df, dataset) for p in save_figure(fig, out_dir, stem)]


# ---- DET ------------------------------------------------------------------------------------------------

DET_COLUMNS = ("model", "fusion", "fmr", "fnmr")


def det_figures(
    det_df: pd.DataFrame, dataset: str = "", eer: pd.DataFrame | None = None
) -> Iterator[tuple[str, Figure]]:
    """One DET figure: FNMR against FMR, both log, one curve per (model, fusion), the EER in the legend when
    `eer` (the eer table) is given; points with a zero rate cannot sit on a log axis and are left out."""
    _check_columns(det_df, DET_COLUMNS, "DET table")
    eers = {} if eer is None else {(r.model, r.fusion): r.eer for r in eer.itertuples()}
    methods = list(_groups(det_df, ["model", "fusion"]))
    fig, ax = plt.subplots(figsize=(7.0, 5.0) if len(methods) <= 8 else (9.5, 5.5))
    for (mkeys, curve), style in zip(methods, line_styles(len(methods))):
        curve = curve.sort_values("fmr", kind="stable")
        fmr, fnmr = curve["fmr"].to_numpy(float), curve["fnmr"].to_numpy(float)
        keep = (fmr > 0) & (fnmr > 0)
        label = method_label(mkeys["model"], "cosine", fusion=mkeys.get("fusion"))
        value = eers.get((mkeys["model"], mkeys.get("fusion")))
        label += f" (EER {value:.4f})" if value is not None else ""
        ax.plot(fmr[keep], fnmr[keep], label=label, **{**style, "marker": None})
    ax.set_xscale("log")
    ax.set_yscale("log")
    _style_axes(ax, "False match rate (FMR, log scale)", "False non-match rate (FNMR, log scale)")
    if len(methods) <= 8:
        ax.legend(loc="upper right", fontsize="small")
    else:
        _method_legend(ax, len(methods))
    head = f"{dataset}: " if dataset else ""
    ax.set_title(f"{head}DET", fontsize="medium")
    yield safe_name("det", dataset), fig


def plot_det(
    det_df: pd.DataFrame, out_dir: str | Path, dataset: str = "", eer: pd.DataFrame | None = None
) -> list[Path]:
    """Save `det_figures` (PNG and PDF) under `out_dir`; returns the paths."""
    return [p for stem, fig in det_figures(det_df, dataset, eer) for p in save_figure(fig, out_dir, stem)]
