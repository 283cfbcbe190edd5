"""What every report figure shares, so they read the same way: style, palette, helpers.

The Okabe-Ito palette (distinct under the common colour-vision deficiencies) with one fixed colour
per backbone across figures; error bars and bands are 95% percentile-bootstrap CIs over test
samples unless a caption says otherwise; figures are drawn with matplotlib's object API (no
pyplot, so no global state) inside :func:`figure_style`.
"""

from __future__ import annotations

import math
import textwrap
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medprobe.errors import MedprobeError
from medprobe.report.load import RunData, as_float

#: Okabe & Ito (2008): eight colours that stay distinguishable for colour-blind readers.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "svg.fonttype": "path",  # text as outlines: the SVG renders identically without the fonts
    "svg.hashsalt": "medprobe",  # stable element ids, so rebuilding a report changes no bytes
}


class FigureSkipped(MedprobeError):
    """The run has no data for this figure; the message says why and ends up in the report."""


@contextmanager
def figure_style() -> Iterator[None]:
    """The shared matplotlib settings (:data:`STYLE`), for drawing and for saving alike."""
    with rc_context(STYLE):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot, no global state)."""
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def metric_label(metric: str, task_type: str) -> str:
    """Axis text for a metric: what was averaged, so AUROCs of different tasks are not confused."""
    family, _, member = metric.partition("[")
    if member:
        name = {"auc": "AUROC", "f1": "F1"}.get(family, family)
        return f"{name} ({member.rstrip(']')} vs rest)"
    if "@" in metric:
        base, _, group = metric.partition("@")
        return f"{metric_label(base, task_type)} in group {group}"
    if metric == "auc":
        return {"binary": "AUROC (positive class)", "multiclass": "AUROC (macro one-vs-rest)",
                "multilabel": "AUROC (macro over labels)"}.get(task_type, "AUROC")
    return {"auc_macro": "AUROC (macro over classes)", "f1_macro": "Macro F1", "accuracy": "Accuracy",
            "exact_match": "Exact match"}.get(metric, metric)


def backbone_colours(run: RunData) -> dict[str, str]:
    """A fixed colour per backbone, in run-file order, so one model looks the same everywhere."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(run.backbones)}


def wrap_title(text: str, width_in: float, fontsize: float = 10.0) -> str:
    """Break a title into lines that fit ``width_in`` inches, so tight_layout never has to clip it."""
    return textwrap.fill(text, width=max(20, int(width_in * 72 / (fontsize * 0.5))))


def fraction_text(fraction: float) -> str:
    """A train fraction as tick text (``0.1``, ``1``)."""
    return f"{fraction:g}"


def chance_line(ax: Axes, metric: str) -> None:
    """The AUROC 0.5 line, for AUROC metrics only (other metrics have no fixed chance level)."""
    if metric == "auc" or metric.startswith("auc[") or metric.startswith("auc@"):
        ax.axhline(0.5, color="0.45", linestyle="--", linewidth=0.9, label="chance (AUROC 0.5)", zorder=1)


def rotate_ticks(ax: Axes, labels: Sequence[str]) -> None:
    """Slant long or many tick labels so they never overlap; thin them when there are very many."""
    longest = max((len(label) for label in labels), default=0)
    if len(labels) > 40:
        step = math.ceil(len(labels) / 40)
        for index, tick in enumerate(ax.get_xticklabels()):
            tick.set_visible(index % step == 0 or index == len(labels) - 1)
    if len(labels) > 24 or longest > 18:
        ax.tick_params(axis="x", labelrotation=90)
    elif len(labels) > 6 or longest > 9:
        for tick in ax.get_xticklabels():
            tick.set_rotation(40)
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")


def number_or_nan(value: Any) -> float:
    """A float for plotting: missing or non-numeric values become NaN, which matplotlib leaves out."""
    number = as_float(value)
    return np.nan if number is None else number


def ci_errors(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Error-bar lengths below/above each value; NaN bounds draw no bar instead of failing."""
    below = np.where(np.isfinite(low), values - low, 0.0)
    above = np.where(np.isfinite(high), high - values, 0.0)
    return np.vstack([np.clip(below, 0, None), np.clip(above, 0, None)])


__all__ = ["MARKERS", "PALETTE", "STYLE", "FigureSkipped", "backbone_colours", "chance_line", "ci_errors",
           "figure_style", "fraction_text", "metric_label", "new_figure", "number_or_nan", "rotate_ticks", "wrap_title"]
