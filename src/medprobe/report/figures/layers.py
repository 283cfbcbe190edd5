"""The layer sweep: test and validation score of a probe on each layer (an analysis figure)."""

from __future__ import annotations

import numpy as np
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
    n_columns = max(len(panels) for _, panels in grid)
    with figure_style():
        panel_in = max(3.2, 1.0 + 0.28 * most)
        width_in = min(30.0, 2.4 + panel_in * n_columns)
        fig = new_figure(width_in, 1.6 + 3.0 * len(grid))
        # one y scale for all panels, so backbones and fractions can be compared by eye
        axes = fig.subplots(len(grid), n_columns, squeeze=False, sharey=True)
        for r, (backbone, panels) in enumerate(grid):
            for c in range(n_columns):
                ax = axes[r, c]
                if c >= len(panels):
                    ax.set_axis_off()
                    continue
                fraction, seed, part = panels[c]
                x = np.arange(len(part))
                colour = colours[backbone]
                ax.fill_between(x, part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float), color=colour,
                                alpha=0.2, linewidth=0, label="test 95% CI")
                ax.plot(x, part["value"].to_numpy(float), marker="o", markersize=3.5, color=colour,
                        label=f"test {metric_label(metric, run.task_type)}")
                ax.plot(x, part["val_score"].to_numpy(float), marker="s", markersize=3.5, color="0.35",
                        linestyle="--", linewidth=1.1, label=f"validation {validation} (chooses the layer)")
                chosen = np.flatnonzero(part["selected"].to_numpy(bool))
                if len(chosen):
                    k = int(chosen[0])
                    ax.plot([x[k]], [part["value"].iloc[k]], marker="*", markersize=14, color=colour,
                            markeredgecolor="black", linestyle="none", label="selected on validation", zorder=5)
                labels = [str(layer) for layer in part.index]
                ax.set_xticks(x, labels)
                rotate_ticks(ax, labels)
                ax.set_xlim(-0.5, len(part) - 0.5)
                ax.set_xlabel("Layer (network order)")
                if c == 0:
                    ax.set_ylabel("Score")
                ax.set_title(f"{backbone}: train fraction {fraction:g}, seed {seed}", loc="left", fontsize=9)
                if c == len(panels) - 1:
                    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.suptitle(wrap_title(f"Linear-probe test {metric_label(metric, run.task_type)} (95% CI band) and validation "
                                f"{validation} by layer", width_in), fontsize=10)
        fig.tight_layout()
    return fig


LAYER_CURVES = FigureSpec(
    "layer_curves",
    "Layer sweep",
    "Analysis, not a result to report: test value of the task metric for a probe on each layer (band: 95% "
    "bootstrap CI), for every train fraction (first seed), beside the validation score the layer was chosen by "
    "(dashed). The star marks "
    "the layer chosen on the validation split, which is not necessarily the best on test; layers that tie "
    "on validation were decided by their order. Picking the best layer on test would be optimistic, which is "
    "why the tables report only the validation-selected layer.",
    layer_curves,
)


__all__ = ["LAYER_CURVES", "layer_curves"]
