"""Figures of analyze: files written and readable, one figure per group, the expected curves on each Axes."""

from __future__ import annotations

import re

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from analyze.figures import (
    REJECT_COLUMNS,
    line_styles,
    method_label,
    plot_reject_comparison,
    plot_reject_curves,
    plot_roc,
    reject_comparison_figures,
    reject_curve_figures,
    roc_figures,
    safe_name,
)

FRACTIONS = np.array([0.0, 0.1, 0.2, 0.3, 0.5])


def reject_table(methods: list[tuple[str, str, str]], fars=(1e-4, 1e-3), levels=("template",), fusion="mean"):
    """A tidy reject table: tar rises linearly with the rejected fraction, offset per method and FAR."""
    rows = []
    for level in levels:
        for k, (model, distance, uncertainty) in enumerate(methods):
            for far in fars:
                for r in FRACTIONS:
                    rows.append(
                        {
                            "model": model,
                            "level": level,
                            "protocol": "ijbc",
                            "fusion": fusion if level == "template" else np.nan,
                            "distance": distance,
                            "uncertainty": uncertainty,
                            "threshold_mode": "recompute",
                            "convention": "paper",
                            "far": far,
                            "rejected_fraction": r,
                            "tar": 0.5 + 0.01 * k + 0.2 * r + far,
                            "threshold": 0.3,
                            "kept_pairs": int(1000 * (1 - r)),
                        }
                    )
    return pd.DataFrame(rows, columns=list(REJECT_COLUMNS))


METHODS = [("scaleface", "cosine", "mean"), ("scaleface", "cosine", "min"), ("pfe", "MLS", "harmonic-sum")]


def close_all(figs):
    import matplotlib.pyplot as plt

    for _, fig in figs:
        plt.close(fig)


def test_safe_name_keeps_only_safe_characters():
    assert safe_name("reject", "my model/v2", "cos*ine", np.nan, None, "") == "reject_my_model_v2_cos_ine"
    assert safe_name("..", "/") == "figure"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", safe_name("a b", "é", "1e-4"))


def test_method_label_and_distinct_styles():
    assert method_label("scaleface", "cosine", "mean") == "scaleface: cosine_mean"
    assert method_label("pfe", "MLS", "harmonic-sum", "PFE") == "pfe: MLS_harmonic-sum [fusion PFE]"
    assert method_label("pfe", "MLS", "harmonic-sum", np.nan) == "pfe: MLS_harmonic-sum"
    styles = line_styles(40)
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 40


def test_reject_curves_one_figure_per_method_one_line_per_far(tmp_path):
    df = reject_table(METHODS, fars=(1e-4, 1e-3, 1e-2))
    figs = list(reject_curve_figures(df, dataset="IJB-C"))
    assert len(figs) == len(METHODS)
    stem, fig = figs[0]
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("TAR@FAR=1e-4 (AUC ")
    # AUC in the label is the trapezoid of the plotted curve
    x, y = ax.get_lines()[0].get_data()
    assert labels[0].endswith(f"{np.trapezoid(y, x):.4f})")
    np.testing.assert_allclose(x, FRACTIONS)
    assert "IJB-C" in ax.get_title() and "template" in ax.get_title()
    assert ax.get_xlabel() == "Rejected fraction of pairs" and ax.get_ylabel() == "TAR"
    close_all(figs)

    paths = plot_reject_curves(df, tmp_path)
    assert len(paths) == 2 * len(METHODS)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    for p in paths:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and p.stat().st_size > 5000
    img = mpimg.imread(paths[0])
    assert img.ndim == 3 and img.shape[0] > 300 and img.std() > 0


def test_reject_comparison_one_figure_per_level_far_with_every_method(tmp_path):
    df = reject_table(METHODS, fars=(1e-4, 1e-3), levels=("template", "image"))
    figs = list(reject_comparison_figures(df))
    assert len(figs) == 2 * 2  # levels x FARs
    stems = [s for s, _ in figs]
    assert len(set(stems)) == len(stems)
    for _, fig in figs:
        ax = fig.axes[0]
        assert len(ax.get_lines()) == len(METHODS)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(lab.startswith("scaleface: cosine_mean") for lab in labels)
        assert "TAR@FAR=" in ax.get_title()
    template = [f for s, f in figs if "template" in s][0].axes[0]
    image = [f for s, f in figs if "image" in s][0].axes[0]
    assert any("[fusion mean]" in t.get_text() for t in template.get_legend().get_texts())
    assert not any("fusion" in t.get_text() for t in image.get_legend().get_texts())
    close_all(figs)
    paths = plot_reject_comparison(df, tmp_path)
    assert len(paths) == 8 and all(p.exists() and p.stat().st_size > 5000 for p in paths)


def test_reject_comparison_twenty_methods_stay_distinguishable(tmp_path):
    methods = [(f"m{i // 5}", "cosine", u) for i, u in enumerate(["mean", "min", "max", "mul", "harmonic-sum"] * 4)]
    df = reject_table(methods, fars=(1e-4,))
    ((stem, fig),) = list(reject_comparison_figures(df))
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 20
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 20
    assert len(ax.get_legend().get_texts()) == 20
    paths = [p for p in plot_reject_comparison(df, tmp_path)]
    assert mpimg.imread(paths[0]).shape[1] > 1000  # legend beside the axes widens the figure
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_reject_table_missing_column_is_named():
    df = reject_table(METHODS).drop(columns=["tar"])
    with pytest.raises(ValueError, match="missing columns \\['tar'\\]"):
        list(reject_comparison_figures(df))


def test_roc_log_axis_per_level(tmp_path):
    fpr = np.array([0.0, 1e-6, 1e-4, 1e-2, 1.0])
    rows = []
    for level in ("template", "image"):
        for model, distance in (("scaleface", "cosine"), ("pfe", "MLS")):
            for f, t in zip(fpr, [0.1, 0.2, 0.6, 0.9, 1.0]):
                rows.append(
                    {"model": model, "level": level, "fusion": "mean", "distance": distance, "fpr": f, "tpr": t}
                )
    roc = pd.DataFrame(rows)
    figs = list(roc_figures(roc, dataset="IJB-C"))
    assert len(figs) == 2
    ax = figs[0][1].axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlim() == pytest.approx((1e-6, 1.0))
    assert len(ax.get_lines()) == 2
    x, _ = ax.get_lines()[0].get_data()
    np.testing.assert_array_equal(x, fpr[1:])  # FPR 0 left out of the log axis
    close_all(figs)
    paths = plot_roc(roc, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"roc_{lv}.{ext}" for lv in ("template", "image") for ext in ("png", "pdf")
    )
