"""The run report: one self-contained HTML file (figures inlined as base64 PNG, inline CSS, no scripts) and a
Markdown summary beside PNG files: provenance, AUC tables, comparison figures per FAR, ROC and fusion
tables, uncertainty distributions and failed images, read back from the steps' outputs and stores."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyze.outputs import command_line, toolkit_version
from analyze.tables import far_pivot, method_labels
from pipelines.context import StepContext
from pipelines.spec import ResolvedStep

MAX_FAILED_ROWS = 200
"""Failed images listed per store (the count is always given in full)."""

MAX_FIGURE_WIDTH = 1200
"""Wider PNGs (galleries) are scaled down to this many pixels before they are embedded."""


@dataclass
class Figure:
    """A figure of the report: caption, PNG bytes and the file name the Markdown summary links."""

    caption: str
    png: bytes
    name: str
    mime: str = "image/png"
    """The bytes' type: PNG for plots, JPEG for photo galleries (a tenth of the size)."""


@dataclass
class Section:
    """A titled part of the report: text paragraphs, tables (caption, frame) and figures, in order."""

    title: str
    anchor: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, s: str) -> None:
        self.blocks.append(("text", s))

    def table(self, caption: str, df: pd.DataFrame, best: str | None = None) -> None:
        """A table; `best` = 'max' bolds each numeric column's largest value."""
        self.blocks.append(("table", (caption, df, best)))

    def figure(self, fig: Figure) -> None:
        self.blocks.append(("figure", fig))


# ---- gathering ------------------------------------------------------------------------------------------


def _fig_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return _palette_png(buf.getvalue())


def _palette_png(png: bytes) -> bytes:
    """A plot's PNG with an adaptive 256-colour palette: a third of the size, the same look (plots have few
    colours; anti-aliased edges map to their nearest palette entry)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(png) else png


def _store_paths(steps: list[ResolvedStep]) -> list[Path]:
    """Stores the reported steps wrote or read, in order of first appearance."""
    paths: list[Path] = []
    for s in steps:
        if s.kind == "extract":
            paths.append(s.store)
        else:
            caches = s.args.get("cache")
            paths += [Path(str(c)) for c in (caches if isinstance(caches, list) else [caches]) if c]
    return list(dict.fromkeys(paths))


def provenance_section(stores: list[Path]) -> tuple[Section, Section]:
    """Per store: dataset, counts, protocols, models with checkpoints and sha256, configs, package versions;
    and the failed images (status other than ok) with their paths."""
    from featurestore.schema import STATUS_NAMES, STATUS_OK, STATUS_PENDING
    from featurestore.store import FeatureStore

    prov = Section("Provenance", "provenance")
    failed = Section("Failed images", "failed")
    for path in stores:
        with FeatureStore.open(path) as store:
            a, s = store.attrs, store.summary()
            status = ", ".join(f"{STATUS_NAMES.get(k, k)} {v:,}" for k, v in sorted(s.status_counts.items()))
            extra = a.get("extra") or {}
            prov.table(
                f"Store {path}",
                pd.DataFrame(
                    [
                        ("dataset", a.get("dataset", "?")),
                        ("manifest sha256", a.get("manifest_digest") or "n/a"),
                        ("data root", extra.get("data_root", "n/a")),
                        ("created", a.get("created", "?")),
                        ("format, schema", f"{store.format}, schema {a.get('schema')}"),
                        ("images, templates", f"{s.n_images:,} images, {s.n_templates:,} templates"),
                        ("chunks done", f"{s.chunks_done}/{s.n_chunks} (x {store.chunk_rows} rows)"),
                        ("image status", status),
                    ],
                    columns=["field", "value"],
                ),
            )
            protos = [
                (n, i["level"], i["n_pairs"], i["n_genuine"], i.get("description", ""))
                for n, i in store.protocols_info.items()
            ]
            prov.table(
                f"Protocols in {path.name}",
                pd.DataFrame(protos, columns=["protocol", "level", "pairs", "genuine", "description"]),
            )
            rows = []
            for name, spec in store.models.items():
                cfg = spec.config or {}
                rows.append(
                    {
                        "model": name,
                        "family": spec.family,
                        "architecture": (cfg.get("backbone") or {}).get("arch", cfg.get("arch", "")),
                        "outputs": ", ".join(spec.outputs),
                        "checkpoint": "random init" if spec.random_init else spec.checkpoint or "?",
                        "sha256": spec.checkpoint_sha256 or "n/a",
                        "config": cfg.get("source") or cfg.get("name", ""),
                        "preprocessing": ", ".join(f"{k}={v}" for k, v in (spec.preprocessing or {}).items()),
                        "flip": "on" if spec.flip else "off",
                    }
                )
            prov.table(f"Models in {path.name}", pd.DataFrame(rows))
            versions = a.get("package_versions") or {}
            prov.table(
                f"Package versions that wrote {path.name}",
                pd.DataFrame(sorted(versions.items()), columns=["package", "version"]),
            )
            st = store.status()
            bad = np.flatnonzero((st != STATUS_OK) & (st != STATUS_PENDING))
            if len(bad) == 0:
                failed.text(f"{path.name}: no failed images (all {s.n_images:,} images have status ok).")
            else:
                shown = bad[:MAX_FAILED_ROWS]
                df = pd.DataFrame(
                    {
                        "row": shown,
                        "path": store.image_column("path", rows=shown),
                        "status": [STATUS_NAMES.get(int(v), str(v)) for v in st[shown]],
                    }
                )
                more = f" (first {MAX_FAILED_ROWS} shown)" if len(bad) > MAX_FAILED_ROWS else ""
                failed.table(f"{path.name}: {len(bad):,} failed images{more}", df)
    return prov, failed


def reject_section(step: ResolvedStep) -> Section:
    """AUC table (methods x FARs, best per FAR in bold) and the comparison figure per FAR of a reject step."""
    from analyze.figures import reject_comparison_figures

    sec = Section(f"Reject verification: {step.id}", f"step-{step.id}")
    auc = pd.read_csv(step.dir / "auc.csv")
    df = pd.read_parquet(step.dir / "reject.parquet")
    if step.description:
        sec.text(step.description)
    summary = _json(step.dir / "summary.json")
    if auc.empty:
        sec.text("No AUC rows (no method could be evaluated).")
        return sec
    first = auc.iloc[0]
    sec.text(
        f"Level {first['level']}, protocol {first['protocol']}, threshold {first['threshold_mode']}, "
        f"{first['convention']} TAR@FAR convention; area under TAR over the rejected fraction "
        f"({', '.join(sorted(auc['auc_kind'].astype(str).unique()))})."
    )
    table = far_pivot(auc.assign(method=method_labels(auc, "report")), "method", "auc")
    sec.table(
        "AUC of TAR@FAR over the rejected fraction (higher is better; best in bold)", table.reset_index(), best="max"
    )
    _pair_notes(sec, summary)
    reference = _table(step.dir / "reference.parquet")
    _reject_extras(sec, step, auc)
    for stem, fig in reject_comparison_figures(df, reference=reference):
        sec.figure(Figure(f"All methods at one FAR ({stem})", _fig_png(fig), f"{step.id}_{stem}.png"))
    return sec


def _pair_notes(sec: Section, summary: dict[str, Any]) -> None:
    notes = [
        f"{key}: {p['dropped']:,} of {p['pairs']:,} pairs dropped (an image or template without valid outputs)"
        for key, p in (summary.get("pairs") or {}).items()
        if isinstance(p, dict) and p.get("dropped")
    ]
    for key, d in (summary.get("fars_dropped") or {}).items():
        if isinstance(d, dict) and d.get("fars"):
            fars = ", ".join(f"{f:g}" for f in d["fars"])
            notes.append(f"{key}: FAR {fars} not reported (below 1/n_impostors = {d.get('smallest_far', 0):.3g})")
    if notes:
        sec.text("; ".join(notes) + ".")


def fusion_section(step: ResolvedStep) -> Section:
    """TAR@FAR of every fusion x distance on template pairs."""
    sec = Section(f"Template fusion: {step.id}", f"step-{step.id}")
    df = pd.read_parquet(step.dir / "fusion.parquet")
    if step.description:
        sec.text(step.description)
    conv = ", ".join(sorted(df["convention"].astype(str).unique())) if "convention" in df else "?"
    table = far_pivot(df, ["model", "fusion", "distance"], "tar")
    sec.table(f"TAR@FAR per fusion and distance ({conv} convention; best in bold)", table.reset_index(), best="max")
    _interval_table(sec, df, ["model", "fusion", "distance"], "tar", "TAR@FAR")
    _pair_notes(sec, _json(step.dir / "summary.json"))
    return sec


def roc_section(step: ResolvedStep) -> Section:
    """The ROC table (TAR at fixed FARs) and the log-x ROC figure."""
    from analyze.figures import roc_figures

    sec = Section(f"ROC: {step.id}", f"step-{step.id}")
    table = pd.read_parquet(step.dir / "roc_table.parquet")
    if step.description:
        sec.text(step.description)
    sec.table("TAR at FAR (columns: FAR)", table, best="max")
    _pair_notes(sec, _json(step.dir / "summary.json"))
    curve = step.dir / "roc_curve.parquet"
    intervals = _table(step.dir / "roc_interval.parquet")
    if curve.is_file():
        for stem, fig in roc_figures(pd.read_parquet(curve), intervals=intervals):
            sec.figure(Figure(f"ROC ({stem})", _fig_png(fig), f"{step.id}_{stem}.png"))
    _roc_extras(sec, step, intervals)
    return sec


def distribution_section(step: ResolvedStep) -> Section:
    """Summary statistics of per-image uncertainties and the histogram/gallery figures the step drew."""
    sec = Section(f"Uncertainty distributions: {step.id}", f"step-{step.id}")
    if step.description:
        sec.text(step.description)
    summary = step.dir / "distribution_summary.csv"
    if summary.is_file():
        df = pd.read_csv(summary)
        cols = [
            c for c in ["dataset", "model", "quantity", "kind", "count", "mean", "std", "p5", "p50", "p95"] if c in df
        ]
        sec.table("Per-image quantities (images with status ok)", df[cols])
    for png in sorted(step.dir.glob("distribution_*.png")):
        sec.figure(Figure(png.stem.replace("_", " "), _fit_width(png.read_bytes()), f"{step.id}_{png.name}"))
    shown: dict[tuple, str] = {}
    signatures = _gallery_signatures(step)
    for png in sorted(step.dir.glob("gallery_*.png")):
        key = signatures.get(png.stem)
        if key is not None and key in shown:
            sec.text(f"{png.stem.replace('_', ' ')}: the same images in the same order as {shown[key]} (not repeated).")
            continue
        if key is not None:
            shown[key] = png.stem.replace("_", " ")
        jpeg = _as_jpeg(png.read_bytes())
        sec.figure(Figure(png.stem.replace("_", " "), jpeg, f"{step.id}_{png.stem}.jpg", "image/jpeg"))
    return sec


def _gallery_signatures(step: ResolvedStep) -> dict[str, tuple]:
    """Per gallery file stem, the image rows it shows (most and least uncertain, in order), from the step's
    uncertainty table: two galleries with the same signature show the same faces (e.g. two heads on one
    backbone ranking images alike) and the report shows one of them."""
    table = step.dir / "uncertainty.parquet"
    if not table.is_file():
        return {}
    from analyze.distribution import QUANTITIES, gallery_rows
    from analyze.figures import safe_name

    df = pd.read_parquet(table)
    n = int(step.args.get("gallery_size") or 8)
    out: dict[str, tuple] = {}
    for (dataset, model), sub in df.groupby(["dataset", "model"], sort=False):
        for q in QUANTITIES:
            if q in sub.columns and sub[q].notna().any():
                try:
                    most, least = gallery_rows(sub, q, n)
                except ValueError:
                    continue
                out[safe_name("gallery", dataset, model, q)] = (tuple(most["row"]), tuple(least["row"]))
    return out


def _as_jpeg(png: bytes, width: int = MAX_FIGURE_WIDTH, quality: int = 80) -> bytes:
    """A gallery (photographs) as a JPEG no wider than `width`: a tenth of the PNG's size, looks the same."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def train_section(step: ResolvedStep) -> Section:
    """A train step: the held-out Spearman correlations of the learned scale and PFE sigma^2 with the true
    degradation (demo-heads), first and last losses, and each run's loss plot."""
    sec = Section(f"Training: {step.id}", f"step-{step.id}")
    if step.description:
        sec.text(step.description)
    metrics = _json(step.dir / "demo_metrics.json")
    if metrics:
        sec.text(
            f"Held-out images: {metrics.get('n_heldout', '?')} (warm-up on {metrics.get('n_warmup', '?')}, heads on "
            f"{metrics.get('n_head', '?')}). The method works when the learned scale falls as the true degradation "
            "severity rises (Spearman < 0; the goal is <= -0.3) and PFE's sigma^2 rises with it (> 0)."
            + (
                f" Class centres: the {metrics['n_centre_images']} training images with true severity <= "
                f"{metrics['centre_max_severity']} ({metrics.get('n_centre_identities', '?')} identities)."
                if "n_centre_images" in metrics
                else ""
            )
        )
        rows = []
        quantities = (
            ("scale", "ScaleFace scale", "< 0"),
            ("optimal_scale", "loss-optimal scale s* (the objective's own target)", "< 0"),
            ("pfe_log_sigma_sq", "PFE mean log sigma^2", "> 0"),
        )
        for key, label, sign in quantities:
            if f"{key}_spearman_vs_severity" in metrics:
                lo, hi = (metrics.get(f"{key}_heldout_range") or [float("nan")] * 2)[:2]
                rows.append((label, metrics[f"{key}_spearman_vs_severity"], sign, lo, hi))
        sec.table(
            "Spearman correlation with the true degradation severity on held-out images",
            pd.DataFrame(rows, columns=["quantity", "spearman", "works when", "held-out min", "held-out max"]),
        )
        losses = [
            (run, metrics.get(f"{run}_first_loss"), metrics.get(f"{run}_last_loss"), metrics.get(f"{run}_seconds"))
            for run in ("warmup", "scale", "pfe")
            if f"{run}_last_loss" in metrics
        ]
        sec.table("Runs", pd.DataFrame(losses, columns=["run", "first loss", "last loss", "seconds (this run)"]))
    else:
        summary = _json(step.dir / "summary.json")
        if summary:
            keep = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
            sec.table("Run summary", pd.DataFrame([(k, str(v)) for k, v in keep.items()], columns=["field", "value"]))
    for png in sorted(step.dir.glob("**/loss.png")):
        run = png.parent.relative_to(step.dir).as_posix()
        name = f"{step.id}_{run.replace('/', '_')}_loss.png" if run != "." else f"{step.id}_loss.png"
        sec.figure(Figure(f"Loss per step ({run if run != '.' else step.id})", _fit_width(png.read_bytes()), name))
    return sec


def _fit_width(png: bytes, width: int = MAX_FIGURE_WIDTH) -> bytes:
    """A PNG no wider than `width` pixels (the page shows ~1100): keeps the HTML small, looks the same."""
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    if img.width <= width:
        return _palette_png(png)
    img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return _palette_png(buf.getvalue())


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---- issue 11: EDC, references, EER/DET, intervals, identification, 10-fold accuracy ---------------------


def _table(path: Path) -> pd.DataFrame | None:
    """A step's optional table (written only with some options), or None."""
    return pd.read_parquet(path) if path.is_file() else None


def _interval_table(sec: Section, df: pd.DataFrame, keys: list[str], value: str, what: str) -> None:
    """With --bootstrap: `value [lo, hi]` per method and FAR, the 95% percentile interval (subjects resampled)."""
    lo, hi = f"{value}_lo", f"{value}_hi"
    if df is None or lo not in df.columns:
        return
    text = df.assign(cell=[f"{v:.4f} [{a:.4f}, {b:.4f}]" for v, a, b in zip(df[value], df[lo], df[hi])])
    table = text.pivot_table(index=keys, columns="far", values="cell", aggfunc="first", sort=False)
    table.columns = [f"FAR={c:g}" for c in table.columns]
    n = int(df["bootstrap"].iloc[0]) if "bootstrap" in df else 0
    resampled = df["resampled"].iloc[0] if "resampled" in df else "subject"
    sec.table(f"{what} with 95% bootstrap intervals ({n} replicates, {resampled} resampled)", table.reset_index())


def _reject_extras(sec: Section, step: ResolvedStep, auc: pd.DataFrame) -> None:
    """The AUC intervals (--bootstrap), the references' AUCs and, with a fixed threshold, the EDC's partial areas."""
    if "auc_lo" in auc.columns:
        cells = auc.assign(
            method=method_labels(auc, "report"),
            cell=[f"{v:.4f} [{a:.4f}, {b:.4f}]" for v, a, b in zip(auc["auc"], auc["auc_lo"], auc["auc_hi"])],
        )
        table = cells.pivot_table(index="method", columns="far", values="cell", aggfunc="first", sort=False)
        table.columns = [f"FAR={c:g}" for c in table.columns]
        sec.table(f"AUC with 95% bootstrap intervals ({auc['resampled'].iloc[0]} resampled)", table.reset_index())
    ref = step.dir / "reference_auc.csv"
    if ref.is_file():
        ref_auc = pd.read_csv(ref)
        if not ref_auc.empty:
            table = far_pivot(ref_auc.assign(method=method_labels(ref_auc, "report")), "method", "auc")
            sec.table("Reference curves' AUC: oracle (uses the labels) and random order", table.reset_index())
    edc = _table(step.dir / "edc.parquet")
    if edc is not None and not edc.empty:
        table = far_pivot(edc.assign(method=method_labels(edc, "report")), "method", "pauc_minus_ideal")
        limit = float(edc["discard_limit"].iloc[0])
        sec.table(
            f"EDC (ISO/IEC 29794-1:2024): partial area under FNMR up to {limit:g} discarded, minus the ideal "
            "curve's (lower is better; oracle and random: references)",
            table.reset_index(),
        )


def _roc_extras(sec: Section, step: ResolvedStep, intervals: pd.DataFrame | None) -> None:
    """EER table, TAR intervals (--bootstrap) and the DET figure of a roc step."""
    from analyze.figures import det_figures

    eer = _table(step.dir / "eer.parquet")
    if eer is not None:
        cols = [c for c in ("model", "fusion", "eer", "threshold", "eer_rule") if c in eer]
        sec.table("Equal error rate (cosine; lower is better)", eer[cols])
    _interval_table(sec, intervals, ["model", "fusion"], "tar", "TAR@FAR")
    det = _table(step.dir / "det.parquet")
    if det is not None and not det.empty:
        for stem, fig in det_figures(det, eer=eer):
            sec.figure(Figure(f"DET: FNMR against FMR, both log ({stem})", _fig_png(fig), f"{step.id}_{stem}.png"))


def identify_section(step: ResolvedStep) -> Section:
    """1:N identification: TPIR@FPIR (with intervals under --bootstrap) and CMC per gallery and their mean, the
    rejection AUCs, and the figures the step drew."""
    sec = Section(f"1:N identification: {step.id}", f"step-{step.id}")
    if step.description:
        sec.text(step.description)
    summary = _json(step.dir / "summary.json")
    galleries = ", ".join(f"{g} ({n:,} templates)" for g, n in (summary.get("galleries") or {}).items())
    sec.text(
        f"Protocol {summary.get('protocol', '?')}: galleries {galleries or '?'}, {summary.get('probes', 0):,} probe "
        "templates; each gallery searched on its own, `mean` = the mean over galleries (never one merged gallery)."
    )
    tpir = _table(step.dir / "tpir.parquet")
    if tpir is not None and not tpir.empty:
        if "tpir_lo" in tpir.columns:
            tpir = tpir.assign(tpir_ci=[f"[{a:.4f}, {b:.4f}]" for a, b in zip(tpir["tpir_lo"], tpir["tpir_hi"])])
        cols = [c for c in ("model", "fusion", "gallery", "fpir", "tpir", "tpir_ci", "threshold", "n_mated",
                            "n_nonmated") if c in tpir]  # fmt: skip
        sec.table("TPIR at FPIR (exact threshold rule on non-mated top-1 scores; 95% interval with --bootstrap)",
                  tpir[cols])  # fmt: skip
    cmc = _table(step.dir / "cmc.parquet")
    if cmc is not None and not cmc.empty:
        table = cmc.pivot_table(index=["model", "fusion", "gallery"], columns="rank", values="rate", sort=False)
        table.columns = [f"rank {r}" for r in table.columns]
        sec.table("CMC: mated probes whose mate is within rank r", table.reset_index(), best="max")
    auc = _table(step.dir / "reject_auc.parquet")
    if auc is not None and not auc.empty:
        mean = auc[auc["gallery"] == "mean"]
        table = mean.pivot_table(index=["model", "fusion", "uncertainty", "threshold_mode"], columns="fpir",
                                 values="auc", sort=False)  # fmt: skip
        table.columns = [f"FPIR={c:g}" for c in table.columns]
        sec.table("Identification with rejection: AUC of TPIR over the rejected fraction (galleries' mean)",
                  table.reset_index(), best="max")  # fmt: skip
    for png in sorted((step.dir / "figures").glob("*.png")):
        sec.figure(Figure(png.stem.replace("_", " "), _fit_width(png.read_bytes()), f"{step.id}_{png.name}"))
    return sec


def accuracy_section(step: ResolvedStep) -> Section:
    """10-fold accuracy and VAL@FAR per model and protocol (with the bootstrap interval when computed), and
    accuracy as uncertain pairs are rejected."""
    sec = Section(f"10-fold verification accuracy: {step.id}", f"step-{step.id}")
    if step.description:
        sec.text(step.description)
    acc = _table(step.dir / "accuracy.parquet")
    if acc is not None and not acc.empty:
        cols = [c for c in ("model", "protocol", "flip", "folds", "accuracy_mean", "accuracy_std", "accuracy_lo",
                            "accuracy_hi", "threshold_mean", "val", "val_far") if c in acc]  # fmt: skip
        sec.table("Accuracy (insightface 10-fold) and VAL@FAR (FaceNet); 95% interval with --bootstrap",
                  acc[cols], best="max")  # fmt: skip
    rej = _table(step.dir / "accuracy_reject.parquet")
    if rej is not None and not rej.empty:
        table = rej.pivot_table(index=["model", "protocol", "uncertainty"], columns="rejected_fraction",
                                values="accuracy_mean", sort=False)  # fmt: skip
        table.columns = [f"{c:.0%}" for c in table.columns]
        sec.table("Accuracy as the most uncertain pairs are rejected (columns: rejected fraction)",
                  table.reset_index(), best="max")  # fmt: skip
    return sec


SECTIONS = {
    "reject": reject_section,
    "fusion": fusion_section,
    "roc": roc_section,
    "distribution": distribution_section,
    "identify": identify_section,
    "accuracy": accuracy_section,
    "train": train_section,
}


def gather(step: ResolvedStep, ctx: StepContext) -> tuple[list[Section], pd.DataFrame]:
    """Every section of the report for the steps `step` needs, and the steps table."""
    reported = [ctx.steps[i] for i in step.needs if i in ctx.steps]
    runs = pd.DataFrame(
        [
            {
                "step": s.id,
                "kind": s.kind,
                "finished": ctx.records.get(s.id, {}).get("finished", ""),
                "seconds": ctx.records.get(s.id, {}).get("seconds", ""),
                "fingerprint": str(ctx.records.get(s.id, {}).get("fingerprint", ""))[:12],
            }
            for s in reported
        ]
    )
    sections: list[Section] = []
    stores = _store_paths(reported)
    failed = None
    if stores:
        prov, failed = provenance_section(stores)
        sections.append(prov)
    for s in reported:
        if s.kind in SECTIONS:
            sections.append(SECTIONS[s.kind](s))
    if failed is not None:
        sections.append(failed)
    return sections, runs


# ---- rendering ----------------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff;min-height:100vh;
box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:36px 0 10px;padding-bottom:6px;
border-bottom:2px solid #e3e6eb}
.sub{color:#5b6475;margin:0 0 16px;font-size:14px}
nav{background:#f0f3f7;border-radius:6px;padding:10px 16px;font-size:14px}
nav a{margin-right:16px;color:#1f5fbf;text-decoration:none}nav a:hover{text-decoration:underline}
p{line-height:1.5;font-size:14px}
.tbl{overflow-x:auto;margin:10px 0 18px}
table{border-collapse:collapse;font-size:13px;min-width:40%}
caption{text-align:left;font-weight:600;padding:4px 0 6px;color:#333b4a}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
tr:nth-child(even) td{background:#fafbfc}
td.best{font-weight:700;color:#0b6b2e}
td.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
figure{margin:14px 0 22px;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid #e3e6eb;border-radius:4px}
figcaption{font-size:12px;color:#5b6475;margin-top:4px}
footer{margin-top:40px;font-size:12px;color:#7a8292}
"""


def _fmt(v: Any) -> tuple[str, bool]:
    """Cell text and whether it is numeric."""
    if isinstance(v, bool | np.bool_):
        return str(bool(v)), False
    if isinstance(v, int | np.integer):
        return f"{int(v):,}" if abs(int(v)) >= 10000 else str(int(v)), True
    if isinstance(v, float | np.floating):
        if np.isnan(v):
            return "–", True
        return (f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.3g}"), True
    return ("" if v is None else str(v)), False


def _best_cells(df: pd.DataFrame, best: str | None) -> set[tuple[int, str]]:
    if best != "max":
        return set()
    out = set()
    for col in df.columns:
        vals = pd.to_numeric(df[col], errors="coerce")
        if df[col].dtype.kind in "fi" and vals.notna().any() and len(df) > 1:
            m = vals.max()
            out |= {(i, col) for i in np.flatnonzero((vals == m).to_numpy())}
    return out


def _html_table(caption: str, df: pd.DataFrame, best: str | None) -> str:
    bold = _best_cells(df, best)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = []
        for col, v in zip(df.columns, row):
            text, num = _fmt(v)
            cls = (
                ["num"]
                if num
                else (["mono"] if str(col) in ("sha256", "fingerprint", "value") and len(text) > 40 else [])
            )
            if (i, col) in bold:
                cls.append("best")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="tbl"><table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _md_table(caption: str, df: pd.DataFrame, best: str | None) -> str:
    bold = _best_cells(df, best)

    def cell(i: int, col: Any, v: Any) -> str:
        text = _fmt(v)[0].replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if (i, col) in bold else text

    lines = [
        f"**{caption}**",
        "",
        "| " + " | ".join(str(c) for c in df.columns) + " |",
        "|" + "|".join("---" for _ in df.columns) + "|",
    ]
    for i, row in enumerate(df.itertuples(index=False)):
        lines.append("| " + " | ".join(cell(i, c, v) for c, v in zip(df.columns, row)) + " |")
    return "\n".join(lines)


def render_html(title: str, header: list[tuple[str, str]], sections: list[Section], runs: pd.DataFrame) -> str:
    """The whole report as one HTML document: inline CSS, figures as data: URIs, no scripts or links out."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="sub">' + " &middot; ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in header) + "</p>",
        "<nav>"
        + "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
        + '<a href="#steps">Steps</a></nav>',
    ]
    for s in sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        for kind, block in s.blocks:
            if kind == "text":
                parts.append(f"<p>{html.escape(block)}</p>")
            elif kind == "table":
                parts.append(_html_table(*block))
            else:
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(
                    f'<figure><img alt="{html.escape(block.caption)}" src="data:{block.mime};base64,{data}">'
                    f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
                )
        parts.append("</section>")
    parts.append('<section id="steps"><h2>Steps</h2>' + _html_table("Steps of this run", runs, None) + "</section>")
    parts.append(
        "<footer>Written by the scaleface-toolkit <code>pipelines</code> report step. "
        "Self-contained: no external files, styles or scripts.</footer></main></body></html>"
    )
    return "\n".join(parts) + "\n"


def render_markdown(
    title: str, header: list[tuple[str, str]], sections: list[Section], runs: pd.DataFrame, fig_dir: str
) -> str:
    """The same report as Markdown, with figures linked as PNG files under `fig_dir`."""
    lines = [f"# {title}", "", *(f"- {k}: {v}" for k, v in header), ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for kind, block in s.blocks:
            if kind == "text":
                lines += [block, ""]
            elif kind == "table":
                lines += [_md_table(*block), ""]
            else:
                lines += [f"![{block.caption}]({fig_dir}/{block.name})", ""]
    lines += ["## Steps", "", _md_table("Steps of this run", runs, None), ""]
    return "\n".join(lines)


def git_commit() -> str:
    """The toolkit checkout's git commit (with '+changes' when its work tree differs), or 'n/a' outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return "n/a"
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    if sha.returncode != 0:
        return "n/a"
    return sha.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def write_report(step: ResolvedStep, ctx: StepContext, out: Path) -> list[Path]:
    """report.html (self-contained) and report.md with figures/*.png in `out`; returns the files written."""
    sections, runs = gather(step, ctx)
    title = str(step.args.get("title") or f"Pipeline {ctx.pipeline}")
    header = [
        ("pipeline", ctx.pipeline),
        ("file", ctx.source),
        ("run folder", str(ctx.out_dir)),
        ("written", datetime.now(UTC).isoformat(timespec="seconds")),
        ("command line", command_line()),
        ("toolkit", f"scaleface-toolkit {toolkit_version()}, git commit {git_commit()}"),
    ]
    params = pd.DataFrame(
        [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in ctx.params.items()],
        columns=["parameter", "value"],
    )
    if len(params):
        first = Section("Parameters", "parameters")
        first.table("Pipeline parameters as resolved for this run", params)
        sections.insert(0, first)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for s in sections:
        for kind, block in s.blocks:
            if kind == "figure":
                p = fig_dir / block.name
                p.write_bytes(block.png)
                written.append(p)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(title, header, sections, runs), encoding="utf-8")
    md_path.write_text(render_markdown(title, header, sections, runs, "figures"), encoding="utf-8")
    return [html_path, md_path, *written]
