"""Paper-ready figures (issue 12 item 5): labels, method selection, colour per model and line style per metric,
legend outside the data, no titles, fitted ROC axis, style sheet, size and dpi, identical curves visible, and
`analyze compare` overlaying runs. Each figure kind is rendered to a PNG and read back."""

from __future__ import annotations

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from test_figures import reject_table

from analyze.figures import (
    FigureStyle,
    fitted_fpr_floor,
    parse_labels,
    parse_size,
    plot_reject_comparison,
    plot_roc,
    reject_comparison_figures,
    roc_figures,
)

METHODS = [("scaleface", "cosine", "mean"), ("pfe", "cosine", "mean"), ("pfe", "MLS", "harmonic-sum")]


def _roc(models=("scaleface", "pfe"), fpr=(0.0, 1e-3, 1e-2, 1e-1, 1.0)):
    rows = [
        {"model": m, "level": "template", "fusion": "media", "distance": "cosine", "fpr": f, "tpr": t + 0.01 * k}
        for k, m in enumerate(models)
        for f, t in zip(fpr, [0.1, 0.5, 0.7, 0.9, 0.99])
    ]
    return pd.DataFrame(rows)


def test_colour_follows_the_model_and_line_style_the_metric():
    df = reject_table(METHODS, fars=(1e-3,))
    ((_, fig),) = list(reject_comparison_figures(df))
    lines = {line.get_label().split(" (AUC")[0]: line for line in fig.axes[0].get_lines()}
    sf, pfe_cos, pfe_mls = (lines[k] for k in ["scaleface: cosine_mean [fusion mean]",
                                                "pfe: cosine_mean [fusion mean]", "pfe: MLS_harmonic-sum [fusion mean]"])  # fmt: skip
    assert pfe_cos.get_color() == pfe_mls.get_color() != sf.get_color()  # one colour per model
    assert sf.get_linestyle() == pfe_cos.get_linestyle() != pfe_mls.get_linestyle()  # one style per metric
    legend = fig.axes[0].get_legend()
    assert legend.get_bbox_to_anchor().y1 < fig.axes[0].bbox.y0 + 1  # below the axes, outside the data
    plt.close(fig)


def test_labels_methods_and_no_titles():
    df = reject_table(METHODS, fars=(1e-3,))
    style = FigureStyle(labels=parse_labels(["pfe=PFE (ours)"]), methods=("PFE",), titles=False)
    ((_, fig),) = list(reject_comparison_figures(df, style=style))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 2 and all(t.startswith("PFE (ours): ") for t in texts)
    assert ax.get_title() == ""
    plt.close(fig)
    with pytest.raises(ValueError, match="expected MODEL=NAME"):
        parse_labels(["pfe"])
    with pytest.raises(ValueError, match="W,H"):
        parse_size("6x4")


def test_identical_curves_are_both_visible():
    df = reject_table(METHODS[:2], fars=(1e-3,))
    df.loc[df["model"] == "pfe", "tar"] = df.loc[df["model"] == "scaleface", "tar"].to_numpy()
    ((_, fig),) = list(reject_comparison_figures(df))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    second = [line for line in lines if "(= " in line.get_label()]
    assert len(second) == 1 and second[0].get_marker() == "o"  # drawn on top with open markers
    plt.close(fig)


def test_roc_axis_fitted_to_the_data_size_dpi_and_style_sheet(tmp_path):
    assert fitted_fpr_floor(np.array([0, 2.6e-4, 0.1])) == pytest.approx(1e-4)
    assert fitted_fpr_floor(np.array([0.0])) == pytest.approx(1e-6)
    ((_, fig),) = list(roc_figures(_roc()))
    assert fig.axes[0].get_xlim() == pytest.approx((1e-3, 1.0))
    plt.close(fig)
    sheet = tmp_path / "paper.mplstyle"
    sheet.write_text("axes.facecolor: black\n")
    style = FigureStyle(size=(4.0, 3.0), dpi=50, style_file=str(sheet))
    png = next(p for p in plot_roc(_roc(), tmp_path / "f", style=style) if p.suffix == ".png")
    img = mpimg.imread(png)
    assert img.shape[0] < 400 and img.shape[1] < 400  # 4 x 3 in at 50 dpi (+ legend), not 7 x 5 at 150
    assert img[img.shape[0] // 4, img.shape[1] // 2][:3].max() < 0.1  # the style sheet's black axes
    pngs = [p for p in plot_reject_comparison(reject_table(METHODS), tmp_path / "r") if p.suffix == ".png"]
    assert len(pngs) == 2 and all(mpimg.imread(p).shape[1] > 500 for p in pngs)


def test_compare_overlays_runs_with_their_auc(tmp_path):
    from analyze.cli import cli

    for run, offset in (("run1", 0.0), ("run2", 0.05)):
        d = tmp_path / run / "reject"
        d.mkdir(parents=True)
        df = reject_table(METHODS[:1], fars=(1e-3,))
        df["tar"] += offset
        df.to_parquet(d / "reject.parquet")
        _roc(("scaleface",)).to_parquet(d / "roc_curve.parquet")
    out = tmp_path / "cmp"
    res = CliRunner().invoke(
        cli,
        [
            "compare",
            str(tmp_path / "run1/reject"),
            str(tmp_path / "run2/reject"),
            "--out",
            str(out),
            "--label",
            "run2/scaleface=ScaleFace v2",
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    both = pd.read_parquet(out / "compare_reject.parquet")
    assert set(both["run"]) == {"run1", "run2"}
    pngs = sorted((out / "figures").glob("*.png"))
    assert [p.name.split("_")[0] for p in pngs] == ["compare", "roc"]
    ((_, fig),) = list(reject_comparison_figures(both, style=FigureStyle(labels=(("run2/scaleface", "v2"),))))
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(texts) == 2 and any(t.startswith("v2: ") for t in texts) and all("(AUC " in t for t in texts)
    plt.close(fig)
    bad = CliRunner().invoke(cli, ["compare", str(tmp_path), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "neither reject.parquet nor roc_curve.parquet" in bad.output
