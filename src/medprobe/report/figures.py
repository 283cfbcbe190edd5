"""The report's figures, drawn with matplotlib's object API (no pyplot, so no global state).

Each ``*_figure``-style function takes the parsed run (:class:`RunData`) and returns a
:class:`~matplotlib.figure.Figure`, or raises :class:`FigureSkipped` saying why the run has no
data for it (one layer -> no layer curve, one train fraction -> no label-efficiency curve, ...).
:func:`save_figures` writes every figure the run supports as PNG and SVG into ``figures/``.

Conventions shared by all figures, so they read the same way: the Okabe-Ito palette (distinct
under the common colour-vision deficiencies) with one fixed colour per backbone across figures,
error bars and bands are 95% percentile-bootstrap CIs over test samples unless a caption says
otherwise, and single-fit figures (per class, per layer, ROC) show the largest train fraction.
"""

from __future__ import annotations

import math
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medprobe.errors import MedprobeError
from medprobe.io import atomic_write_bytes
from medprobe.report.load import RunData, as_float, load_run

#: Okabe & Ito (2008): eight colours that stay distinguishable for colour-blind readers.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FIGURE_DIR = "figures"
FORMATS = ("png", "svg")
PNG_DPI = 150

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


@dataclass
class SavedFigure:
    """One figure as written to disk, with the words the HTML page shows around it."""

    name: str
    title: str
    caption: str
    paths: dict[str, Path] = field(default_factory=dict)


@dataclass
class FigureSet:
    """Figures written for a run, and a note per figure that was not drawn."""

    figures: list[SavedFigure]
    notes: list[str]

    @property
    def paths(self) -> list[Path]:
        return [path for figure in self.figures for path in figure.paths.values()]


@contextmanager
def _style() -> Iterator[None]:
    with rc_context(STYLE):
        yield


def _new_figure(width: float, height: float) -> Figure:
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


def _wrap(text: str, width_in: float, fontsize: float = 10.0) -> str:
    """Break a title into lines that fit ``width_in`` inches, so tight_layout never has to clip it."""
    return textwrap.fill(text, width=max(20, int(width_in * 72 / (fontsize * 0.5))))


def _fraction_text(fraction: float) -> str:
    return f"{fraction:g}"


def _chance_line(ax: Axes, metric: str) -> None:
    if metric == "auc" or metric.startswith("auc[") or metric.startswith("auc@"):
        ax.axhline(0.5, color="0.45", linestyle="--", linewidth=0.9, label="chance (AUROC 0.5)", zorder=1)


def _rotate_ticks(ax: Axes, labels: Sequence[str]) -> None:
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


def _number(value: Any) -> float:
    """A float for plotting: missing or non-numeric values become NaN, which matplotlib leaves out."""
    number = as_float(value)
    return np.nan if number is None else number


def _ci_errors(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Error-bar lengths below/above each value; NaN bounds draw no bar instead of failing."""
    below = np.where(np.isfinite(low), values - low, 0.0)
    above = np.where(np.isfinite(high), high - values, 0.0)
    return np.vstack([np.clip(below, 0, None), np.clip(above, 0, None)])


# --------------------------------------------------------------------------- (a) headline bars
def metric_bars(run: RunData) -> Figure:
    """Task metric of the val-selected layer per backbone, grouped by train fraction.

    Bars are the mean over seeds; error bars span the mean of the per-seed 95% CI bounds (with one
    seed, exactly that fit's CI); with several seeds each seed's value is drawn as a dot.
    """
    metric = run.task_metric
    selected = run.selected(metric)
    if selected.empty:
        raise FigureSkipped(f"no validation-selected rows for the task metric {metric!r} in results.json")
    colours = backbone_colours(run)
    backbones = [b for b in run.backbones if b in set(selected["backbone"])]
    fractions = sorted(selected["train_fraction"].unique())
    n_bars = len(backbones)
    width = 0.8 / n_bars
    with _style():
        width_in = max(7.5, 2.8 + 0.55 * n_bars * len(fractions))
        fig = _new_figure(width_in, 4.3)
        ax = fig.add_subplot()
        for i, backbone in enumerate(backbones):
            part = selected[selected["backbone"] == backbone]
            positions, values, lows, highs = [], [], [], []
            for j, fraction in enumerate(fractions):
                at = part[part["train_fraction"] == fraction]
                if at.empty:
                    continue
                positions.append(j - 0.4 + width * (i + 0.5))
                values.append(at["value"].mean())
                lows.append(at["ci_low"].mean())
                highs.append(at["ci_high"].mean())
                if len(at) > 1:
                    ax.scatter(np.full(len(at), positions[-1]), at["value"], s=9, color="black", zorder=4,
                               linewidths=0)
            values_arr = np.array(values, dtype=float)
            errors = _ci_errors(values_arr, np.array(lows, dtype=float), np.array(highs, dtype=float))
            ax.bar(positions, values_arr, width=width * 0.92, color=colours[backbone], label=backbone,
                   yerr=errors, capsize=3, error_kw={"elinewidth": 1.0, "ecolor": "0.15"}, zorder=3)
            if n_bars * len(fractions) <= 12:
                for x, value, high in zip(positions, values_arr, highs):
                    if np.isfinite(value):
                        top = high if np.isfinite(high) else value
                        ax.annotate(f"{value:.3f}", (x, top), xytext=(0, 2), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=7)
        _chance_line(ax, metric)
        seeds = selected.groupby("train_fraction")["seed"].nunique()
        ax.set_xticks(range(len(fractions)),
                      [f"{_fraction_text(f)}" + (f"\n({seeds[f]} seeds)" if seeds[f] > 1 else "") for f in fractions])
        ax.set_xlim(-0.6, len(fractions) - 0.4)
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("Share of training labels used (train fraction)")
        ax.set_ylabel(f"Test {metric_label(metric, run.task_type)}")
        ax.set_title(_wrap(f"Test {metric_label(metric, run.task_type)} of the validation-selected layer "
                           "(95% CI)", width_in * 0.78))
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- (b) per class / group
def _member_bars(run: RunData, metrics: dict[str, str], *, what: str, ylabel: str, chance_metric: str) -> Figure:
    """Grouped bars of several metrics (one per class or group) for each backbone's selected layer at
    the largest train fraction, with their 95% CIs; ``metrics`` maps an x label to a metric name."""
    fraction = run.full_fraction
    rows = run.results
    colours = backbone_colours(run)
    entries: list[tuple[str, str, int, Any]] = []
    for backbone, layer, seed in run.reference_probes():
        part = rows[(rows["backbone"] == backbone) & (rows["layer"] == layer) & (rows["train_fraction"] == fraction)
                    & (rows["seed"] == seed) & rows["metric"].isin(list(metrics.values()))]
        entries.append((backbone, layer, seed, part.drop_duplicates("metric").set_index("metric")))
    if not entries:
        raise FigureSkipped(f"no backbone has a validation-selected layer at train fraction {fraction:g}")
    labels = list(metrics)
    width = 0.8 / len(entries)
    with _style():
        width_in = min(16.0, max(7.5, 3.0 + 0.32 * len(labels) * len(entries)))
        fig = _new_figure(width_in, 4.3)
        ax = fig.add_subplot()
        for i, (backbone, layer, seed, part) in enumerate(entries):
            names = list(metrics.values())
            values = np.array([part["value"].get(n, np.nan) for n in names], dtype=float)
            low = np.array([part["ci_low"].get(n, np.nan) for n in names], dtype=float)
            high = np.array([part["ci_high"].get(n, np.nan) for n in names], dtype=float)
            x = np.arange(len(labels)) - 0.4 + width * (i + 0.5)
            ax.bar(x, values, width=width * 0.92, color=colours[backbone], label=f"{backbone} ({layer})",
                   yerr=_ci_errors(values, low, high), capsize=2, error_kw={"elinewidth": 0.9, "ecolor": "0.15"},
                   zorder=3)
            for position in x[~np.isfinite(values)]:  # say "undefined" where a bar is missing
                ax.text(position, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                        color=colours[backbone])
        _chance_line(ax, chance_metric)
        ax.set_xticks(range(len(labels)), labels)
        _rotate_ticks(ax, labels)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(what.capitalize())
        ax.set_ylabel(f"Test {ylabel}")
        seeds = sorted({str(seed) for _, _, seed, _ in entries})
        ax.set_title(_wrap(f"Test {ylabel} per {what} of the selected layer (95% CI), train fraction {fraction:g}, "
                           f"seed {', '.join(seeds)}", width_in * 0.78))
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="backbone (layer)")
        fig.tight_layout()
    return fig


def per_class_bars(run: RunData, family: str = "auc") -> Figure:
    """Per-class ``family`` (``auc`` or ``f1``, class vs rest) of each backbone's selected layer."""
    present = set(run.results["metric"])
    metrics = {c: f"{family}[{c}]" for c in run.classes if f"{family}[{c}]" in present}
    if not metrics:
        raise FigureSkipped(f"results.json has no per-class {family.upper()} rows ({family}[<class>])")
    name = {"auc": "AUROC", "f1": "F1"}.get(family, family)
    return _member_bars(run, metrics, what="class", ylabel=f"{name} (class vs rest)", chance_metric=f"{family}[")


def group_metrics(run: RunData) -> dict[str, str]:
    """Group name -> metric name of the task metric per group (``<metric>@<group>``), in row order."""
    prefix = f"{run.task_metric}@"
    names = dict.fromkeys(m for m in run.results["metric"] if m.startswith(prefix))
    return {m[len(prefix):]: m for m in names}


# --------------------------------------------------------------------------- (c) layer sweep
def selection_metric(run: RunData) -> str:
    """The validation metric layers and Cs were chosen by (``probe.selection_metric``)."""
    probe = run.run.get("probe") or {}
    return str(probe.get("selection_metric") or "auc") if isinstance(probe, dict) else "auc"


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
    with _style():
        panel_in = max(3.2, 1.0 + 0.28 * most)
        width_in = min(30.0, 2.4 + panel_in * n_columns)
        fig = _new_figure(width_in, 1.6 + 3.0 * len(grid))
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
                _rotate_ticks(ax, labels)
                ax.set_xlim(-0.5, len(part) - 0.5)
                ax.set_xlabel("Layer (network order)")
                if c == 0:
                    ax.set_ylabel("Score")
                ax.set_title(f"{backbone}: train fraction {fraction:g}, seed {seed}", loc="left", fontsize=9)
                if c == len(panels) - 1:
                    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.suptitle(_wrap(f"Linear-probe test {metric_label(metric, run.task_type)} (95% CI band) and validation "
                           f"{validation} by layer", width_in), fontsize=10)
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- (d) label efficiency
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
    with _style():
        fig = _new_figure(8.0, 4.5)
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
        labels = [_fraction_text(f) + (f"\n(n={n_train[f]})" if f in n_train else "") for f in fractions]
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
        _chance_line(ax, metric)


# --------------------------------------------------------------------------- (e) ROC
def _roc_inputs(run: RunData, part: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores for one fit: the positive class (binary) or flattened one-vs-rest (micro)."""
    classes = run.classes
    missing = [f"score[{c}]" for c in classes if f"score[{c}]" not in part.columns]
    if missing:
        raise FigureSkipped(f"predictions.parquet lacks the column(s) {missing}")
    if run.task_type == "binary":
        if "y_true" not in part.columns:
            raise FigureSkipped("predictions.parquet lacks the column 'y_true'")
        return (part["y_true"].to_numpy() == 1).astype(int), part[f"score[{classes[1]}]"].to_numpy(float)
    scores = part[[f"score[{c}]" for c in classes]].to_numpy(float)
    if run.task_type == "multilabel":
        columns = [f"true[{c}]" for c in classes]
        if any(c not in part.columns for c in columns):
            raise FigureSkipped("predictions.parquet lacks the true[<class>] columns of a multi-label task")
        truth = part[columns].to_numpy(int)
    else:
        if "y_true" not in part.columns:
            raise FigureSkipped("predictions.parquet lacks the column 'y_true'")
        truth = np.eye(len(classes), dtype=int)[part["y_true"].to_numpy(int)]
    return truth.ravel(), scores.ravel()


def roc_curves(run: RunData) -> Figure:
    """ROC of each backbone's selected layer at the full train fraction, from predictions.parquet.

    Binary tasks: the positive class (class index 1). Multi-class and multi-label tasks: the
    micro-average (every class-vs-rest decision pooled), which is one curve per backbone; its area
    is the micro AUROC and differs from the macro AUROC in the tables, so the legend says which.
    """
    from medprobe.scoring import binary_auc, roc_points

    predictions = run.predictions
    if predictions is None:
        raise FigureSkipped("the run folder has no predictions.parquet")
    if len(run.classes) < 2:
        raise FigureSkipped("run.json names fewer than two classes")
    fraction = run.full_fraction
    curves = []
    for backbone, layer, seed in run.reference_probes():
        part = predictions[(predictions["backbone"] == backbone) & (predictions["layer"] == layer)
                           & np.isclose(predictions["train_fraction"].astype(float), fraction)
                           & (predictions["seed"] == seed)]
        if part.empty:
            continue
        truth, scores = _roc_inputs(run, part)
        if truth.min() == truth.max():
            continue
        fpr, tpr = roc_points(truth == 1, scores)
        curves.append((backbone, layer, seed, fpr, tpr, binary_auc(truth == 1, scores)))
    if not curves:
        raise FigureSkipped(f"predictions.parquet has no test predictions of a selected layer at train fraction "
                            f"{fraction:g} with both classes present")
    binary = run.task_type == "binary"
    colours = backbone_colours(run)
    with _style():
        fig = _new_figure(6.4, 6.2)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=0.9, label="chance")
        for backbone, layer, seed, fpr, tpr, area in curves:
            name = "AUROC" if binary else "micro AUROC"
            ax.plot(fpr, tpr, color=colours[backbone], linewidth=1.6,
                    label=f"{backbone} ({layer}): {name} {area:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (1 − specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        what = (f"positive class '{run.classes[1]}'" if binary
                else "micro-average over all class-vs-rest decisions")
        seeds = sorted({str(c[2]) for c in curves})
        ax.set_title(f"Test ROC, {what}\nselected layer, train fraction {fraction:g}, seed {', '.join(seeds)}",
                     fontsize=9.5)
        ax.legend(loc="lower right", frameon=False)
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- saving
#: name -> (title, caption, builder); the order is the order on the page.
FIGURES: dict[str, tuple[str, str, Callable[[RunData], Figure]]] = {
    "metric_bars": (
        "Task metric per backbone",
        "Test value of the task metric for the layer chosen on validation. Bars: mean over seeds; "
        "error bars: 95% bootstrap CI (mean of the per-seed bounds when a fraction has several seeds, whose "
        "values are the black dots).",
        metric_bars,
    ),
    "per_class_auc": (
        "Per-class AUROC",
        "One-vs-rest AUROC per class for each backbone's selected layer at the largest train fraction; "
        "error bars: 95% bootstrap CI.",
        lambda run: per_class_bars(run, "auc"),
    ),
    "per_class_f1": (
        "Per-class F1",
        "One-vs-rest F1 per class for each backbone's selected layer at the largest train fraction; "
        "error bars: 95% bootstrap CI.",
        lambda run: per_class_bars(run, "f1"),
    ),
    "per_group": (
        "Task metric per subgroup",
        "Forest plot: task metric within each subgroup of the test set (e.g. sex, site, organ) for each "
        "backbone's selected layer at the largest train fraction, with its 95% bootstrap CI resampled within "
        "the group (over patients when they have several images); dotted lines: the whole test set. 'n/a': the "
        "metric is undefined in that group (e.g. a class absent from it).",
        lambda run: _stats_figures().subgroup_forest(run),
    ),
    "reliability": (
        "Calibration (reliability diagram)",
        "Observed frequency against mean predicted probability in equal-width probability bins, for each "
        "backbone's selected probe at the largest train fraction (top), and the number of test images per bin "
        "(bottom). The legend gives the expected calibration error (ECE); its CI is in the calibration table.",
        lambda run: _stats_figures().reliability_diagram(run),
    ),
    "layer_curves": (
        "Layer sweep",
        "Analysis, not a result to report: test value of the task metric for a probe on each layer (band: 95% "
        "bootstrap CI), for every train fraction (first seed), beside the validation score the layer was chosen by (dashed). The star marks "
        "the layer chosen on the validation split, which is not necessarily the best on test; layers that tie "
        "on validation were decided by their order. Picking the best layer on test would be optimistic, which is "
        "why the tables report only the validation-selected layer.",
        layer_curves,
    ),
    "label_efficiency": (
        "Label efficiency",
        "Task metric of the selected layer as the share of training labels shrinks (log scale; under each "
        "fraction the number of training images the fits actually used). Line: mean "
        "over seeds; band: lowest to highest bound of the per-seed 95% CIs; dots: single seeds. The y axis "
        "spans the data (it does not start at 0); the chance line is shown when it falls inside.",
        label_efficiency_curves,
    ),
    "roc_curves": (
        "ROC curves",
        "Test ROC curves of each backbone's selected layer at the largest train fraction. Binary tasks show "
        "the positive class; multi-class and multi-label tasks show the micro-average over all "
        "class-vs-rest decisions, whose area differs from the macro AUROC reported in the tables.",
        roc_curves,
    ),
    "mcq_strata": (
        "Multiple-choice accuracy by difficulty",
        "Accuracy per human-difficulty stratum with 95% Wilson CI (primary answer and, when answers were "
        "sampled, correct within n tries), the mean share of human readers answering each stratum correctly, "
        "and the accuracy of random guessing (dashed); beside it, accuracy over all cases next to the study's "
        "published values (after its Fig. 1f).",
        lambda run: _mcq_figures().mcq_figure(run.mcq, chance=_mcq_figures().mcq_chance(run.mcq)),
    ),
}


def _stats_figures() -> Any:
    """:mod:`medprobe.report.stats_figures`, imported on use: it builds on this module's helpers."""
    from medprobe.report import stats_figures

    return stats_figures


def _mcq_figures() -> Any:
    """:mod:`medprobe.report.mcq_figures`, imported on use: it builds on this module's helpers."""
    from medprobe.report import mcq_figures

    return mcq_figures


def _applicable(run: RunData, name: str) -> bool:
    """Whether a figure belongs in this kind of run at all (no note when not): a run without MCQ
    results or subgroups has no such figure to miss, and in a binary task the per-class AUROC
    repeats the headline AUROC."""
    if name == "mcq_strata":
        return bool(run.mcq)
    if name == "per_class_auc":
        return run.task_type != "binary"
    if name == "per_class_f1":  # optional rows: not every metrics module reports per-class F1
        return any(m.startswith("f1[") for m in run.results["metric"])
    if name == "per_group":
        return bool(group_metrics(run))
    if name == "reliability":
        return "ece" in set(run.results["metric"])
    return True


def write_figure(fig: Figure, stem: Path) -> dict[str, Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (temp file + rename): a reader never sees half a file."""
    paths = {}
    with _style():
        for fmt in FORMATS:
            buffer = BytesIO()
            metadata = {"Date": None} if fmt == "svg" else {"Software": "medprobe (matplotlib)"}
            fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
            path = stem.with_suffix(f".{fmt}")
            atomic_write_bytes(path, buffer.getvalue())
            paths[fmt] = path
    return paths


def render_figures(run: RunData, out_dir: Path | None = None) -> FigureSet:
    """Draw and save every figure the run supports; record a note for each one that is skipped.

    Files of a skipped figure left by an earlier build are removed, so ``figures/`` always matches
    the report built from it.
    """
    out_dir = Path(out_dir) if out_dir is not None else run.run_dir / FIGURE_DIR
    saved, notes = [], []
    for name, (title, caption, builder) in FIGURES.items():
        if _applicable(run, name):
            try:
                fig = builder(run)
            except FigureSkipped as skipped:
                notes.append(f"{title} not drawn: {skipped}.")
            else:
                saved.append(SavedFigure(name, title, caption, write_figure(fig, out_dir / name)))
                continue
        for fmt in FORMATS:
            (out_dir / f"{name}.{fmt}").unlink(missing_ok=True)
    return FigureSet(saved, notes)


def save_figures(run_dir: str | Path) -> list[Path]:
    """Write every figure a run folder supports into ``run_dir/figures/`` as PNG and SVG; returns the paths."""
    return render_figures(load_run(run_dir)).paths
