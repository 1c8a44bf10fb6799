"""Figures of `analyze` in the style of the ScaleFace paper: reject-verification curves, method
comparisons and ROC curves, each saved as PNG (150 dpi) and PDF with file-system-safe names.

Every `plot_*` function has a `*_figures` twin that yields `(stem, Figure)` without saving, so
callers and tests can inspect the Axes; `plot_*` saves each figure and closes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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


def save_figure(fig: Figure, out_dir: str | Path, stem: str, dpi: int = DPI) -> list[Path]:
    """Write `fig` as `<stem>.png` (at `dpi`, default 150) and `<stem>.pdf` under `out_dir`, close it, return both
    paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(stem)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    try:
        bbox = _tight_bbox(fig, dpi)  # one layout for both files
        for path in paths:
            fig.savefig(path, dpi=dpi, bbox_inches=bbox)
    finally:
        plt.close(fig)
    return paths


FigureSet = tuple[Iterable[tuple[str, Figure]], int]
"""Figures to save, as (stem, figure) pairs, and the dpi of their PNGs."""


def save_figure_sets(sets: Sequence[FigureSet], out_dir: str | Path, part: tuple[int, int] | None = None) -> list[Path]:
    """Save the figures of `sets` under `out_dir`, numbered in order across the sets. With `part` (k, n) only those
    numbered k modulo n; the others are closed unsaved. n processes given the parts 0..n-1 share one command's
    figures: matplotlib holds the GIL while it renders, so a second process is the way to use a second core."""
    paths: list[Path] = []
    index = 0
    for figures, dpi in sets:
        for stem, fig in figures:
            if part is None or index % part[1] == part[0]:
                paths += save_figure(fig, out_dir, stem, dpi)
            else:
                plt.close(fig)
            index += 1
    return paths


def _tight_bbox(fig: Figure, dpi: float) -> Any:
    """The bounding box `bbox_inches="tight"` would crop to (the figure's artists at `dpi`, padded by
    savefig.pad_inches), computed once with one layout pass and reused by the PNG and the PDF: "tight" makes
    every savefig lay the whole figure out again first (~0.3 s per file for a log-log figure)."""
    with matplotlib.cbook._setattr_cm(fig, dpi=dpi):
        renderer = fig.canvas.get_renderer()
        fig.draw_without_rendering()
        bbox = fig.get_tightbbox(renderer)
    pad = plt.rcParams["savefig.pad_inches"]
    return bbox.padded(pad, pad)


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


@dataclass(frozen=True)
class FigureStyle:
    """How figures look (issue 12 item 5): display names per model (`--label model=Name`), the methods drawn
    (substrings of the method label; empty: all), titles on or off, size in inches, dpi and a matplotlib style
    sheet. The default reproduces the built-in look."""

    labels: tuple[tuple[str, str], ...] = ()
    methods: tuple[str, ...] = ()
    titles: bool = True
    size: tuple[float, float] | None = None
    dpi: int = DPI
    style_file: str | None = None

    def name(self, model: Any) -> str:
        """The display name of `model` (its --label, else its store name)."""
        return dict(self.labels).get(str(model), str(model))

    def wants(self, label: str) -> bool:
        """Whether a method (its legend label) is drawn: every one unless --method names substrings."""
        return not self.methods or any(m in label for m in self.methods)


DEFAULT_STYLE = FigureStyle()


def model_colours(models: Iterable[Any]) -> dict[str, Any]:
    """One colour per model, stable across figures: tab10 in the order of the sorted model names."""
    colours = plt.get_cmap("tab10").colors
    return {m: colours[i % len(colours)] for i, m in enumerate(sorted({str(m) for m in models}))}


def parse_labels(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`model=Name` pairs (--label); ValueError naming the bad one."""
    out = []
    for v in values:
        model, eq, name = str(v).partition("=")
        if not eq or not model.strip() or not name.strip():
            raise ValueError(f"--label {v!r}: expected MODEL=NAME, e.g. pfe_r50=PFE")
        out.append((model.strip(), name.strip()))
    return tuple(out)


def parse_size(text: str) -> tuple[float, float]:
    """`W,H` in inches (--size); ValueError for anything else."""
    try:
        w, h = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected W,H in inches, e.g. 6.4,4.8") from None
    if not (0 < w <= 100 and 0 < h <= 100):
        raise ValueError(f"--size {text!r}: width and height must be in (0, 100] inches")
    return w, h


def _new_figure(style: FigureStyle, default: tuple[float, float]) -> tuple[Figure, Any]:
    if style.style_file:
        with plt.style.context(style.style_file):
            fig, ax = plt.subplots(figsize=style.size or default)
    else:
        fig, ax = plt.subplots(figsize=style.size or default)
    return fig, ax


def _title(ax: Any, style: FigureStyle, text: str) -> None:
    if style.titles:
        ax.set_title(text, fontsize="medium")


def _shade(colour: Any, level: int) -> Any:
    """`colour` lightened toward white by `level` steps (for a model's 5th and later metrics)."""
    if not level:
        return colour
    t = min(0.3 * level, 0.75)
    return tuple(c + (1 - c) * t for c in colour[:3])


def _draw_methods(ax: Any, curves: list[tuple[str, str, str, np.ndarray, np.ndarray, str]]) -> int:
    """Draw (model, metric, label, x, y, suffix) curves: colour by model, line style by metric (beyond the four
    line styles a lighter shade of the model's colour). A curve identical to one drawn before (same x and y)
    is drawn on top with open markers, so it does not hide, and its legend says `(= the other)`."""
    colours = model_colours(c[0] for c in curves)
    metrics = [c[1] for c in curves]
    drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
    for model, metric, label, x, y, suffix in curves:
        i = metric_index(metric, metrics)
        same = next(
            (lab for lab, dx, dy in drawn if len(dx) == len(x) and np.array_equal(dx, x, equal_nan=True)
             and np.array_equal(dy, y, equal_nan=True)),
            None,
        )  # fmt: skip
        extra = {"marker": "o", "markerfacecolor": "none", "markevery": 0.08, "markersize": 5} if same else {}
        ax.plot(x, y, color=_shade(colours[model], i // len(_LINESTYLES)), linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                label=label + suffix + (f" (= {same})" if same else ""), **extra)  # fmt: skip
        drawn.append((label, x, y))
    return len(curves)


def _legend_below(ax: Any, n: int) -> None:
    """The legend under the axes, outside the data, in up to 2 columns (3 for many entries)."""
    if n:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small" if n <= 8 else "x-small",
                  ncol=1 if n <= 4 else (2 if n <= 16 else 3), frameon=False)  # fmt: skip


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


def plot_reject_figures(
    df: pd.DataFrame,
    out_dir: str | Path,
    reference: pd.DataFrame | None = None,
    style: FigureStyle | None = None,
    part: tuple[int, int] | None = None,
) -> list[Path]:
    """What `analyze reject` draws: the comparison figures (at the style's dpi), then one curve figure per method;
    with `part`, that share of them (save_figure_sets)."""
    dpi = (style or DEFAULT_STYLE).dpi
    sets = [(reject_comparison_figures(df, "", reference, style), dpi), (reject_curve_figures(df, "", reference), DPI)]
    return save_figure_sets(sets, out_dir, part)


REFERENCE_STYLES = {"oracle": "--", "random": ":"}
"""Line style of each reference curve (analyze.reject.REFERENCE_ORDERS), named in the legend."""


def _references_of(reference: pd.DataFrame | None, keys: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """The reference curves (oracle, random) measured like the method `keys` (same model, level, protocol,
    fusion, distance, threshold mode, convention, and FAR when `keys` has one: a comparison figure is of one FAR)."""
    if reference is None or reference.empty:
        return []
    mask = np.ones(len(reference), dtype=bool)
    for k in ("model", "level", "protocol", "fusion", "distance", "threshold_mode", "convention", "far"):
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


METRIC_ORDER = (
    "cosine_mean", "MLS_harmonic-sum", "cosine_harmonic-harmonic", "cosine_min", "cosine", "MLS",
    "cosine_max", "cosine_mul", "cosine_harmonic-sum", "MLS_mean",
)  # fmt: skip
"""Metrics whose line style is fixed (the paper's first): the same metric looks the same in every figure."""


def _metric_key(mkeys: dict[str, Any]) -> str:
    """What a line style stands for: the metric (distance_uncertainty)."""
    unc = mkeys.get("uncertainty")
    return f"{mkeys['distance']}_{unc}" if _present(unc) else str(mkeys["distance"])


def metric_index(metric: str, others: Iterable[str]) -> int:
    """The line-style index of `metric`: its place in METRIC_ORDER, else after them in sorted order of `others`."""
    if metric in METRIC_ORDER:
        return METRIC_ORDER.index(metric)
    rest = sorted({m for m in others if m not in METRIC_ORDER})
    return len(METRIC_ORDER) + rest.index(metric)


def reject_comparison_figures(
    df: pd.DataFrame, dataset: str = "", reference: pd.DataFrame | None = None, style: FigureStyle | None = None
) -> Iterator[tuple[str, Figure]]:
    """One figure per (level, FAR, threshold mode; protocol and convention when mixed): every method's
    TAR against rejected fraction on one axis, one colour per model and one line style per metric, legend
    `model: distance_uncertainty [fusion]` with AUC below the axes (identical curves merged as `A = B`); the
    bootstrap band where the table has one; with `reference`, each (model, distance, fusion)'s oracle (dashed)
    and random (dotted) curves in grey."""
    st = style or DEFAULT_STYLE
    _check_columns(df, REJECT_COLUMNS, "reject table")
    for keys, sub in _groups(df, _COMPARE_KEYS):
        keys.setdefault("dataset", dataset)
        curves, rows = [], []
        for mkeys, curve in _groups(sub, _METHOD_KEYS):
            curve = curve.sort_values("rejected_fraction", kind="stable")
            x, y = curve["rejected_fraction"].to_numpy(float), curve["tar"].to_numpy(float)
            label = method_label(st.name(mkeys["model"]), mkeys["distance"], mkeys["uncertainty"], mkeys.get("fusion"))
            if st.wants(label):
                curves.append((str(mkeys["model"]), _metric_key(mkeys), label, x, y, f" (AUC {_auc(x, y):.4f})"))
                rows.append(curve)
        if not curves:
            continue
        refs = []
        ref_keys = {k: keys[k] for k in ("level", "protocol", "threshold_mode", "convention", "far") if k in keys}
        for bases, _ in _groups(sub, ["model", "distance", "fusion"]) if reference is not None else ():
            name = f", {method_label(st.name(bases['model']), bases['distance'], fusion=bases.get('fusion'))}"
            refs += [(ref, curve, name) for ref, curve in _references_of(reference, {**ref_keys, **bases})]
        fig, ax = _new_figure(st, (7.5, 5.0) if len(curves) + len(refs) <= 8 else (9.5, 6.0))
        n = _draw_methods(ax, curves)
        colours = model_colours(c[0] for c in curves)
        for (model, _m, _l, x, _y, _s), curve in zip(curves, rows):
            _band(ax, x, curve, "tar", colours[model])
        for ref, curve, name in refs:
            _reference_line(ax, ref, curve, "grey", True, name)
        n += len(refs)
        _style_axes(ax, "Rejected fraction of pairs", f"TAR@FAR={_far_text(float(keys['far']))}")
        _pct_axis(ax, "x")
        _pct_axis(ax, "y")
        _legend_below(ax, n)
        head = f"{keys['dataset']}: " if _present(keys["dataset"]) else ""
        _title(ax, st, f"{head}TAR@FAR={_far_text(float(keys['far']))} under rejection\n"
               + _context(keys, ["level", "protocol", "threshold_mode", "convention"]))  # fmt: skip
        stem = safe_name("compare", *(keys.get(k) for k in _COMPARE_KEYS if k != "far"), f"far{keys['far']:g}")
        yield stem, fig


def plot_reject_comparison(
    df: pd.DataFrame,
    out_dir: str | Path,
    dataset: str = "",
    reference: pd.DataFrame | None = None,
    style: FigureStyle | None = None,
) -> list[Path]:
    """Save `reject_comparison_figures` (PNG and PDF per level, FAR, threshold mode); returns the paths."""
    dpi = (style or DEFAULT_STYLE).dpi
    figs = reject_comparison_figures(df, dataset, reference, style)
    return [p for stem, fig in figs for p in save_figure(fig, out_dir, stem, dpi)]


# ---- ROC ----------------------------------------------------------------------------------------------


def fitted_fpr_floor(fpr: np.ndarray) -> float:
    """The ROC x-axis start: the decade at or below the smallest positive FPR the data resolves (1/n_impostors),
    so the axis is fitted to the data instead of fixed at 1e-6."""
    pos = np.asarray(fpr, dtype=float)
    pos = pos[pos > 0]
    if not pos.size:
        return ROC_FPR_RANGE[0]
    return float(10 ** math.floor(math.log10(pos.min()) + 1e-9))


def roc_figures(
    roc_df: pd.DataFrame, dataset: str = "", intervals: pd.DataFrame | None = None, style: FigureStyle | None = None
) -> Iterator[tuple[str, Figure]]:
    """One log-x ROC figure per level (and protocol when present), one curve per method (colour per model, line
    style per metric); the x-axis starts at the decade of the smallest FPR the data resolves; points with FPR 0
    cannot sit on a log axis and are left out. With `intervals` (roc_interval: model, fusion, far, tar, tar_lo,
    tar_hi) each method's bootstrap interval at each FAR as an error bar."""
    st = style or DEFAULT_STYLE
    _check_columns(roc_df, ROC_COLUMNS, "ROC table")
    for keys, sub in _groups(roc_df, ["dataset", "level", "protocol"]):
        keys.setdefault("dataset", dataset)
        curves, fused = [], []
        for mkeys, curve in _groups(sub, ["model", "distance", "uncertainty", "fusion"]):
            curve = curve.sort_values("fpr", kind="stable")
            fpr, tpr = curve["fpr"].to_numpy(float), curve["tpr"].to_numpy(float)
            keep = fpr > 0
            label = method_label(
                st.name(mkeys["model"]), mkeys["distance"], mkeys.get("uncertainty"), mkeys.get("fusion")
            )
            if st.wants(label):
                curves.append((str(mkeys["model"]), _metric_key(mkeys), label, fpr[keep], tpr[keep], ""))
                fused.append(mkeys.get("fusion"))
        if not curves:
            continue
        fig, ax = _new_figure(st, (7.0, 5.0) if len(curves) <= 8 else (9.5, 6.0))
        n = _draw_methods(ax, curves)
        colours = model_colours(c[0] for c in curves)
        for (model, *_rest), fusion in zip(curves, fused) if intervals is not None else ():
            ci = intervals[(intervals["model"] == model) & (intervals["fusion"] == fusion)]
            if not ci.empty:
                tar, lo, hi = (ci[c].to_numpy(float) for c in ("tar", "tar_lo", "tar_hi"))
                err = np.vstack([tar - lo, hi - tar]).clip(min=0)
                ax.errorbar(ci["far"], tar, yerr=err, fmt="none", ecolor=colours[model], capsize=3, lw=1)
        ax.set_xscale("log")
        ax.set_xlim(fitted_fpr_floor(sub["fpr"].to_numpy(float)), ROC_FPR_RANGE[1])
        _style_axes(ax, "False accept rate (FPR, log scale)", "True accept rate (TPR)")
        _pct_axis(ax, "y")
        _legend_below(ax, n)
        head = f"{keys['dataset']}: " if _present(keys["dataset"]) else ""
        _title(ax, st, f"{head}ROC\n" + _context(keys, ["level", "protocol"]))
        yield safe_name("roc", keys.get("dataset"), keys.get("level"), keys.get("protocol")), fig


def plot_roc(
    roc_df: pd.DataFrame,
    out_dir: str | Path,
    dataset: str = "",
    intervals: pd.DataFrame | None = None,
    style: FigureStyle | None = None,
) -> list[Path]:
    """Save `roc_figures` (PNG and PDF per level) under `out_dir`; returns the paths."""
    dpi = (style or DEFAULT_STYLE).dpi
    figs = roc_figures(roc_df, dataset, intervals, style)
    return [p for stem, fig in figs for p in save_figure(fig, out_dir, stem, dpi)]


def _band(ax: Any, x: np.ndarray, rows: pd.DataFrame, value: str, color: Any) -> None:
    """The bootstrap interval of `value` (columns `<value>_lo`, `<value>_hi`, when the table has them) as a
    translucent band under its curve."""
    lo, hi = f"{value}_lo", f"{value}_hi"
    if lo in rows.columns and hi in rows.columns:
        ax.fill_between(x, rows[lo].to_numpy(float), rows[hi].to_numpy(float), color=color, alpha=0.18, lw=0)


# ---- template fusion -----------------------------------------------------------------------------------

FUSION_COLUMNS = ("model", "fusion", "distance", "far", "tar")


def fusion_figures(
    fusion_df: pd.DataFrame, dataset: str = "", style: FigureStyle | None = None
) -> Iterator[tuple[str, Figure]]:
    """One figure per protocol and distance: TAR at each FAR (log x), one line per model and fusion."""
    st = style or DEFAULT_STYLE
    _check_columns(fusion_df, FUSION_COLUMNS, "fusion table")
    for keys, sub in _groups(fusion_df, ["protocol", "distance", "convention"]):
        methods = [
            (mkeys, rows)
            for mkeys, rows in _groups(sub, ["model", "fusion"])
            if st.wants(method_label(st.name(mkeys["model"]), keys["distance"], fusion=mkeys["fusion"]))
        ]
        if not methods:
            continue
        fig, ax = _new_figure(st, (7.0, 5.0) if len(methods) <= 8 else (9.5, 5.5))
        for (mkeys, rows), style_ in zip(methods, line_styles(len(methods))):
            rows = rows.sort_values("far", kind="stable")
            label = method_label(st.name(mkeys["model"]), keys["distance"], fusion=mkeys["fusion"])
            ax.plot(rows["far"].to_numpy(float), rows["tar"].to_numpy(float), label=label, **style_)
            _band(ax, rows["far"].to_numpy(float), rows, "tar", style_["color"])
        ax.set_xscale("log")
        _style_axes(ax, "False accept rate (log scale)", "True accept rate at that FAR")
        _pct_axis(ax, "y")
        _method_legend(ax, len(methods))
        head = f"{dataset}: " if dataset else ""
        _title(ax, st, f"{head}TAR@FAR per template fusion\n" + _context(keys, ["protocol", "distance", "convention"]))
        yield safe_name("fusion", dataset, keys.get("protocol"), keys.get("distance"), keys.get("convention")), fig


def plot_fusion(
    fusion_df: pd.DataFrame, out_dir: str | Path, dataset: str = "", style: FigureStyle | None = None
) -> list[Path]:
    """Save `fusion_figures` (PNG and PDF per protocol and distance) under `out_dir`; returns the paths."""
    dpi = (style or DEFAULT_STYLE).dpi
    return [p for stem, fig in fusion_figures(fusion_df, dataset, style) for p in save_figure(fig, out_dir, stem, dpi)]


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


def plot_roc_figures(
    roc_df: pd.DataFrame,
    out_dir: str | Path,
    det: pd.DataFrame | None = None,
    eer: pd.DataFrame | None = None,
    intervals: pd.DataFrame | None = None,
    style: FigureStyle | None = None,
    part: tuple[int, int] | None = None,
) -> list[Path]:
    """What `analyze roc` draws: the ROC figures (at the style's dpi), then the DET figure when `det` is given; with
    `part`, that share of them (save_figure_sets)."""
    sets = [(roc_figures(roc_df, "", intervals, style), (style or DEFAULT_STYLE).dpi)]
    if det is not None:
        sets.append((det_figures(det, "", eer), DPI))
    return save_figure_sets(sets, out_dir, part)


def plot_det(
    det_df: pd.DataFrame, out_dir: str | Path, dataset: str = "", eer: pd.DataFrame | None = None
) -> list[Path]:
    """Save `det_figures` (PNG and PDF) under `out_dir`; returns the paths."""
    return [p for stem, fig in det_figures(det_df, dataset, eer) for p in save_figure(fig, out_dir, stem)]
