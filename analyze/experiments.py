"""The orchestrators `analyze` runs on a store: reject verification, fusion tables and ROC tables.

Only the loops over models, fusions and metrics live here: pair assembly is in `analyze.loading`
(`select`, `build_pair_set`), every reject-like curve in `analyze.reject` (`reject_columns`), the table
contracts and presentation in `analyze.tables`, the per-family defaults in `analyze.policy`.
Each returns tidy pandas tables (one row per measured number) with every convention named in
its columns, so results from different runs and methods concatenate and compare directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analyze.curves import auc, roc_curve_points
from analyze.loading import PairSet, ValidRows, build_pair_set, select, valid_rows
from analyze.outputs import progress
from analyze.policy import policy_for
from analyze.reject import reject_columns
from analyze.scores import pair_scores
from analyze.tables import AUC_COLUMNS, REJECT_COLUMNS, add_keys
from analyze.tarfar import check_far_resolution, check_fars, tar_at_far
from analyze.uncertainty import as_uncertainty, combination_mode, pair_uncertainty
from analyze.vocabulary import DISTANCES, fusion_spec, metric_specs
from featurestore.errors import StoreError
from featurestore.store import FeatureStore

PAPER_FARS = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2)
"""The ScaleFace paper's FARs for reject verification."""

PAPER_FRACTIONS = (0.0, 0.5, 250)
"""np.linspace(0, 0.5, 250): the paper's rejected fractions."""

ROC_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""insightface's IJB-C ROC table columns."""


def default_metrics(spec_outputs: tuple[str, ...], threshold_mode: str) -> list[str]:
    """The paper's metric strings for a model (its family policy, analyze.policy)."""
    return policy_for(spec_outputs).metrics_for(threshold_mode)


def default_fusions(spec_outputs: tuple[str, ...]) -> list[str]:
    """The family's template fusions (analyze.policy): PFE attention, confidence-weighted, or the mean."""
    return list(policy_for(spec_outputs).fusions)


def score_pairs(ps: PairSet, metric: str, bias: float | None = None) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(scores, pair uncertainty 'larger = reject first', distance, combination) for a metric string."""
    distance_spec, combo_spec = metric_specs(metric)
    distance, combo = distance_spec.name, combo_spec.name
    if distance_spec.values == "sigma_sq" and (ps.values is None or ps.values.ndim != 2):
        raise StoreError(
            f"metric {metric!r} needs PFE sigma_sq, which model {ps.model!r} does not have "
            f"(or fusion {ps.fusion!r} reduced it to a scalar)"
        )
    scores = pair_scores(distance, ps.features, ps.i, ps.j, uncertainty=ps.values, bias=bias)
    pu = pair_uncertainty(combo, ps.values, ps.i, ps.j, features=ps.features, labels=ps.labels)
    return scores, as_uncertainty(pu, combination_mode(combo, ps.mode)), distance, combo


def fractions_from(spec: tuple[float, float, int]) -> np.ndarray:
    """np.linspace(start, stop, num), the paper's way of listing rejected fractions."""
    start, stop, num = spec
    return np.linspace(start, stop, int(num))


@dataclass
class RunReport:
    """Counts and conventions of one `analyze` run, written to summary.json."""

    store: str
    dataset: str
    params: dict[str, Any]
    excluded: dict[str, Any] = field(default_factory=dict)
    pairs: dict[str, dict[str, int]] = field(default_factory=dict)
    fars_dropped: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    """Headline results (the AUC or TAR@FAR rows), filled in by analyze.commands."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Command line, toolkit version, store digest (analyze.outputs.provenance)."""

    def exclude_images(self, valid: ValidRows) -> None:
        """Record which images the analysis left out and why (not done, failed status, NaN per output)."""
        self.excluded = {
            "images_not_done": valid.n_not_done,
            "images_failed": valid.n_failed,
            "images_nan": valid.n_nan,
            "images_used": int(valid.mask.sum()),
        }

    def count_pairs(self, ps: PairSet) -> None:
        """Record the protocol's pairs for one (model, fusion): total, dropped, scored, genuine."""
        self.pairs[f"{ps.model}/{ps.fusion}"] = {
            "pairs": ps.n_pairs_total,
            "dropped": ps.n_pairs_dropped,
            "scored": len(ps.labels),
            "genuine": int(ps.labels.sum()),
        }


def _fars(fars: tuple[float, ...] | None, defaults: tuple[float, ...]) -> tuple[tuple[float, ...], bool]:
    """The FARs to measure and whether the user gave them (explicit FARs are refused below the resolution,
    defaults there are dropped with a note: `resolved_fars`)."""
    return (tuple(fars), True) if fars is not None else (defaults, False)


def _run_report(store: FeatureStore, valid: ValidRows, **params: Any) -> RunReport:
    """The run's report with its parameters and which images were left out."""
    report = RunReport(str(store.path), store.dataset, params)
    report.exclude_images(valid)
    return report


def resolved_fars(
    fars: tuple[float, ...], explicit: bool, ps: PairSet, allow_tiny_far: bool, report: RunReport
) -> np.ndarray:
    """The FARs one pair set can resolve (>= 1/n_impostors of the pairs actually scored): FARs the user
    gave below that are refused (check_far_resolution's message) unless `allow_tiny_far`; defaults below
    it are dropped and listed in report.fars_dropped, so no FAR is silently reported that cannot be measured."""
    f = check_fars(fars)
    n_imp = int((~ps.labels).sum())
    if allow_tiny_far or n_imp == 0:
        return f
    if explicit:
        check_far_resolution(f, n_imp, allow_tiny_far=False)
        return f
    tiny = f < 1.0 / n_imp
    if tiny.any():
        report.fars_dropped[f"{ps.model}/{ps.fusion}"] = {
            "fars": f[tiny].tolist(),
            "smallest_far": 1.0 / n_imp,
            "n_impostors": n_imp,
        }
    return f[~tiny]


def _no_far_left(report: RunReport) -> ValueError:
    """Every default FAR was below every pair set's resolution: say so instead of writing empty tables."""
    worst = max(report.fars_dropped.values(), key=lambda d: d["smallest_far"])
    return ValueError(
        f"no default FAR is measurable: the smallest meaningful FAR is 1/n_impostors = {worst['smallest_far']:.6g} "
        f"(n_impostors = {worst['n_impostors']}); give --far values >= it, or --allow-tiny-far"
    )


def run_reject(
    store: FeatureStore,
    *,
    models: list[str] | None = None,
    protocol: str | None = None,
    level: str | None = None,
    fusions: list[str] | None = None,
    metrics: list[str] | None = None,
    fars: tuple[float, ...] | None = None,
    fractions: tuple[float, float, int] = PAPER_FRACTIONS,
    threshold_mode: str = "recompute",
    convention: str = "exact",
    partial: bool = False,
    bias: float | None = None,
    fusion_options: dict[str, Any] | None = None,
    discard_limit: float = 0.3,
    allow_tiny_far: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, RunReport]:
    """Reject verification for every (model, fusion, metric): the tidy curve table, the AUC table, a report.

    `fars` None: the paper's FARs, less those below a pair set's resolution (listed in the report); FARs
    given explicitly below 1/n_impostors are refused unless `allow_tiny_far`."""
    t0 = time.perf_counter()
    fars, explicit = _fars(fars, PAPER_FARS)
    models, proto = select(store, models, protocol)
    proto_name = proto.name
    level = level or proto.level
    if threshold_mode not in ("recompute", "fixed"):
        raise ValueError(f"threshold mode must be 'recompute' or 'fixed', got {threshold_mode!r}")
    if convention not in ("exact", "nearest"):
        raise ValueError(f"convention must be 'exact' or 'nearest', got {convention!r}")
    if threshold_mode == "fixed" and convention != "exact":
        raise ValueError("the fixed-threshold EDC sets its thresholds with the exact convention only")
    for metric in metrics or []:
        metric_specs(metric)
    for f in fusions or []:
        fusion_spec(f)
    r = fractions_from(fractions)
    valid = valid_rows(store, models, partial)
    report = _run_report(
        store,
        valid,
        models=models,
        protocol=proto_name,
        level=level,
        fusions=fusions,
        metrics=metrics,
        fars=list(fars),
        fractions=list(fractions),
        threshold_mode=threshold_mode,
        convention=convention,
        partial=partial,
        bias=bias,
        discard_limit=discard_limit,
        allow_tiny_far=allow_tiny_far,
    )
    curves, aucs = [], []
    for model in progress(models, "analyze reject", unit="model"):
        spec = store.model(model)
        model_fusions = (fusions or default_fusions(spec.outputs)) if level == "template" else ["none"]
        for fusion in model_fusions:
            ps = build_pair_set(store, model, proto, level, fusion, valid, fusion_options)
            report.count_pairs(ps)
            ps_fars = resolved_fars(fars, explicit, ps, allow_tiny_far, report)
            if not ps_fars.size:
                continue
            for metric in metrics or default_metrics(spec.outputs, threshold_mode):
                scores, unc, distance, combo = score_pairs(ps, metric, bias)
                key = {
                    "model": model,
                    "level": level,
                    "protocol": proto_name,
                    "fusion": ps.fusion,
                    "distance": distance,
                    "uncertainty": combo,
                    "threshold_mode": threshold_mode,
                    "convention": convention,
                }
                cols = reject_columns(scores, ps.labels, unc, r, ps_fars, threshold_mode, convention)
                df = pd.DataFrame(cols)
                for k, v in key.items():
                    df[k] = v
                curves.append(df)
                aucs.extend(_auc_rows(df, key, threshold_mode, discard_limit))
    if not curves:
        raise _no_far_left(report)
    reject_df = add_keys(pd.concat(curves, ignore_index=True), dataset=store.dataset)[REJECT_COLUMNS]
    report.seconds = time.perf_counter() - t0
    auc_df = add_keys(pd.DataFrame(aucs), dataset=store.dataset)
    return reject_df, auc_df.reindex(columns=AUC_COLUMNS), report


def _auc_rows(df: pd.DataFrame, key: dict[str, Any], threshold_mode: str, discard_limit: float) -> list[dict]:
    rows = []
    for far, g in df.groupby("far", sort=True):
        if threshold_mode == "recompute":
            value, kind = auc(g["rejected_fraction"].to_numpy(), g["tar"].to_numpy()), "tar_vs_rejected_fraction"
        else:
            value = auc(g["discarded_fraction"].to_numpy(), 1.0 - g["tar"].to_numpy(), limit=discard_limit)
            kind = f"fnmr_vs_discarded_fraction_up_to_{discard_limit:g}"
        rows.append({**key, "far": far, "auc": value, "auc_kind": kind})
    return rows


def run_fusion_table(
    store: FeatureStore,
    *,
    models: list[str] | None = None,
    protocol: str | None = None,
    fusions: list[str] | None = None,
    distances: list[str] | None = None,
    fars: tuple[float, ...] | None = None,
    convention: str = "exact",
    partial: bool = False,
    fusion_options: dict[str, Any] | None = None,
    allow_tiny_far: bool = False,
) -> tuple[pd.DataFrame, RunReport]:
    """TAR@FAR of each fusion x distance over template pairs (the paper's fusion script); FARs as run_reject
    (None: insightface's 1e-6 ... 1e-1, less those below a pair set's resolution)."""
    t0 = time.perf_counter()
    fars, explicit = _fars(fars, ROC_FARS)
    models, proto = select(store, models, protocol)
    proto_name = proto.name
    if proto.level != "template":
        raise StoreError(f"protocol {proto_name!r} pairs images; fusion needs a template-level protocol")
    valid = valid_rows(store, models, partial)
    report = _run_report(
        store,
        valid,
        models=models,
        protocol=proto_name,
        fusions=fusions,
        distances=distances,
        fars=list(fars),
        convention=convention,
        partial=partial,
        allow_tiny_far=allow_tiny_far,
    )
    rows = []
    for model in progress(models, "analyze fusion", unit="model"):
        policy = policy_for(store.model(model).outputs)
        model_fusions = fusions or policy.fusion_table_fusions()
        for fusion in dict.fromkeys(model_fusions):
            ps = build_pair_set(store, model, proto, "template", fusion, valid, fusion_options)
            report.count_pairs(ps)
            ps_fars = resolved_fars(fars, explicit, ps, allow_tiny_far, report)
            if not ps_fars.size:
                continue
            values_of = ps.image_values
            for distance in distances or (policy.fusion_distances if values_of.is_sigma_sq else ["cosine"]):
                values = values_of.for_distance(DISTANCES.get(distance))
                scores = pair_scores(distance, ps.features, ps.i, ps.j, uncertainty=values)
                res = tar_at_far(scores, ps.labels, ps_fars, convention, allow_tiny_far=True)
                for f, tar, thr, fa in zip(res.fars, res.tar, res.threshold, res.far_achieved):
                    rows.append(
                        {
                            "model": model,
                            "protocol": proto_name,
                            "fusion": fusion,
                            "distance": distance,
                            "convention": convention,
                            "far": f,
                            "tar": tar,
                            "threshold": thr,
                            "far_achieved": fa,
                            "pairs": len(ps.labels),
                            "dropped_pairs": ps.n_pairs_dropped,
                        }
                    )
    if not rows:
        raise _no_far_left(report)
    report.seconds = time.perf_counter() - t0
    df = add_keys(pd.DataFrame(rows), dataset=store.dataset, level="template", kept_pairs=None)
    if "pairs" in df.columns:  # named as in reject: the pairs a TAR was measured on (none rejected here)
        df["kept_pairs"] = df["pairs"]
    return df, report


def run_roc(
    store: FeatureStore,
    *,
    models: list[str] | None = None,
    protocol: str | None = None,
    fusions: list[str] | None = None,
    fars: tuple[float, ...] | None = None,
    convention: str = "nearest",
    partial: bool = False,
    allow_tiny_far: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, RunReport]:
    """insightface's ROC table (TAR at each FAR, one row per model and fusion; cosine), the thinned ROC
    curves and a report; template protocols use the `media` fusion unless told otherwise. FARs as
    run_reject (None: 1e-6 ... 1e-1 less those below a pair set's resolution, which stay NaN in the table)."""
    t0 = time.perf_counter()
    fars, explicit = _fars(fars, ROC_FARS)
    models, proto = select(store, models, protocol)
    valid = valid_rows(store, models, partial)
    report = _run_report(
        store,
        valid,
        models=models,
        protocol=proto.name,
        fusions=fusions,
        fars=list(fars),
        convention=convention,
        partial=partial,
        allow_tiny_far=allow_tiny_far,
    )
    rows, curves = [], []
    for model in progress(models, "analyze roc", unit="model"):
        for fusion in (fusions or ["media"]) if proto.level == "template" else ["none"]:
            ps = build_pair_set(store, model, proto, proto.level, fusion, valid)
            report.count_pairs(ps)
            ps_fars = resolved_fars(fars, explicit, ps, allow_tiny_far, report)
            if not ps_fars.size:
                continue
            scores = pair_scores("cosine", ps.features, ps.i, ps.j)
            res = tar_at_far(scores, ps.labels, ps_fars, convention, allow_tiny_far=True)
            key = {"model": model, "level": proto.level, "fusion": ps.fusion, "distance": "cosine"}
            rows.append({**key, "convention": convention, **{f"{f:g}": t for f, t in zip(res.fars, res.tar)}})
            fpr, tpr = roc_points(scores, ps.labels)
            curves.append(pd.DataFrame({**key, "fpr": fpr, "tpr": tpr}))
    if not rows:
        raise _no_far_left(report)
    reported = [f"{f:g}" for f in fars if any(f"{f:g}" in r for r in rows)]
    table = pd.DataFrame(rows, columns=["model", "level", "fusion", "distance", "convention", *reported])
    keys = {"protocol": proto.name, "dataset": store.dataset}
    curve_df = add_keys(pd.concat(curves, ignore_index=True), **keys)
    report.seconds = time.perf_counter() - t0
    return add_keys(table, **keys), curve_df, report  # added last: the FAR columns keep their places


def roc_points(scores: np.ndarray, labels: np.ndarray, n_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve (`roc_curve_points`, sklearn's roc_curve) thinned to ~n_points log-spaced FPRs, for plotting."""
    fpr, tpr, _ = roc_curve_points(labels, scores)
    grid = np.unique(np.r_[0.0, np.logspace(-7, 0, n_points)])
    idx = np.minimum(np.searchsorted(fpr, grid, side="right") - 1, len(fpr) - 1)
    idx = np.unique(np.maximum(idx, 0))
    return fpr[idx], tpr[idx]
