"""The run report, torch-free: a pipeline of analyses and a report over a synthetic image-free store with some
failed images; the HTML is self-contained and shows the store's provenance, the AUC table (values from
auc.csv, best per FAR in bold), one comparison figure per FAR, the ROC table, distributions and the failed
images; the Markdown links figures that exist; headless Chromium renders a non-blank page."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from PIL import Image

from facedata.synthetic.store import synthesize_store
from featurestore.schema import STATUS_ALIGN_FAILED, STATUS_UNREADABLE
from featurestore.store import FeatureStore
from pipelines.runner import run_pipeline

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FAILED = {3: STATUS_UNREADABLE, 17: STATUS_ALIGN_FAILED}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    store = synthesize_store(tmp / "s.zarr", preset="tiny-store", progress=False)
    status = zarr.open_array(store=str(store), path="images/status", mode="r+")
    for row, code in FAILED.items():
        status[row] = code
    spec = {
        "name": "report-test",
        "params": {"store": str(store)},
        "steps": [
            {
                "id": "reject",
                "kind": "reject",
                "with": {"cache": "${store}", "far": [0.01, 0.05], "rejected": "0:0.5:6", "no_figures": True},
            },
            {"id": "roc", "kind": "roc", "with": {"cache": "${store}", "far": [0.01, 0.1], "no_figures": True}},
            {"id": "dist", "kind": "distribution", "with": {"cache": "${store}", "gallery_size": 0, "bins": 20}},
            {"id": "report", "kind": "report", "with": {"title": "Report <test> & more"}},
        ],
    }
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp / "run"
    summary = run_pipeline(path, out)
    return out, store, summary


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_html_is_self_contained(run):
    out, _, summary = run
    html = (out / "report" / "report.html").read_text()
    assert summary.report == out / "report" / "report.html"
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r'(src|href)="(?!data:|#)', html), "every reference must be inline or an in-page anchor"
    assert "<title>Report &lt;test&gt; &amp; more</title>" in html, "text is HTML-escaped"
    images = _images(html)
    # one comparison figure per FAR (2), one ROC figure, one histogram per quantity (scale, sigma, norm)
    assert len(images) >= 2 + 1 + 3
    for png in images:
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png)).width > 100


def _cells(html: str, table_caption: str) -> list[list[str]]:
    """Rows of the table with that caption, as cell texts (with a '*' suffix for cells marked best)."""
    start = html.index(f"<caption>{table_caption}")
    body = html[start : html.index("</table>", start)]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", body):
        rows.append([c + ("*" if "best" in a else "") for a, c in re.findall(r"<td([^>]*)>(.*?)</td>", tr)])
    return [r for r in rows if r]


def test_auc_table_matches_auc_csv_and_marks_best(run):
    out, _, _ = run
    html = (out / "report" / "report.html").read_text()
    auc = pd.read_csv(out / "reject" / "auc.csv")
    rows = _cells(html, "AUC of TAR@FAR over the rejected fraction")
    assert len(rows) == auc.groupby(["model", "fusion", "distance", "uncertainty"]).ngroups
    for col, far in ((1, 0.01), (2, 0.05)):
        want = auc[auc["far"] == far]["auc"].to_numpy()
        got = [float(r[col].rstrip("*")) for r in rows]
        np.testing.assert_allclose(sorted(got), sorted(want), atol=5e-5)
        best = [float(r[col].rstrip("*")) for r in rows if r[col].endswith("*")]
        assert best and all(abs(b - want.max()) < 5e-5 for b in best)


def test_provenance_roc_distributions_and_failed_images(run):
    out, store_path, _ = run
    html = (out / "report" / "report.html").read_text()
    with FeatureStore.open(store_path) as store:
        versions = store.attrs["package_versions"]
        paths = store.image_column("path", rows=np.array(sorted(FAILED)))
        models = list(store.models)
    assert store_path.name in html and versions["numpy"] in html and versions["zarr"] in html
    for m in models:
        assert f"<td>{m}</td>" in html
    roc = pd.read_csv(out / "roc" / "roc_table.csv")
    roc_rows = _cells(html, "TAR at FAR")
    assert len(roc_rows) == len(roc)
    assert f"{roc['0.01'].iloc[0]:.4f}" in roc_rows[0][5].rstrip("*")
    assert "Per-image quantities" in html
    failed = _cells(html, "s.zarr: 2 failed images")
    assert [r[1] for r in failed] == list(paths)
    assert [r[2] for r in failed] == ["unreadable", "failed alignment"]


def test_markdown_summary_links_existing_figures(run):
    out, _, _ = run
    md = (out / "report" / "report.md").read_text()
    assert md.startswith("# Report <test> & more")
    assert "| method | FAR=0.01 | FAR=0.05 |" in md and "**" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) >= 6
    for link in links:
        assert (out / "report" / link).is_file(), link


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_chromium_renders_a_non_blank_page(run, tmp_path):
    out, _, _ = run
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        (out / "report" / "report.html").resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20, "the page looks blank"
    dark = (pixels < 128).mean()
    assert 0.005 < dark < 0.5, f"text and figures should cover part of the page, not none or all ({dark:.3f})"
