"""The orchestrators `analyze` runs on a store: reject verification, fusion tables and ROC tables.

Only the loops over models, fusions and metrics live here: pair assembly is in `analyze.loading`
(`select`, `build_pair_set`), every reject-like curve in `analyze.reject` (`reject_result`), the table
contracts and presentation in `analyze.tables`, the per-family defaults in `analyze.policy`.
Each returns tidy pandas tables (one row per measured number) with every convention named in
its columns, so results from different runs and methods concatenate and compare directly.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analyze.bootstrap import BOOTSTRAP_LEVEL, reject_interval, tar_at_far_interval
from analyze.curves import Counts, auc, binary_counts, roc_curve_points
from analyze.det import det_table, eer_table, roc_long_table
from analyze.loading import PairSet, ValidRows, build_pair_set, select, valid_rows
from analyze.outputs import progress
from analyze.policy import policy_for
from analyze.reject import REFERENCE_ORDERS, EDCCurve, ScoreClasses, reference_uncertainty, reject_result
from analyze.scores import pair_scores
from analyze.tables import AUC_COLUMNS, EDC_COLUMNS, REJECT_COLUMNS, add_keys
from analyze.tarfar import check_far_resolution, check_fars, tar_at_far
from analyze.timing import stage
from analyze.uncertainty import as_uncertainty, combination_mode, pair_uncertainty
from analyze.vocabulary import DISTANCES, fusion_spec, metric_specs
from featurestore.errors import StoreError
from featurestore.schema import ModelSpec
from featurestore.store import FeatureStore

PAPER_FARS = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2)
"""The ScaleFace paper's FARs for reject verification."""

PAPER_FRACTIONS = (0.0, 0.5, 250)
"""np.linspace(0, 0.5, 250): the paper's rejected fractions."""

ROC_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""insightface's IJB-C ROC table columns."""


def default_metrics(model: ModelSpec | tuple[str, ...], threshold_mode: str) -> list[str]:
    """The paper's metric strings for a model (its spec or outputs; its family policy, analyze.policy)."""
    return policy_for(model).metrics_for(threshold_mode)


def default_fusions(model: ModelSpec | tuple[str, ...]) -> list[str]:
    """The family's template fusions (analyze.policy): PFE attention, confidence-weighted, or the mean."""
    return list(policy_for(model).fusions)


def score_pairs(
    ps: PairSet, metric: str, bias: float | None = None, scored: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(scores, pair uncertainty 'larger = reject first', distance, combination) for a metric string.

    `scored` (a dict per pair set) keeps each distance's scores, so metrics sharing a distance score it once."""
    distance_spec, combo_spec = metric_specs(metric)
    distance, combo = distance_spec.name, combo_spec.name
    if distance_spec.values == "sigma_sq" and (ps.values is None or ps.values.ndim != 2):
        raise StoreError(
            f"metric {metric!r} needs PFE sigma_sq, which model {ps.model!r} does not have "
            f"(or fusion {ps.fusion!r} reduced it to a scalar)"
        )
    scores = None if scored is None else scored.get(distance)
    if scores is None:
        scores = pair_scores(distance, ps.features, ps.i, ps.j, uncertainty=ps.values, bias=bias)
        if scored is not None:
            scored[distance] = scores
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
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage of the whole command (analyze.timing: read, fuse, score, ..., other, total)."""
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
    details: dict[str, list[pd.DataFrame]] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    references: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, RunReport]:
    """Reject verification for every (model, fusion, metric): the tidy curve table, the AUC table, a report.

    `fars` None: the paper's FARs, less those below a pair set's resolution (listed in the report); FARs
    given explicitly below 1/n_impostors are refused unless `allow_tiny_far`. `details` (a dict) is filled
    with the reference curves (oracle, random) per (model, fusion, distance) under "reference" and
    "reference_auc", and with fixed thresholds the EDC partial areas (raw, ideal, difference) under "edc"."""
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
    if bootstrap and threshold_mode != "recompute":
        raise ValueError(
            "--bootstrap on reject resamples the recompute curve only (the fixed-threshold EDC discards tied "
            f"qualities together, which pair weights do not express; got --threshold {threshold_mode})"
        )
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
        **_bootstrap_params(bootstrap, seed),
    )
    curves, aucs = [], []
    shared = (threshold_mode, convention) == ("recompute", "exact")
    random_blocks: dict = {}
    pool = ThreadPoolExecutor(CURVE_THREADS)
    try:
        for model in progress(models, "analyze reject", unit="model"):
            spec = store.model(model)
            model_fusions = (fusions or default_fusions(spec)) if level == "template" else ["none"]
            for fusion in model_fusions:
                ps = build_pair_set(store, model, proto, level, fusion, valid, fusion_options)
                report.count_pairs(ps)
                ps_fars = resolved_fars(fars, explicit, ps, allow_tiny_far, report)
                if not ps_fars.size:
                    continue
                referenced: set[str] = set()
                units = None
                scored: dict[str, np.ndarray] = {}
                classes: dict[str, ScoreClasses] = {}
                pending = []
                metric_list = metrics or default_metrics(spec, threshold_mode)
                left = Counter(metric_specs(m)[0].name for m in metric_list)  # metrics still to score per distance
                for metric in metric_list:
                    scores, unc, distance, combo = score_pairs(ps, metric, bias, scored)
                    left[distance] -= 1
                    if not left[distance]:
                        del scored[distance]  # the last metric of its distance: the class sorts hold what curves need
                    key = {
                        "model": model,
                        "level": level,
                        "protocol": proto_name,
                        "fusion": ps.fusion,
                        "distance": distance,
                        "uncertainty": combo,
                        "threshold_mode": threshold_mode,
                        "convention": convention,
                        "dataset": store.dataset,
                    }
                    sc = None
                    if shared:
                        if distance not in classes:
                            with stage("sort"):
                                classes[distance] = ScoreClasses(scores, ps.labels)
                        sc = classes[distance]
                        curve = pool.submit(sc.reject_curve, unc, r, ps_fars, "uncertainty", True)
                    else:
                        curve = reject_result(scores, ps.labels, unc, r, ps_fars, threshold_mode, convention)
                    interval = None
                    if bootstrap:
                        units = units or ps.units(store)
                        interval = reject_interval(
                            scores, ps.labels, unc, units, r, ps_fars, bootstrap, seed, convention=convention
                        )
                    refs = None
                    if details is not None and references and distance not in referenced:
                        referenced.add(distance)
                        refs = _reference_parts(pool, sc, scores, ps.labels, r, ps_fars, key, random_blocks)
                    del unc, scores
                    pending.append((key, curve, interval, refs))
                with stage("curves"):
                    for key, curve, interval, refs in pending:
                        curve = curve.result() if isinstance(curve, Future) else curve
                        df = _keyed(curve.columns(), key)
                        rows = _auc_rows(df, key, threshold_mode, discard_limit)
                        if interval is not None:
                            t_lo, t_hi, a_lo, a_hi = interval
                            df["tar_lo"], df["tar_hi"] = t_lo.ravel(), t_hi.ravel()
                            for row in rows:
                                q = int(np.flatnonzero(ps_fars == row["far"])[0])
                                row.update(auc_lo=a_lo[q], auc_hi=a_hi[q], bootstrap=bootstrap, resampled=units.kind)
                        curves.append(df)
                        aucs.extend(rows)
                        if details is not None and threshold_mode == "fixed":
                            details.setdefault("edc", []).append(_edc_rows(curve, key, discard_limit))
                        if refs is not None:
                            _reference_rows(details, refs, key, discard_limit)
                del pending, classes, scored
    finally:  # an error or interrupt drops the curves still queued
        pool.shutdown(wait=True, cancel_futures=True)
    if not curves:
        raise _no_far_left(report)
    extra = INTERVAL_COLUMNS["tar"] if bootstrap else []
    reject_df = add_keys(pd.concat(curves, ignore_index=True), dataset=store.dataset)[REJECT_COLUMNS + extra[:2]]
    report.seconds = time.perf_counter() - t0
    auc_df = add_keys(pd.DataFrame(aucs), dataset=store.dataset)
    return reject_df, auc_df.reindex(columns=AUC_COLUMNS + (INTERVAL_COLUMNS["auc"] if bootstrap else [])), report


INTERVAL_COLUMNS = {
    "tar": ["tar_lo", "tar_hi", "bootstrap", "resampled"],
    "auc": ["auc_lo", "auc_hi", "bootstrap", "resampled"],
}
"""What --bootstrap N adds to a table: the 95% percentile interval, N and what was resampled (analyze.bootstrap)."""


def _bootstrap_params(bootstrap: int, seed: int) -> dict[str, Any]:
    """The report's bootstrap parameters: none without --bootstrap, so summaries stay as they were."""
    if bootstrap < 0:
        raise ValueError(f"--bootstrap {bootstrap}: the number of replicates must be >= 0")
    return {"bootstrap": bootstrap, "seed": seed, "bootstrap_level": BOOTSTRAP_LEVEL} if bootstrap else {}


def _keyed(cols: dict[str, np.ndarray], key: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame(cols)
    for k, v in key.items():
        df[k] = v
    return df


def _edc_rows(curve: EDCCurve, key: dict[str, Any], discard_limit: float) -> pd.DataFrame:
    """The EDC's partial areas of one method: raw (the number auc.csv holds: FNMR as 1 - tar), the ideal
    curve's on the same discarded fractions, and their difference, per FAR."""
    fnmr = 1.0 - (1.0 - curve.fnmr)  # as _auc_rows reads it back from the table's tar column
    raw = np.array([auc(curve.discarded_fraction, fnmr[:, i], limit=discard_limit) for i in range(curve.fars.size)])
    ideal = curve.ideal_partial_auc(discard_limit)
    fnmr_all = curve.fnm_all / curve.n_genuine if curve.n_genuine else np.full(curve.fars.size, np.nan)
    rows = {"far": curve.fars, "discard_limit": discard_limit, "fnmr_all": fnmr_all}
    rows |= {"pauc": raw, "pauc_ideal": ideal, "pauc_minus_ideal": raw - ideal}
    return _keyed(rows, key)[EDC_COLUMNS]


CURVE_THREADS = 2
"""Threads computing the reject curves of a run side by side (their sorts and kernels release the GIL)."""


def _reference_parts(
    pool: ThreadPoolExecutor, sc: ScoreClasses | None, scores, labels, r, fars, key: dict[str, Any], random_blocks: dict
) -> dict[str, list]:
    """The oracle (one per FAR) and random reference curves (analyze.reject.REFERENCE_ORDERS) of one (model,
    fusion, distance), with the method's threshold mode and convention: pool futures on the shared class sorts
    `sc` (recompute, exact; the random order's blocks kept in `random_blocks` for the run), else computed here."""
    mode, convention = key["threshold_mode"], key["convention"]
    if sc is not None:
        thresholds = sc.thresholds(fars)
        return {
            "oracle": [pool.submit(sc.oracle_curve, t, r, [f], True) for f, t in zip(fars, thresholds)],
            "random": [pool.submit(sc.random_curve, r, fars, 0, True, random_blocks)],
        }
    thresholds = tar_at_far(scores, labels, fars, "exact", allow_tiny_far=True).threshold
    return {
        "oracle": [
            reject_result(scores, labels, reference_uncertainty(scores, labels, "oracle", t), r, [f], mode, convention)
            for f, t in zip(fars, thresholds)
        ],
        "random": [
            reject_result(scores, labels, reference_uncertainty(scores, labels, "random"), r, fars, mode, convention)
        ],
    }


def _reference_rows(
    details: dict[str, list[pd.DataFrame]], parts: dict[str, list], key: dict[str, Any], discard_limit: float
) -> None:
    """The reference curves' rows (`_reference_parts`): curve rows, AUC rows, and EDC rows if fixed."""
    mode = key["threshold_mode"]
    for ref in REFERENCE_ORDERS:
        ref_key = {**key, "uncertainty": ref}
        curves = [c.result() if isinstance(c, Future) else c for c in parts[ref]]
        df = pd.concat([_keyed(c.columns(), ref_key) for c in curves], ignore_index=True)
        df = df.sort_values(["rejected_fraction", "far"], kind="stable", ignore_index=True)[REJECT_COLUMNS]
        details.setdefault("reference", []).append(df)
        details.setdefault("reference_auc", []).append(pd.DataFrame(_auc_rows(df, ref_key, mode, discard_limit)))
        if mode == "fixed":
            edc = pd.concat([_edc_rows(c, ref_key, discard_limit) for c in curves], ignore_index=True)
            details.setdefault("edc", []).append(edc.sort_values("far", kind="stable", ignore_index=True))


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
    bootstrap: int = 0,
    seed: int = 0,
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
        **_bootstrap_params(bootstrap, seed),
    )
    rows = []
    for model in progress(models, "analyze fusion", unit="model"):
        policy = policy_for(store.model(model))
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
                interval = {}
                if bootstrap:
                    units = ps.units(store)
                    lo, hi = tar_at_far_interval(scores, ps.labels, units, ps_fars, convention, bootstrap, seed)
                    interval = {"tar_lo": lo, "tar_hi": hi}
                for q, (f, tar, thr, fa) in enumerate(zip(res.fars, res.tar, res.threshold, res.far_achieved)):
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
                            **{k: float(v[q]) for k, v in interval.items()},
                            **({"bootstrap": bootstrap, "resampled": units.kind} if interval else {}),
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
    details: dict[str, list[pd.DataFrame]] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, RunReport]:
    """insightface's ROC table (TAR at each FAR, one row per model and fusion; cosine), the thinned ROC
    curves and a report; template protocols use the `media` fusion unless told otherwise. FARs as
    run_reject (None: 1e-6 ... 1e-1 less those below a pair set's resolution, which stay NaN in the table).
    `details` (a dict): filled per (model, fusion) with the EER row, the thinned DET points and the tidy long
    ROC (analyze.det) under "eer", "det" and "roc_long"."""
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
        **_bootstrap_params(bootstrap, seed),
    )
    rows, curves = [], []
    keys = {"protocol": proto.name, "dataset": store.dataset}
    table_keys = {"level": proto.level, **keys}
    for model in progress(models, "analyze roc", unit="model"):
        for fusion in (fusions or ["media"]) if proto.level == "template" else ["none"]:
            ps = build_pair_set(store, model, proto, proto.level, fusion, valid)
            report.count_pairs(ps)
            ps_fars = resolved_fars(fars, explicit, ps, allow_tiny_far, report)
            if not ps_fars.size:
                continue
            scores = pair_scores("cosine", ps.features, ps.i, ps.j)
            with stage("sort"):  # one sort for TAR@FAR, the curve, EER, DET and the long table
                counts = binary_counts(ps.labels, scores)
            with stage("curves"):
                res = tar_at_far(scores, ps.labels, ps_fars, convention, allow_tiny_far=True, counts=counts)
                key = {"model": model, "level": proto.level, "fusion": ps.fusion, "distance": "cosine"}
                rows.append({**key, "convention": convention, **{f"{f:g}": t for f, t in zip(res.fars, res.tar)}})
                fpr, tpr = roc_points(scores, ps.labels, counts=counts)
                curves.append(pd.DataFrame({**key, "fpr": fpr, "tpr": tpr}))
                if details is not None:
                    table_key = {"model": model, "fusion": ps.fusion, **table_keys}
                    _roc_details(details, scores, ps.labels, table_key, counts)
            if bootstrap and details is not None:
                units = ps.units(store)
                with stage("bootstrap"):
                    lo, hi = tar_at_far_interval(scores, ps.labels, units, ps_fars, convention, bootstrap, seed)
                ci = {"model": model, "fusion": ps.fusion, "convention": convention, "far": res.fars, "tar": res.tar}
                ci |= {"tar_lo": lo, "tar_hi": hi, "bootstrap": bootstrap, "resampled": units.kind, **table_keys}
                details.setdefault("roc_interval", []).append(pd.DataFrame(ci))
    if not rows:
        raise _no_far_left(report)
    reported = [f"{f:g}" for f in fars if any(f"{f:g}" in r for r in rows)]
    table = pd.DataFrame(rows, columns=["model", "level", "fusion", "distance", "convention", *reported])
    curve_df = add_keys(pd.concat(curves, ignore_index=True), **keys)
    report.seconds = time.perf_counter() - t0
    return add_keys(table, **keys), curve_df, report  # added last: the FAR columns keep their places


def roc_points(
    scores: np.ndarray, labels: np.ndarray, n_points: int = 400, counts: Counts | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve (`roc_curve_points`, sklearn's roc_curve) thinned to ~n_points log-spaced FPRs, for plotting."""
    fpr, tpr, _ = roc_curve_points(labels, scores, counts)
    idx = log_spaced_index(fpr, n_points)
    return fpr[idx], tpr[idx]


def log_spaced_index(rate: np.ndarray, n_points: int = 400) -> np.ndarray:
    """Indices thinning an ascending rate (FPR, FMR) to the last point at or below each of ~n_points log-spaced
    values in [1e-7, 1] and 0: what a log-axis figure can show, from a curve of millions of points."""
    grid = np.unique(np.r_[0.0, np.logspace(-7, 0, n_points)])
    idx = np.minimum(np.searchsorted(rate, grid, side="right") - 1, len(rate) - 1)
    return np.unique(np.maximum(idx, 0))


def _roc_details(
    details: dict[str, list[pd.DataFrame]], scores: np.ndarray, labels: np.ndarray, key: dict, counts: Counts
) -> None:
    """EER row, DET points thinned for a log-log figure (every point is kept where there are few) and the
    tidy long ROC (sklearn's roc_curve points) of one (model, fusion), appended to `details`."""
    if labels.all() or not labels.any():
        return  # EER and DET need both classes; the ROC table already shows NaN
    details.setdefault("eer", []).append(eer_table(scores, labels, key, counts))
    details.setdefault("det", []).append(det_table(scores, labels, key, counts, rows=log_spaced_index))
    details.setdefault("roc_long", []).append(roc_long_table(scores, labels, key, counts))
