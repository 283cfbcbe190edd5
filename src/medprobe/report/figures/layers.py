"""The layer sweep: test and validation score of a probe on each layer (an analysis figure).

A few layers: one row of panels per backbone, one column per train fraction. Many layers (an
IDEFICS-80B sweep has 81): one full-width panel per (backbone, fraction), stacked, so the figure
grows in height rather than into an unreadable 30-inch strip, and tick labels are thinned to every
k-th layer (the selected one always labelled) so none overlap.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medprobe.report.figures.spec import FigureSpec
from medprobe.report.figures.style import (
    FigureSkipped,
    backbone_colours,
    figure_style,
    metric_label,
    new_figure,
    rotate_ticks,
    wrap_title,
)
from medprobe.report.load import RunData, selection_metric

#: sweeps longer than this get one stacked full-width panel per (backbone, fraction)
STACK_ABOVE = 16
#: at most this many layer labels per inch of panel width (7-pt labels set vertically)
LABELS_PER_INCH = 5.0


def layer_curves(run: RunData) -> Figure:
    """Test and validation score by layer: one row of panels per backbone probed at several
    layers, one column per train fraction (its first seed); star = the layer chosen on validation.

    The validation curve is what the choice was made on, so a reader sees why a layer won (and
    when several layers tie on validation, that the choice was arbitrary)."""
    metric = run.task_metric
    rows = run.results
    validation = metric_label(selection_metric(run), run.task_type)
    grid = []
    for backbone in run.backbones:
        panels = []
        for fraction in run.fractions:
            seed = run.reference_seed(backbone, fraction)
            part = rows[(rows["backbone"] == backbone) & (rows["train_fraction"] == fraction)
                        & (rows["seed"] == seed) & (rows["metric"] == metric)]
            order = [layer for layer in run.layers(backbone) if layer in set(part["layer"])]
            if len(order) >= 2:
                panels.append((fraction, seed, part.drop_duplicates("layer").set_index("layer").loc[order]))
        if panels:
            grid.append((backbone, panels))
    if not grid:
        raise FigureSkipped("every backbone was probed at a single layer, so there is no layer sweep to draw")
    colours = backbone_colours(run)
    most = max(len(part) for _, panels in grid for _, _, part in panels)
    if most > STACK_ABOVE:  # one panel per (backbone, fraction), stacked
        cells = [[(backbone, panel)] for backbone, panels in grid for panel in panels]
        panel_in = min(14.0, 3.0 + 0.14 * most)
        width_in, height_in = panel_in + 0.8, 1.4 + 2.7 * len(cells)
    else:
        cells = [[(backbone, panel) for panel in panels] for backbone, panels in grid]
        panel_in = max(3.2, 1.0 + 0.28 * most)
        width_in, height_in = min(30.0, 2.4 + panel_in * max(len(row) for row in cells)), 1.6 + 3.0 * len(cells)
    n_columns = max(len(row) for row in cells)
    with figure_style():
        fig = new_figure(width_in, height_in)
        # one y scale for all panels, so backbones and fractions can be compared by eye
        axes = fig.subplots(len(cells), n_columns, squeeze=False, sharey=True)
        for r, row in enumerate(cells):
            for c in range(n_columns):
                if c >= len(row):
                    axes[r, c].set_axis_off()
                    continue
                backbone, (fraction, seed, part) = row[c]
                _draw_sweep(axes[r, c], part, colours[backbone], metric_label(metric, run.task_type), validation,
                            panel_in)
                if c == 0:
                    axes[r, c].set_ylabel("Score")
                axes[r, c].set_title(f"{backbone}: train fraction {fraction:g}, seed {seed}", loc="left", fontsize=9)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.suptitle(wrap_title(f"Linear-probe test {metric_label(metric, run.task_type)} (95% CI band) and validation "
                                f"{validation} by layer", width_in), fontsize=10)
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.5 / height_in, 1, 1))
    return fig


def _draw_sweep(ax, part, colour, test_label: str, validation: str, panel_in: float) -> None:
    """One panel: test score with its CI band, the validation score, the selected layer starred;
    layer labels thinned to fit ``panel_in`` inches (the selected layer keeps its label)."""
    x = np.arange(len(part))
    ax.fill_between(x, part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float), color=colour,
                    alpha=0.2, linewidth=0, label="test 95% CI")
    ax.plot(x, part["value"].to_numpy(float), marker="o", markersize=3.5 if len(x) <= 40 else 2.2, color=colour,
            label=f"test {test_label}")
    ax.plot(x, part["val_score"].to_numpy(float), marker="s", markersize=3.5 if len(x) <= 40 else 2.2, color="0.35",
            linestyle="--", linewidth=1.1, label=f"validation {validation} (chooses the layer)")
    chosen = np.flatnonzero(part["selected"].to_numpy(bool))
    if len(chosen):
        k = int(chosen[0])
        ax.plot([x[k]], [part["value"].iloc[k]], marker="*", markersize=14, color=colour,
                markeredgecolor="black", linestyle="none", label="selected on validation", zorder=5)
    labels = [str(layer) for layer in part.index]
    step = max(1, math.ceil(len(labels) / (LABELS_PER_INCH * panel_in)))
    if step == 1:
        shown = list(range(len(labels)))
        ax.set_xticks(x, labels)
        rotate_ticks(ax, labels)
    else:
        shown = sorted({*range(0, len(labels), step), len(labels) - 1, *(int(k) for k in chosen[:1])})
        shown = [i for i in shown if i in (len(labels) - 1, *chosen[:1]) or
                 not any(abs(i - j) < step and j != i for j in (len(labels) - 1, *chosen[:1]))]
        ax.set_xticks(x[shown], [labels[i] for i in shown])
        ax.set_xticks(x, minor=True)
        ax.tick_params(axis="x", labelrotation=90 if max(len(labels[i]) for i in shown) > 3 else 0)
    ax.set_xlim(-0.5, len(part) - 0.5)
    ax.set_xlabel(_study_axis(ax, part, shown) or "Layer (network order)")


def _study_axis(ax, part, shown: list[int]) -> str | None:
    """With a study option active (rows carry ``study_layer``), the study's file index of each shown
    layer on a top axis, so a curve can be put beside the study's figures; returns the x label that
    says how the two numberings relate, or None (and draws nothing) when the rows have no study index."""
    if "study_layer" not in part.columns or part["study_layer"].isna().all():
        return None
    study = [None if pd.isna(value) else int(value) for value in part["study_layer"]]
    top = ax.secondary_xaxis("top")
    top.set_xticks(np.asarray(shown, dtype=float), ["–" if study[i] is None else str(study[i]) for i in shown])
    top.tick_params(axis="x", labelsize=7, labelrotation=0)
    # the study saves hidden_states[1:], so its index is medprobe's layer number minus one (block
    # outputs "layer.i" minus nothing); said in the label when one offset holds for every layer
    offsets = {int(number.group()) - index for layer, index in zip(part.index, study)
               if index is not None and (number := re.search(r"\d+$", str(layer)))}
    if len(offsets) == 1:
        (offset,) = offsets
        rule = f"layer \N{MINUS SIGN} {offset}" if offset else "block number"
        return f"medprobe layer (top axis: study file index = {rule})"
    return "medprobe layer (top axis: the study's file index)"


LAYER_CURVES = FigureSpec(
    "layer_curves",
    "Layer sweep",
    "Analysis, not a result to report: test value of the task metric for a probe on each layer (band: 95% "
    "bootstrap CI), for every train fraction (first seed), beside the validation score the layer was chosen by "
    "(dashed). The star marks "
    "the layer chosen on the validation split, which is not necessarily the best on test; layers that tie "
    "on validation were decided by their order. Picking the best layer on test would be optimistic, which is "
    "why the tables report only the validation-selected layer. With a study recipe or protocol, the top axis "
    "gives each layer's index in the study's activation files (it saved the hidden states from the first "
    "layer's output on: medprobe layer k is its file k \N{MINUS SIGN} 1), to put the curves beside the study's.",
    layer_curves,
)


__all__ = ["LAYER_CURVES", "layer_curves"]
