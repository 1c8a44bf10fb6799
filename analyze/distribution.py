"""Per-image uncertainty distributions read from a feature store: tables, summary statistics,
histograms on shared bins across datasets, and galleries of the most and least uncertain faces.

Quantities: ScaleFace `scale` and the embedding `norm` are confidences (larger = more reliable);
PFE `sigma_sq` is reduced per image to its harmonic mean over D (`sigma_sq_harmonic`, an
uncertainty), exactly as `analyze.rows.image_scalar` does for the reject curves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analyze.figures import line_styles, safe_name, save_figure  # noqa: E402
from analyze.policy import OUTPUT_KINDS  # noqa: E402
from analyze.rows import image_scalar  # noqa: E402
from featurestore.errors import StoreError  # noqa: E402
from featurestore.schema import STATUS_OK, ModelSpec  # noqa: E402
from featurestore.store import FeatureStore  # noqa: E402

__all__ = [
    "PERCENTILES",
    "Histograms",
    "QUANTITIES",
    "SUMMARY_COLUMNS",
    "Quantity",
    "distribution_figures",
    "gallery",
    "gallery_figure",
    "gallery_rows",
    "histograms",
    "plot_distributions",
    "quantities_of",
    "read_image",
    "shared_bins",
    "summarize",
    "uncertainty_table",
]


@dataclass(frozen=True)
class Quantity:
    """A per-image scalar: the store output it comes from, its direction and an axis label."""

    name: str
    output: str
    kind: str  # analyze.policy.OUTPUT_KINDS: "confidence" (larger = more reliable) or "uncertainty"
    label: str


EXTERNAL = "<external quality>"
"""The `output` of the quantities read from an external model's quality output of their kind (the output is
named by the user, one per model: `datasets import`)."""

QUANTITIES: dict[str, Quantity] = {
    "scale": Quantity("scale", "scale", OUTPUT_KINDS["scale"], "ScaleFace scale s(x) (confidence)"),
    "norm": Quantity("norm", "norm", OUTPUT_KINDS["norm"], "embedding L2 norm (confidence)"),
    "sigma_sq_harmonic": Quantity(
        "sigma_sq_harmonic", "sigma_sq", OUTPUT_KINDS["sigma_sq"], "PFE harmonic mean of sigma^2 over D (uncertainty)"
    ),
    "external_confidence": Quantity(
        "external_confidence", EXTERNAL, "confidence", "imported quality score (confidence; the model names it)"
    ),
    "external_uncertainty": Quantity(
        "external_uncertainty", EXTERNAL, "uncertainty", "imported uncertainty (the model names it)"
    ),
}
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
SUMMARY_COLUMNS = (
    ["dataset", "model", "quantity", "kind", "count", "n_missing", "mean", "std", "min"]
    + [f"p{p}" for p in PERCENTILES]
    + ["max"]
)
ID_COLUMNS = ("dataset", "model", "row", "path", "subject", "template", "status")


def quantities_of(store: FeatureStore, model: str) -> list[str]:
    """Names of the QUANTITIES that `model` in `store` has outputs for, in QUANTITIES order."""
    spec = store.model(model)
    return [q.name for q in QUANTITIES.values() if _output(spec, q) is not None]


def _output(spec: ModelSpec, q: Quantity) -> str | None:
    """The store output `q` is read from in this model (None: it has none)."""
    if q.output == EXTERNAL:
        return next((o for o, kind in spec.external_quality().items() if kind == q.kind), None)
    return q.output if q.output in spec.outputs else None


def _dataset_name(store: FeatureStore) -> str:
    return store.dataset or Path(store.path).stem


def _per_image(store: FeatureStore, model: str, q: Quantity) -> np.ndarray:
    """The quantity for every row (N,), float64; (N, D) outputs reduced chunk by chunk with Dask."""
    spec = store.model(model)
    output = _output(spec, q)
    if spec.row_shape(output) == ():
        return store.read(model, output).astype(np.float64)
    arr = store.dask(model, output).rechunk({1: -1})
    reduced = arr.map_blocks(lambda b: image_scalar(b), drop_axis=1, dtype=np.float64)
    return np.asarray(reduced.compute(scheduler="threads"), dtype=np.float64)


def uncertainty_table(store: FeatureStore, model: str) -> pd.DataFrame:
    """One row per image whose chunk is done and whose status is ok: dataset, model, row, path,
    subject, template, status and every available quantity (scale, norm, sigma_sq_harmonic)."""
    names = quantities_of(store, model)  # raises StoreError naming the store's models
    keep = (store.status() == STATUS_OK) & store.row_done()
    rows = np.flatnonzero(keep)
    table: dict[str, Any] = {
        "dataset": np.full(rows.size, _dataset_name(store), dtype=object),
        "model": np.full(rows.size, model, dtype=object),
        "row": rows.astype(np.int64),
        "path": np.asarray(store.image_column("path"), dtype=object)[rows],
        "subject": store.image_column("subject")[rows].astype(np.int64),
        "template": store.image_column("template")[rows].astype(np.int64),
        "status": store.status()[rows].astype(np.uint8),
    }
    for name in names:
        table[name] = _per_image(store, model, QUANTITIES[name])[rows]
    return pd.DataFrame(table)


def _quantity_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in QUANTITIES if c in df.columns]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Count, mean, std (ddof 0, as numpy), min, percentiles 1/5/25/50/75/95/99 (numpy's linear
    interpolation) and max of each quantity per dataset x model, over finite values only;
    `n_missing` counts the NaN/inf values left out. A quantity that is NaN on every row of a
    dataset x model (the model lacks that output, as in a concatenation of tables) is skipped."""
    for col in ("dataset", "model"):
        if col not in df.columns:
            raise ValueError(f"summarize: the table has no {col!r} column; columns: {list(df.columns)}")
    records = []
    for (dataset, model), sub in df.groupby(["dataset", "model"], sort=True):
        for name in _quantity_columns(sub):
            raw = sub[name].to_numpy(dtype=np.float64)
            if np.isnan(raw).all():  # this model has no such output (NaN-filled column of a concatenation)
                continue
            values = raw[np.isfinite(raw)]
            rec: dict[str, Any] = {
                "dataset": dataset,
                "model": model,
                "quantity": name,
                "kind": QUANTITIES[name].kind,
                "count": int(values.size),
                "n_missing": int(raw.size - values.size),
            }
            if values.size:
                pct = np.percentile(values, PERCENTILES)
                rec.update(mean=values.mean(), std=values.std(), min=values.min(), max=values.max())
                rec.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)})
            records.append(rec)
    out = pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)
    return out.astype({c: np.float64 for c in SUMMARY_COLUMNS[6:]})


# ---- histograms on shared bins ------------------------------------------------------------------


def shared_bins(arrays: list[np.ndarray], bins: int = 50) -> np.ndarray:
    """`bins + 1` equal-width edges spanning the finite values of all `arrays` together, so every
    dataset's histogram of one quantity uses the very same bins (a constant gets a unit-wide range)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    finite = [a[np.isfinite(a)] for a in (np.asarray(x, dtype=np.float64) for x in arrays)]
    finite = [a for a in finite if a.size]
    if not finite:
        raise ValueError("shared_bins: no finite values in any array")
    lo = min(float(a.min()) for a in finite)
    hi = max(float(a.max()) for a in finite)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


@dataclass
class Histograms:
    """Histograms of one (quantity, model) across datasets: shared `edges`, counts per dataset."""

    quantity: str
    model: str
    edges: np.ndarray
    counts: dict[str, np.ndarray]


def histograms(tables: Mapping[tuple[str, str], pd.DataFrame], bins: int = 50) -> list[Histograms]:
    """For every quantity and model, the counts of each dataset's finite values over bins shared by
    all datasets of that model (models differ in scale, so each gets its own range)."""
    quantities = [q for q in QUANTITIES if any(q in df.columns for df in tables.values())]
    models = sorted({m for _, m in tables})
    out = []
    for q in quantities:
        for model in models:
            series = {
                ds: df[q].to_numpy(dtype=np.float64)
                for (ds, m), df in sorted(tables.items())
                if m == model and q in df.columns
            }
            series = {ds: v[np.isfinite(v)] for ds, v in series.items()}
            series = {ds: v for ds, v in series.items() if v.size}
            if not series:
                continue
            edges = shared_bins(list(series.values()), bins)
            counts = {ds: np.histogram(v, bins=edges)[0] for ds, v in series.items()}
            out.append(Histograms(q, model, edges, counts))
    return out


def distribution_figures(
    tables: Mapping[tuple[str, str], pd.DataFrame], bins: int = 50
) -> Iterator[tuple[str, Figure]]:
    """One figure per quantity, one panel per model, each dataset's density as a step curve on the
    panel's shared bins (area 1 per dataset, so datasets of any size compare)."""
    hists = histograms(tables, bins)
    for q in dict.fromkeys(h.quantity for h in hists):
        panels = [h for h in hists if h.quantity == q]
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False)
        for ax in axes.ravel()[len(panels) :]:
            ax.set_visible(False)
        datasets = sorted({ds for h in panels for ds in h.counts})
        styles = dict(zip(datasets, line_styles(len(datasets))))
        for ax, h in zip(axes.ravel(), panels):
            widths = np.diff(h.edges)
            for ds, counts in h.counts.items():
                density = counts / (counts.sum() * widths)
                st = styles[ds]
                ax.stairs(
                    density,
                    h.edges,
                    color=st["color"],
                    linestyle=st["linestyle"],
                    linewidth=1.5,
                    label=(f"{ds} (n={int(counts.sum())})"),
                )
            ax.set_title(f"{h.model}", fontsize="medium")
            ax.set_xlabel(QUANTITIES[q].label)
            ax.set_ylabel("Density (per unit, area 1)")
            ax.grid(True, alpha=0.4)
            ax.legend(fontsize="small")
        fig.suptitle(f"Distribution of {q} per image, datasets on shared bins ({bins} bins)")
        fig.tight_layout()
        yield safe_name("distribution", q), fig


def plot_distributions(
    tables: Mapping[tuple[str, str], pd.DataFrame], out_dir: str | Path, bins: int = 50
) -> list[Path]:
    """Save `distribution_figures` (PNG and PDF per quantity) under `out_dir`; returns the paths."""
    return [p for stem, fig in distribution_figures(tables, bins) for p in save_figure(fig, out_dir, stem)]


# ---- galleries -------------------------------------------------------------------------------------


def gallery_rows(df: pd.DataFrame, quantity: str, n: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `n` most and `n` least uncertain images of `df` by `quantity` (finite values only).

    Most uncertain: highest uncertainty / lowest confidence first; least uncertain the reverse.
    Ties keep row order (stable sorts)."""
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}")
    if quantity not in df.columns:
        raise ValueError(f"the table has no {quantity!r} column; it has: {', '.join(_quantity_columns(df)) or 'none'}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    values = df[quantity].to_numpy(dtype=np.float64)
    finite = df[np.isfinite(values)]
    u = finite[quantity].to_numpy(dtype=np.float64)
    if QUANTITIES[quantity].kind == "confidence":
        u = -u
    most = finite.iloc[np.argsort(-u, kind="stable")[:n]]
    least = finite.iloc[np.argsort(u, kind="stable")[:n]]
    return most, least


def read_image(data_root: str | Path, path: str) -> tuple[np.ndarray | None, str]:
    """The RGB image of row `path` under `data_root`, or (None, reason) when it cannot be read."""
    import cv2

    from facedata.errors import DataError
    from facedata.images import open_image_bytes

    try:
        data = open_image_bytes(data_root, path)
    except (DataError, OSError, ValueError) as exc:
        return None, str(exc)
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None, "not a decodable image"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), ""


def gallery_figure(
    most: pd.DataFrame, least: pd.DataFrame, quantity: str, data_root: str | Path, title: str = ""
) -> Figure:
    """Two rows of tiles: the most uncertain images on top, the least uncertain below, each labelled
    with its value and row; an unreadable image becomes a grey tile saying why."""
    ncols = max(len(most), len(least), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(1.6 * ncols + 0.8, 5.0), squeeze=False)
    for r, (rows, heading) in enumerate(((most, "most uncertain"), (least, "least uncertain"))):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows):
                ax.set_visible(False)
                continue
            rec = rows.iloc[c]
            img, why = read_image(data_root, str(rec["path"]))
            if img is None:
                ax.imshow(np.full((112, 112, 3), 0.6), vmin=0, vmax=1)
                ax.text(56, 56, "unreadable\n" + _wrap(why), ha="center", va="center", fontsize=5, wrap=True)
            else:
                ax.imshow(img)
            ax.set_title(f"{rec[quantity]:.4g}\nrow {int(rec['row'])}", fontsize=7)
            if c == 0:
                ax.set_ylabel(heading, fontsize=8)
    kind = QUANTITIES[quantity].kind
    fig.suptitle((title + "\n" if title else "") + f"{quantity} ({kind}): top row most uncertain, bottom least")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 22, lines: int = 4) -> str:
    chunks = [text[i : i + width] for i in range(0, len(text), width)]
    return "\n".join(chunks[:lines])


def gallery(
    store: FeatureStore,
    model: str,
    quantity: str,
    data_root: str | Path,
    out_dir: str | Path,
    n: int = 8,
    table: pd.DataFrame | None = None,
    dataset: str | None = None,
) -> Path:
    """Write the gallery of the `n` most and `n` least uncertain images of `model` by `quantity`
    (PNG and PDF under `out_dir`, images read relative to `data_root`); returns the PNG path.

    `table` reuses an `uncertainty_table(store, model)` already computed; `dataset` overrides the
    store's dataset name in the title and file name."""
    if quantity not in quantities_of(store, model):
        raise StoreError(
            f"{store.path}: model {model!r} has no quantity {quantity!r}; it has: "
            f"{', '.join(quantities_of(store, model)) or 'none'}"
        )
    df = uncertainty_table(store, model) if table is None else table
    most, least = gallery_rows(df, quantity, n)
    dataset = dataset or _dataset_name(store)
    fig = gallery_figure(most, least, quantity, data_root, title=f"{dataset}, model {model}")
    return save_figure(fig, out_dir, safe_name("gallery", dataset, model, quantity))[0]
