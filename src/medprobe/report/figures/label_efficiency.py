"""Label efficiency: the task metric of the selected layer as the share of training labels shrinks."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from medprobe.report.figures.spec import FigureSpec
from medprobe.report.figures.style import (
    MARKERS,
    FigureSkipped,
    backbone_colours,
    chance_line,
    figure_style,
    fraction_text,
    metric_label,
    new_figure,
)
from medprobe.report.load import RunData, as_float


def label_efficiency_curves(run: RunData) -> Figure:
    """Task metric of the selected layer vs share of training labels (log x), mean over seeds.

    The band is the envelope of the per-seed 95% CIs (lowest lower bound to highest upper bound),
    which with one seed is that fit's CI; dots are the individual seeds.
    """
    metric = run.task_metric
    selected = run.selected(metric)
    fractions = sorted(f for f in selected["train_fraction"].unique() if f > 0)
    if len(fractions) < 2:
        raise FigureSkipped("the run used a single train fraction, so there is no label-efficiency curve")
    colours = backbone_colours(run)
    n_train = training_sizes(run)
    with figure_style():
        fig = new_figure(8.0, 4.5)
        ax = fig.add_subplot()
        for i, backbone in enumerate(b for b in run.backbones if b in set(selected["backbone"])):
            part = selected[selected["backbone"] == backbone]
            grouped = part.groupby("train_fraction")
            x = np.array(sorted(grouped.groups), dtype=float)
            mean = grouped["value"].mean().loc[x].to_numpy(float)
            ax.fill_between(x, grouped["ci_low"].min().loc[x].to_numpy(float),
                            grouped["ci_high"].max().loc[x].to_numpy(float), color=colours[backbone], alpha=0.18,
                            linewidth=0)
            ax.plot(x, mean, marker=MARKERS[i % len(MARKERS)], color=colours[backbone], label=backbone)
            multi = part[part.groupby("train_fraction")["seed"].transform("nunique") > 1]
            if len(multi):
                ax.scatter(multi["train_fraction"], multi["value"], s=8, color=colours[backbone],
                           edgecolors="black", linewidths=0.3, zorder=4)
        _fit_y_range(ax, selected, metric)
        ax.set_xscale("log")
        ax.set_xlim(fractions[0] / 1.25, fractions[-1] * 1.25)
        labels = [fraction_text(f) + (f"\n(n={n_train[f]})" if f in n_train else "") for f in fractions]
        ax.set_xticks(fractions, labels)
        ax.minorticks_off()
        ax.set_xlabel("Share of training labels used (log scale)"
                      + ("; n = training images actually used (mean over seeds)" if n_train else ""))
        ax.set_ylabel(f"Test {metric_label(metric, run.task_type)}")
        ax.set_title("Label efficiency of the selected layer: mean over seeds; band = envelope of per-seed 95% CIs")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
    return fig


def training_sizes(run: RunData) -> dict[float, str]:
    """Train fraction -> the number of training images the fits really used (``n_train`` of the
    selected rows, after the one-per-class top-up), as text: one number, or the mean over seeds
    with its range when seeds differ. Empty for runs that did not record it: the count is then
    not shown, because ``fraction x train size`` is not what was used (1 % of 500 is 5, yet a
    class needs one image, so more were used)."""
    if "n_train" not in run.results.columns:
        return {}
    selected = run.selected()
    out = {}
    for fraction, at in selected.groupby("train_fraction"):
        sizes = at.drop_duplicates("seed")["n_train"].map(as_float).dropna()
        if len(sizes):
            low, high = int(sizes.min()), int(sizes.max())
            out[float(fraction)] = str(low) if low == high else f"{sizes.mean():.0f}, {low}–{high}"
    return out


def _fit_y_range(ax: Axes, rows: Any, metric: str) -> None:
    """Spend the y axis on the data: from the lowest CI bound to the highest (plus a margin), within
    [0, 1]; the chance line is drawn only when it falls inside that range."""
    values = np.concatenate([rows[c].to_numpy(float) for c in ("value", "ci_low", "ci_high")])
    values = values[np.isfinite(values)]
    if not len(values):
        return
    low, high = float(values.min()), float(values.max())
    margin = max(0.02, 0.08 * (high - low))
    low, high = max(0.0, low - margin), min(1.0, high + margin)
    if low >= high:
        low, high = max(0.0, low - 0.05), min(1.0, high + 0.05)
    ax.set_ylim(low, high)
    if low <= 0.5 <= high:
        chance_line(ax, metric)


LABEL_EFFICIENCY = FigureSpec(
    "label_efficiency",
    "Label efficiency",
    "Task metric of the selected layer as the share of training labels shrinks (log scale; under each "
    "fraction the number of training images the fits actually used). Line: mean "
    "over seeds; band: lowest to highest bound of the per-seed 95% CIs; dots: single seeds. The y axis "
    "spans the data (it does not start at 0); the chance line is shown when it falls inside.",
    label_efficiency_curves,
)


__all__ = ["LABEL_EFFICIENCY", "label_efficiency_curves", "training_sizes"]
