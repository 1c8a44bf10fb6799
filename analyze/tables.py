"""Table contracts and presentation: the tidy tables' columns, the one method label and the one FAR pivot.

Orchestrators (`experiments`) write tables with these columns; figures, the terminal text and the pipelines
report read them through the same contract and label methods and pivot FARs the same way. pandas only.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = [
    "AUC_COLUMNS",
    "EDC_COLUMNS",
    "KEY_COLUMNS",
    "REJECT_COLUMNS",
    "REJECT_KEY_COLUMNS",
    "add_keys",
    "far_pivot",
    "method_label",
    "method_labels",
]

REJECT_KEY_COLUMNS = (
    "model", "level", "protocol", "fusion", "distance", "uncertainty", "threshold_mode", "convention",
    "far", "rejected_fraction", "tar", "threshold", "kept_pairs",
)  # fmt: skip
"""The tidy reject table's contract (what figures and reports may rely on)."""

REJECT_COLUMNS = [
    *REJECT_KEY_COLUMNS, "far_achieved", "kept_genuine", "kept_impostor", "discarded_fraction", "dataset",
]  # fmt: skip
AUC_COLUMNS = [
    "model",
    "level",
    "protocol",
    "fusion",
    "distance",
    "uncertainty",
    "threshold_mode",
    "convention",
    "far",
    "auc",
    "auc_kind",
    "dataset",
]
EDC_COLUMNS = [
    *AUC_COLUMNS[: AUC_COLUMNS.index("far") + 1],
    "discard_limit",
    "fnmr_all",
    "pauc",
    "pauc_ideal",
    "pauc_minus_ideal",
    "dataset",
]
"""`analyze reject --threshold fixed`'s edc table: per method (and reference) and FAR, FNMR on all pairs at the
threshold, the partial area under FNMR up to the discard limit, the ideal curve's, and their difference."""


def present(value: Any) -> bool:
    """False for None, NaN and empty strings or 'none' (e.g. the fusion of an image-level protocol)."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and value.strip() in ("", "none", "None", "nan"))


LABEL_STYLES = ("legend", "report", "terminal")
"""How a method is written: legend `pfe: MLS_harmonic-sum [fusion PFE]`, report `pfe: MLS_harmonic-sum [PFE]`,
terminal `pfe PFE MLS_harmonic-sum`."""


def method_label(
    model: str, distance: str, uncertainty: str | None = None, fusion: Any = None, style: str = "legend"
) -> str:
    """The label of one method (model, distance, pair uncertainty, fusion) in one of `LABEL_STYLES`."""
    metric = f"{distance}_{uncertainty}" if present(uncertainty) else f"{distance}"
    if style == "terminal":
        return " ".join(p for p in (str(model), str(fusion) if present(fusion) else "", metric) if p)
    if style not in LABEL_STYLES:
        raise ValueError(f"label style must be one of {LABEL_STYLES}, got {style!r}")
    label = f"{model}: {metric}"
    if not present(fusion):
        return label
    return f"{label} [fusion {fusion}]" if style == "legend" else f"{label} [{fusion}]"


def method_labels(df: pd.DataFrame, style: str) -> pd.Series:
    """`method_label` of every row of a table with model, distance, uncertainty and fusion columns."""
    return pd.Series(
        [
            method_label(r.model, r.distance, r.uncertainty, r.fusion, style)
            for r in df[["model", "distance", "uncertainty", "fusion"]].itertuples()
        ],
        index=df.index,
        dtype=object,
    )


def far_pivot(df: pd.DataFrame, index: str | list[str], values: str) -> pd.DataFrame:
    """`values` as an index x FAR table, columns named `FAR=<far:g>`, rows in first-appearance order."""
    table = df.pivot_table(index=index, columns="far", values=values, sort=False)
    table.columns = [f"FAR={c:g}" for c in table.columns]
    return table


KEY_COLUMNS = ("dataset", "model", "level", "protocol", "fusion", "distance", "uncertainty", "convention")
"""The key columns every table carries where they apply (issue 12 item 6), so tables of several commands,
runs or stores concatenate and join on the same names."""


def add_keys(df: pd.DataFrame, before: str | None = None, **keys: Any) -> pd.DataFrame:
    """`df` with each missing key column added as a constant (existing columns are never renamed, dropped or
    changed); placed before column `before` when given (e.g. ahead of the ROC table's FAR columns), else last."""
    missing = {k: v for k, v in keys.items() if k not in df.columns}
    if not missing:
        return df
    out = df.copy()
    at = list(out.columns).index(before) if before in out.columns else len(out.columns)
    for offset, (k, v) in enumerate(missing.items()):
        out.insert(at + offset, k, pd.Series([v] * len(out), index=out.index, dtype=object if v is None else None))
    return out
