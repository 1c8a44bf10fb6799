"""`analyze identify` as one Python entry: `run_identify(store, out, IdentifyOptions)` fuses each model's
templates once, searches every gallery of a store's 1:N protocol with the probe set (each gallery on its
own, never merged), and writes TPIR@FPIR, CMC and identification-with-rejection tables, summary.json and
figures into an output folder it owns (analyze.outputs)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyze.identification import (
    CONVENTION,
    DEFAULT_FPIRS,
    DEFAULT_RANKS,
    Search,
    check_galleries,
    cmc,
    reject_curve,
    resolved_fpirs,
    search,
    tpir_at_fpir,
)
from analyze.loading import fuse_templates, resolve_models, valid_rows
from analyze.outputs import claim_out_dir, default_out_dir, write_json, write_table
from analyze.policy import PFE_CONFIDENCE, policy_for
from analyze.rows import check_unit_interval, image_scalar
from analyze.vocabulary import fusion_spec, parse_fusion
from featurestore.errors import StoreError
from featurestore.store import FeatureStore

MEAN = "mean"
"""The `gallery` value of the rows averaging the galleries (the mean of their TPIRs or CMC rates)."""
TPIR_COLUMNS = ["model", "fusion", "gallery", "fpir", "tpir", "threshold", "convention"]
TPIR_EXTRA = ["fpir_achieved", "n_mated", "n_nonmated"]
CMC_COLUMNS = ["model", "fusion", "gallery", "rank", "rate"]
REJECT_COLUMNS = [
    "model",
    "fusion",
    "uncertainty",
    "gallery",
    "threshold_mode",
    "fpir",
    "rejected_fraction",
    "tpir",
    "threshold",
    "kept_mated",
    "kept_nonmated",
]
CURVE_POINTS = 40
"""FPIRs on the TPIR-vs-FPIR figure's curve: log-spaced from 1/n_nonmated to 1."""


@dataclass(frozen=True)
class IdentifyOptions:
    """Everything `analyze identify` takes besides the store and the output folder."""

    models: tuple[str, ...] = ()
    protocol: str | None = None
    fusions: tuple[str, ...] = ("media",)
    fpirs: tuple[float, ...] = ()
    ranks: tuple[int, ...] = ()
    allow_tiny_far: bool = False
    partial: bool = False
    reject: bool = True
    fractions: tuple[float, float, int] = (0.0, 0.5, 51)
    figures: bool = True
    force: bool = False


@dataclass
class IdentifyResult:
    out: Path
    tpir: pd.DataFrame
    cmc: pd.DataFrame
    reject: pd.DataFrame
    reject_auc: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _probe_uncertainty(store: FeatureStore, model: str, fusion: str, unc: np.ndarray | None) -> tuple[str, Any]:
    """(name, one value per template, higher = more uncertain) from a fusion's template uncertainty, or
    (name, None) when the fusion gives none. Confidences (scale, norm, PFE 1/hm) are negated."""
    if unc is None:
        return policy_for(store.model(model).outputs).value_output, None
    mode, src = policy_for(store.model(model).outputs).stored().fused_by(fusion_spec(fusion))
    if src == PFE_CONFIDENCE:
        src = "pfe_confidence"
    u = image_scalar(unc)
    return src, (-u if mode == "confidence" else u)


def _set_rows(ids: np.ndarray, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows in the fused templates, mask of templates found) for a set's template ids."""
    pos = np.searchsorted(ids, templates)
    pos_c = np.minimum(pos, max(len(ids) - 1, 0))
    found = (pos < len(ids)) & (ids[pos_c] == templates) if len(ids) else np.zeros(len(templates), bool)
    return pos_c[found], found


def run_identify(store: FeatureStore | str | Path, out: str | Path | None, options: IdentifyOptions) -> IdentifyResult:
    """Run 1:N identification on a store (open, or a path) and write its outputs to `out` (None: beside the
    store, <store>.analysis/identify/)."""
    if not isinstance(store, FeatureStore):
        with FeatureStore.open(store) as opened:
            return run_identify(opened, out, options)
    t0 = time.perf_counter()
    for f in options.fusions:
        parse_fusion(f)
    fpirs = check_unit_interval(options.fpirs or DEFAULT_FPIRS, "fpirs", each="FPIR", show=True)
    ranks = np.asarray(options.ranks or DEFAULT_RANKS, dtype=np.int64)
    if (ranks < 1).any():
        raise ValueError(f"ranks must be >= 1, got {ranks[ranks < 1].tolist()}")
    if not store.identification_info:
        raise StoreError(
            f"{store.path} has no identification (1:N) protocol: the dataset's manifest names none, its 1:N CSVs "
            f"were absent when the store was made, or the store is schema {store.attrs.get('schema')} from before them"
        )
    name = options.protocol or next(iter(store.identification_info))
    idp = store.identification(name)
    models = resolve_models(store.models, options.models, str(store.path))
    check_galleries({g: ts.subject for g, ts in idp.galleries.items()}, idp.probe.subject)
    valid = valid_rows(store, models, options.partial)
    summary: dict[str, Any] = {
        "store": str(store.path),
        "dataset": store.dataset,
        "protocol": name,
        "galleries": {g: len(ts) for g, ts in idp.galleries.items()},
        "probes": len(idp.probe),
        "params": {
            "models": models,
            "fusions": list(options.fusions),
            "fpirs": fpirs.tolist(),
            "fpirs_explicit": bool(options.fpirs),
            "ranks": ranks.tolist(),
            "allow_tiny_far": options.allow_tiny_far,
            "partial": options.partial,
            "fractions": list(options.fractions),
            "convention": CONVENTION,
            "rank_ties": "counted against the mate (rank = 1 + non-mate templates scoring >= the mate)",
        },
        "excluded": {
            "images_not_done": valid.n_not_done,
            "images_failed": valid.n_failed,
            "images_nan": valid.n_nan,
            "images_used": int(valid.mask.sum()),
        },
        "templates_dropped": {},
        "fpirs_dropped": {},
        "notes": [],
    }
    tpir_rows: list[dict[str, Any]] = []
    cmc_rows: list[dict[str, Any]] = []
    curve_rows: list[dict[str, Any]] = []
    cmc_curve_rows: list[dict[str, Any]] = []
    reject_parts: list[pd.DataFrame] = []
    auc_rows: list[dict[str, Any]] = []
    fractions = np.linspace(*options.fractions[:2], int(options.fractions[2]))
    for model in models:
        for fusion in options.fusions:
            key = f"{model}/{fusion}"
            fused = fuse_templates(store, model, fusion, valid.mask)
            p_rows, p_found = _set_rows(fused.ids, idp.probe.template)
            dropped = {"probe": int((~p_found).sum())}
            probe_subjects = idp.probe.subject[p_found]
            probe_feats = fused.features[p_rows]
            unc_name, unc = _probe_uncertainty(store, model, fusion, fused.uncertainty)
            probe_unc = None if unc is None else unc[p_rows]
            searches: dict[str, Search] = {}
            for g, ts in idp.galleries.items():
                g_rows, g_found = _set_rows(fused.ids, ts.template)
                dropped[g] = int((~g_found).sum())
                res = search(probe_feats, probe_subjects, fused.features[g_rows], ts.subject[g_found], gallery=g)
                if res.n_mated == 0:
                    raise ValueError(
                        f"{key}: gallery {g!r} has no mated probe left once templates without usable images were "
                        f"dropped ({dropped[g]} gallery, {dropped['probe']} probe templates)"
                    )
                searches[g] = res
            if any(dropped.values()):
                summary["templates_dropped"][key] = dropped
            per_gallery_fpirs = {}
            for g, res in searches.items():
                cmc_all = cmc(res, ranks)
                cmc_rows += [
                    {"model": model, "fusion": fusion, "gallery": g, "rank": int(r), "rate": float(v)}
                    for r, v in zip(ranks, cmc_all)
                ]
                top_rank = int(min(res.n_gallery, max(20, ranks.max())))
                curve_r = np.arange(1, top_rank + 1)
                cmc_curve_rows += [
                    {"model": model, "fusion": fusion, "gallery": g, "rank": int(r), "rate": float(v)}
                    for r, v in zip(curve_r, cmc(res, curve_r))
                ]
                if res.n_nonmated == 0:
                    summary["notes"].append(f"{key} gallery {g}: no non-mated probe, so no TPIR@FPIR (CMC only)")
                    continue
                kept, tiny = resolved_fpirs(fpirs, bool(options.fpirs), res.n_nonmated, options.allow_tiny_far)
                if tiny.size:
                    summary["fpirs_dropped"][f"{key}/{g}"] = {
                        "fpirs": tiny.tolist(),
                        "smallest_fpir": 1.0 / res.n_nonmated,
                        "n_nonmated": res.n_nonmated,
                    }
                per_gallery_fpirs[g] = kept
                if kept.size:
                    r = tpir_at_fpir(res, kept)
                    for j, f in enumerate(kept):
                        tpir_rows.append(
                            {
                                "model": model,
                                "fusion": fusion,
                                "gallery": g,
                                "fpir": float(f),
                                "tpir": float(r.tpir[j]),
                                "threshold": float(r.threshold[j]),
                                "convention": CONVENTION,
                                "fpir_achieved": float(r.fpir_achieved[j]),
                                "n_mated": r.n_mated,
                                "n_nonmated": r.n_nonmated,
                            }
                        )
                grid = np.unique(np.geomspace(1.0 / res.n_nonmated, 1.0, CURVE_POINTS))
                rc = tpir_at_fpir(res, grid)
                curve_rows += [
                    {"model": model, "fusion": fusion, "gallery": g, "fpir": float(f), "tpir": float(t)}
                    for f, t in zip(rc.fpir_achieved, rc.tpir)
                ]
                if options.reject and probe_unc is not None and kept.size:
                    for mode in ("recompute", "fixed"):
                        curve = reject_curve(res, probe_unc, fractions, kept, mode)
                        df = pd.DataFrame(
                            {
                                "fpir": np.tile(kept, fractions.size),
                                "rejected_fraction": np.repeat(fractions, kept.size),
                                "tpir": curve.tpir.ravel(),
                                "threshold": curve.threshold.ravel(),
                                "kept_mated": np.repeat(curve.kept_mated, kept.size),
                                "kept_nonmated": np.repeat(curve.kept_nonmated, kept.size),
                            }
                        )
                        for k, v in (("model", model), ("fusion", fusion), ("uncertainty", unc_name)):
                            df[k] = v
                        df["gallery"], df["threshold_mode"] = g, mode
                        reject_parts.append(df[REJECT_COLUMNS])
                        auc_rows += [
                            {
                                "model": model,
                                "fusion": fusion,
                                "uncertainty": unc_name,
                                "gallery": g,
                                "threshold_mode": mode,
                                "fpir": float(f),
                                "auc": float(a),
                                "auc_kind": "tpir_vs_rejected_fraction",
                            }
                            for f, a in zip(kept, curve.auc())
                        ]
            if options.reject and probe_unc is None:
                summary["notes"].append(f"{key}: fusion {fusion!r} gives no template uncertainty: no rejection curve")
    if not tpir_rows and not cmc_rows:
        raise ValueError("nothing to report: every FPIR was dropped and no CMC was computed")
    tpir_df = _with_mean(pd.DataFrame(tpir_rows, columns=TPIR_COLUMNS + TPIR_EXTRA), "fpir", "tpir", len(idp.galleries))
    cmc_df = _with_mean(pd.DataFrame(cmc_rows, columns=CMC_COLUMNS), "rank", "rate", len(idp.galleries))
    reject_df = pd.concat(reject_parts, ignore_index=True) if reject_parts else pd.DataFrame(columns=REJECT_COLUMNS)
    reject_df = _with_mean(
        reject_df, ["uncertainty", "threshold_mode", "fpir", "rejected_fraction"], "tpir", len(idp.galleries)
    )
    auc_df = pd.DataFrame(
        auc_rows, columns=["model", "fusion", "uncertainty", "gallery", "threshold_mode", "fpir", "auc", "auc_kind"]
    )
    auc_df = _with_mean(auc_df, ["uncertainty", "threshold_mode", "fpir", "auc_kind"], "auc", len(idp.galleries))
    with claim_out_dir(
        out or default_out_dir(store.path, "identify"), options.force, "analyze identify", [store.path]
    ) as owned:
        d = owned.path
        owned.add(*write_table(tpir_df, d, "tpir"), *write_table(cmc_df, d, "cmc"))
        if options.reject:
            owned.add(*write_table(reject_df, d, "reject"), *write_table(auc_df, d, "reject_auc"))
        summary["seconds"] = time.perf_counter() - t0
        owned.add(write_json(summary, d / "summary.json"))
        if options.figures:
            from analyze.identify_figures import plot_identification

            plot_identification(
                pd.DataFrame(curve_rows), tpir_df, pd.DataFrame(cmc_curve_rows), reject_df, d / "figures", store.dataset
            )
        owned.finish()
    return IdentifyResult(d, tpir_df, cmc_df, reject_df, auc_df, summary)


def _with_mean(df: pd.DataFrame, keys: str | list[str], value: str, n_galleries: int) -> pd.DataFrame:
    """`df` plus one `gallery = mean` row per (model, fusion, keys) present in every gallery: the mean of
    `value` over the galleries (never one merged gallery). Thresholds differ per gallery: NaN there."""
    if df.empty:
        return df
    keys = [keys] if isinstance(keys, str) else keys
    by = ["model", "fusion", *keys]
    g = df.groupby(by, sort=False, dropna=False)
    mean = g[value].mean().reset_index()
    mean = mean[(g["gallery"].nunique().to_numpy() == n_galleries)]
    mean["gallery"] = MEAN
    out = pd.concat([df, mean], ignore_index=True)[list(df.columns)]
    if "convention" in out:
        out["convention"] = out["convention"].fillna(CONVENTION)
    for col in ("n_mated", "n_nonmated", "kept_mated", "kept_nonmated"):
        if col in out:
            out[col] = out[col].astype("Int64")  # counts stay integers; the mean rows have none
    return out
