"""`analyze identify` as one Python entry: `run_identify(store, out, IdentifyOptions)` fuses each model's
templates once, searches every gallery of a store's 1:N protocol with the probe set (each gallery on its
own, never merged), and writes TPIR@FPIR, CMC and identification-with-rejection tables, summary.json and
figures into an output folder it owns (analyze.outputs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyze.bootstrap import BOOTSTRAP_LEVEL, percentile_interval, tpir_replicates
from analyze.figure_pool import draw_split, load_figures, second_process
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
from analyze.timing import StageTimes, stage, timed_run
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

    models: tuple[str, ...] = field(default=(), metadata={"key": "model"})  # keys: a pipeline step's YAML
    protocol: str | None = None
    fusions: tuple[str, ...] = field(default=("media",), metadata={"key": "fusion"})
    fpirs: tuple[float, ...] = field(default=(), metadata={"key": "fpir"})
    ranks: tuple[int, ...] = field(default=(), metadata={"key": "rank"})
    allow_tiny_far: bool = False
    partial: bool = False
    reject: bool = True
    fractions: tuple[float, float, int] = field(default=(0.0, 0.5, 51), metadata={"key": "rejected"})
    figures: bool = True
    force: bool = field(default=False, metadata={"fingerprint": False})
    bootstrap: int = 0
    seed: int = 0


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
        return policy_for(store.model(model)).value_output, None
    mode, src = policy_for(store.model(model)).stored().fused_by(fusion_spec(fusion))
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
    with second_process(options.figures) as submit:  # the figure worker is waited for on leaving
        submit(load_figures)  # it starts (imports) while the fusions and searches run
        with timed_run() as times:
            return _run_identify(store, out, options, times, submit)


def _run_identify(
    store: FeatureStore,
    out: str | Path | None,
    options: IdentifyOptions,
    times: StageTimes,
    submit: Callable[..., Future],
) -> IdentifyResult:
    """run_identify on an open store; `times` collects the stages for summary.json's `timings`."""
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
    interval_rows: list[dict[str, Any]] = []
    fractions = np.linspace(*options.fractions[:2], int(options.fractions[2]))
    for model in models:
        for fusion in options.fusions:
            key = f"{model}/{fusion}"
            with stage("fuse"):
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
                with stage("search"):
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
            probe_units, n_units = _probe_units(probe_subjects, idp.probe.template[p_found])
            replicates: dict[str, np.ndarray] = {}
            with stage("curves"):  # TPIR@FPIR, CMC and the rejection curves of every gallery
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
                    if kept.size and options.bootstrap:
                        ident = np.where(res.mate_rank == 1, res.mate_score, -np.inf)
                        with stage("bootstrap"):
                            replicates[g] = tpir_replicates(
                                res.mated, ident, res.top1, probe_units, n_units, kept, options.bootstrap, options.seed
                            )
                        lo, hi = percentile_interval(replicates[g])
                        interval_rows += [
                            {
                                "model": model,
                                "fusion": fusion,
                                "gallery": g,
                                "fpir": float(f),
                                "tpir_lo": a,
                                "tpir_hi": b,
                            }
                            for f, a, b in zip(kept, lo, hi)
                        ]
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
            same = [per_gallery_fpirs.get(g) for g in replicates]
            if len(replicates) == len(idp.galleries) > 1 and all(np.array_equal(same[0], f) for f in same):
                lo, hi = percentile_interval(np.mean([replicates[g] for g in replicates], axis=0))
                interval_rows += [
                    {"model": model, "fusion": fusion, "gallery": MEAN, "fpir": float(f), "tpir_lo": a, "tpir_hi": b}
                    for f, a, b in zip(same[0], lo, hi)
                ]
            if options.reject and probe_unc is None:
                summary["notes"].append(f"{key}: fusion {fusion!r} gives no template uncertainty: no rejection curve")
    if not tpir_rows and not cmc_rows:
        raise ValueError("nothing to report: every FPIR was dropped and no CMC was computed")
    tpir_df = _with_mean(pd.DataFrame(tpir_rows, columns=TPIR_COLUMNS + TPIR_EXTRA), "fpir", "tpir", len(idp.galleries))
    if options.bootstrap:
        ci = pd.DataFrame(interval_rows, columns=["model", "fusion", "gallery", "fpir", "tpir_lo", "tpir_hi"])
        tpir_df = tpir_df.merge(ci, on=["model", "fusion", "gallery", "fpir"], how="left")
        known = idp.probe.subject >= 0
        kind = "subject" if known.all() else ("template" if not known.any() else "subject, else template")
        tpir_df["bootstrap"], tpir_df["resampled"] = options.bootstrap, kind
        summary["params"] |= {"bootstrap": options.bootstrap, "seed": options.seed, "bootstrap_level": BOOTSTRAP_LEVEL}
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
        with stage("write"):
            owned.add(*write_table(tpir_df, d, "tpir"), *write_table(cmc_df, d, "cmc"))
            if options.reject:
                owned.add(*write_table(reject_df, d, "reject"), *write_table(auc_df, d, "reject_auc"))
        if options.figures:
            from analyze.identify_figures import plot_identification

            with stage("figures"):  # every second figure is drawn by the worker
                draw_split(
                    submit,
                    plot_identification,
                    pd.DataFrame(curve_rows),
                    tpir_df,
                    pd.DataFrame(cmc_curve_rows),
                    reject_df,
                    d / "figures",
                    store.dataset,
                )
        summary["seconds"] = time.perf_counter() - t0  # written last, so seconds and timings cover the figures
        summary["timings"] = times.as_dict()
        owned.add(write_json(summary, d / "summary.json"))
        owned.finish()
    return IdentifyResult(d, tpir_df, cmc_df, reject_df, auc_df, summary)


def _probe_units(subjects: np.ndarray, templates: np.ndarray) -> tuple[np.ndarray, int]:
    """Each probe's bootstrap unit (index) and their number: its subject, or its template where the subject is
    unknown (< 0); subjects and templates never share a unit."""
    key = np.where(subjects >= 0, subjects.astype(np.int64), -1 - templates.astype(np.int64))
    uniq, inv = np.unique(key, return_inverse=True)
    return inv, int(uniq.size)


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


def result_lines(res: IdentifyResult) -> tuple[list[str], list[str]]:
    """(notes for stderr, lines for stdout) of a run: dropped FPIRs and templates, then the TPIR@FPIR and CMC
    tables and where they were written; the click command and a pipeline step print the same."""
    s = res.summary
    notes = []
    for key, d in s["fpirs_dropped"].items():
        fp = ", ".join(f"{f:g}" for f in d["fpirs"])
        notes.append(
            f"note: {key}: default FPIR {fp} not reported: below 1/n_nonmated = {d['smallest_fpir']:.3g} "
            f"(n_nonmated = {d['n_nonmated']:,}); --allow-tiny-far reports such FPIRs anyway"
        )
    notes += [f"{key}: templates without usable images left out: {d}" for key, d in s["templates_dropped"].items()]
    notes += [f"note: {note}" for note in s["notes"]]
    lines = []
    if not res.tpir.empty:
        t = res.tpir.pivot_table(index=["model", "fusion", "gallery"], columns="fpir", values="tpir", sort=False)
        t.columns = [f"FPIR={c:g}" for c in t.columns]
        lines += [f"TPIR@FPIR ({s['params']['convention']} threshold rule):", t.to_string(float_format=_f4)]
    c = res.cmc.pivot_table(index=["model", "fusion", "gallery"], columns="rank", values="rate", sort=False)
    c.columns = [f"rank {r}" for r in c.columns]
    footer = f"wrote {res.out} in {s['seconds']:.1f} s"
    if s.get("timings"):  # the same `time:` line as the other analyze commands (analyze.timing)
        footer += "\ntime: " + ", ".join(f"{name} {value:.1f} s" for name, value in s["timings"].items())
    lines += ["CMC:", c.to_string(float_format=_f4), footer]
    return notes, lines


def _f4(v: float) -> str:
    return f"{v:.4f}"
