"""The report stays small (issue 12 item 9): galleries embedded as JPEG, plots as palette PNGs, duplicate
galleries shown once, and the provenance names the git commit and the command line."""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines import report  # noqa: E402
from pipelines.spec import ResolvedStep  # noqa: E402


def _photo_png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = (rng.random((300, 1600, 3)) * 40 + np.linspace(0, 200, 1600)[None, :, None]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_galleries_become_small_jpegs_and_plots_palette_pngs():
    png = _photo_png()
    jpeg = report._as_jpeg(png)
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.width == report.MAX_FIGURE_WIDTH and len(jpeg) < len(png) / 3
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    plot = report._fig_png(fig)
    assert Image.open(io.BytesIO(plot)).mode == "P"  # an adaptive palette


def _step(tmp_path, rows):
    d = tmp_path / "dist"
    d.mkdir()
    pd.DataFrame(rows).to_parquet(d / "uncertainty.parquet")
    for name in ("gallery_toy_a_scale", "gallery_toy_b_norm", "gallery_toy_c_norm"):
        (d / f"{name}.png").write_bytes(_photo_png(len(name)))
    return ResolvedStep(id="dist", kind="distribution", description="", args={"gallery_size": 2}, needs=[], dir=d)


def test_a_gallery_showing_the_same_faces_in_the_same_order_is_shown_once(tmp_path):
    row = np.arange(6)
    q = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.7])
    rows = (
        [{"dataset": "toy", "model": "a", "row": r, "scale": v} for r, v in zip(row, q)]
        + [{"dataset": "toy", "model": "b", "row": r, "norm": 2 * v} for r, v in zip(row, q)]  # same ranking
        + [{"dataset": "toy", "model": "c", "row": r, "norm": -v} for r, v in zip(row, q)]  # reversed
    )
    step = _step(tmp_path, rows)
    sec = report.distribution_section(step)
    figures = [b for k, b in sec.blocks if k == "figure"]
    texts = [b for k, b in sec.blocks if k == "text"]
    assert [f.name for f in figures] == ["dist_gallery_toy_a_scale.jpg", "dist_gallery_toy_c_norm.jpg"]
    assert all(f.mime == "image/jpeg" for f in figures)
    assert any("gallery toy b norm: the same images" in t and "gallery toy a scale" in t for t in texts)
    html = report.render_html("t", [], [sec], pd.DataFrame({"step": []}))
    assert html.count("data:image/jpeg;base64,") == 2


def test_provenance_names_the_git_commit_and_the_command_line():
    sha = report.git_commit()
    assert sha == "n/a" or re.fullmatch(r"[0-9a-f]{40}(\+changes)?", sha)
    from analyze.outputs import command_line

    assert command_line()
