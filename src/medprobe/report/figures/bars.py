"""Bar charts of the task metric: the headline per backbone, and per class (class vs rest).

Single-fit bars (per class) show each backbone's validation-selected layer at the largest train
fraction; the headline bars average the seeds of every train fraction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medprobe.report.figures.spec import FigureSpec
from medprobe.report.figures.style import (
    FigureSkipped,
    backbone_colours,
    chance_line,
    ci_errors,
    figure_style,
    fraction_text,
    metric_label,
    new_figure,
    rotate_ticks,
    wrap_title,
)
from medprobe.report.load import RunData


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
    with figure_style():
        width_in = max(7.5, 2.8 + 0.55 * n_bars * len(fractions))
        fig = new_figure(width_in, 4.3)
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
            errors = ci_errors(values_arr, np.array(lows, dtype=float), np.array(highs, dtype=float))
            ax.bar(positions, values_arr, width=width * 0.92, color=colours[backbone], label=backbone,
                   yerr=errors, capsize=3, error_kw={"elinewidth": 1.0, "ecolor": "0.15"}, zorder=3)
            if n_bars * len(fractions) <= 12:
                for x, value, high in zip(positions, values_arr, highs):
                    if np.isfinite(value):
                        top = high if np.isfinite(high) else value
                        ax.annotate(f"{value:.3f}", (x, top), xytext=(0, 2), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=7)
        chance_line(ax, metric)
        seeds = selected.groupby("train_fraction")["seed"].nunique()
        ax.set_xticks(range(len(fractions)),
                      [f"{fraction_text(f)}" + (f"\n({seeds[f]} seeds)" if seeds[f] > 1 else "") for f in fractions])
        ax.set_xlim(-0.6, len(fractions) - 0.4)
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("Share of training labels used (train fraction)")
        ax.set_ylabel(f"Test {metric_label(metric, run.task_type)}")
        ax.set_title(wrap_title(f"Test {metric_label(metric, run.task_type)} of the validation-selected layer "
                                "(95% CI)", width_in * 0.78))
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
    return fig


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
    with figure_style():
        width_in = min(16.0, max(7.5, 3.0 + 0.32 * len(labels) * len(entries)))
        fig = new_figure(width_in, 4.3)
        ax = fig.add_subplot()
        for i, (backbone, layer, seed, part) in enumerate(entries):
            names = list(metrics.values())
            values = np.array([part["value"].get(n, np.nan) for n in names], dtype=float)
            low = np.array([part["ci_low"].get(n, np.nan) for n in names], dtype=float)
            high = np.array([part["ci_high"].get(n, np.nan) for n in names], dtype=float)
            x = np.arange(len(labels)) - 0.4 + width * (i + 0.5)
            ax.bar(x, values, width=width * 0.92, color=colours[backbone], label=f"{backbone} ({layer})",
                   yerr=ci_errors(values, low, high), capsize=2, error_kw={"elinewidth": 0.9, "ecolor": "0.15"},
                   zorder=3)
            for position in x[~np.isfinite(values)]:  # say "undefined" where a bar is missing
                ax.text(position, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                        color=colours[backbone])
        chance_line(ax, chance_metric)
        ax.set_xticks(range(len(labels)), labels)
        rotate_ticks(ax, labels)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(what.capitalize())
        ax.set_ylabel(f"Test {ylabel}")
        seeds = sorted({str(seed) for _, _, seed, _ in entries})
        ax.set_title(wrap_title(f"Test {ylabel} per {what} of the selected layer (95% CI), "
                                f"train fraction {fraction:g}, seed {', '.join(seeds)}", width_in * 0.78))
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


METRIC_BARS = FigureSpec(
    "metric_bars",
    "Task metric per backbone",
    "Test value of the task metric for the layer chosen on validation. Bars: mean over seeds; "
    "error bars: 95% bootstrap CI (mean of the per-seed bounds when a fraction has several seeds, whose "
    "values are the black dots).",
    metric_bars,
)

PER_CLASS_AUC = FigureSpec(
    "per_class_auc",
    "Per-class AUROC",
    "One-vs-rest AUROC per class for each backbone's selected layer at the largest train fraction; "
    "error bars: 95% bootstrap CI.",
    lambda run: per_class_bars(run, "auc"),
    # in a binary task the per-class AUROC repeats the headline AUROC
    applies=lambda run: run.task_type != "binary",
)

PER_CLASS_F1 = FigureSpec(
    "per_class_f1",
    "Per-class F1",
    "One-vs-rest F1 per class for each backbone's selected layer at the largest train fraction; "
    "error bars: 95% bootstrap CI.",
    lambda run: per_class_bars(run, "f1"),
    # optional rows: not every metrics module reports per-class F1
    applies=lambda run: any(m.startswith("f1[") for m in run.results["metric"]),
)


__all__ = ["METRIC_BARS", "PER_CLASS_AUC", "PER_CLASS_F1", "metric_bars", "per_class_bars"]
