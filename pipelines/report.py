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
    return buf.getvalue()


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
    for stem, fig in reject_comparison_figures(df):
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
    if curve.is_file():
        for stem, fig in roc_figures(pd.read_parquet(curve)):
            sec.figure(Figure(f"ROC ({stem})", _fig_png(fig), f"{step.id}_{stem}.png"))
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
    for png in sorted(step.dir.glob("distribution_*.png")) + sorted(step.dir.glob("gallery_*.png")):
        sec.figure(Figure(png.stem.replace("_", " "), _fit_width(png.read_bytes()), f"{step.id}_{png.name}"))
    return sec


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
        )
        rows = []
        quantities = (("scale", "ScaleFace scale", "< 0"), ("pfe_log_sigma_sq", "PFE mean log sigma^2", "> 0"))
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
        return png
    img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


SECTIONS = {
    "reject": reject_section,
    "fusion": fusion_section,
    "roc": roc_section,
    "distribution": distribution_section,
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
                    f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
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


def write_report(step: ResolvedStep, ctx: StepContext, out: Path) -> list[Path]:
    """report.html (self-contained) and report.md with figures/*.png in `out`; returns the files written."""
    sections, runs = gather(step, ctx)
    title = str(step.args.get("title") or f"Pipeline {ctx.pipeline}")
    header = [
        ("pipeline", ctx.pipeline),
        ("file", ctx.source),
        ("run folder", str(ctx.out_dir)),
        ("written", datetime.now(UTC).isoformat(timespec="seconds")),
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
