"""Figures for the statistics beyond the task metric: calibration and subgroups.

Both draw each backbone's validation-selected probe at the largest train fraction, read from the
rows the statistics stage wrote into results.json.

* :func:`reliability_diagram`: the reliability bins that ``metric: "ece"`` rows carry (mean
  predicted probability vs observed frequency per bin, and how many test images fell in each),
  one curve per backbone's selected probe at the largest train fraction. On a small test set
  (fewer than :data:`EQUAL_COUNT_BELOW` images) ten equal-width bins hold one or two images each
  at the extremes, so the curve is re-binned from predictions.parquet into bins of equal count
  (:func:`equal_count_bins`, at least :data:`MIN_PER_BIN` images each); the ECE in the legend is
  still the one of results.json.
* :func:`subgroup_forest`: a forest plot of the task metric with its CI in every subgroup
  (``<metric>@<group>`` / ``<metric>@<column>=<value>`` rows), all backbones on one axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medprobe.report.figures.spec import FigureSpec
from medprobe.report.figures.style import (
    MARKERS,
    FigureSkipped,
    backbone_colours,
    ci_errors,
    figure_style,
    metric_label,
    new_figure,
    number_or_nan,
    wrap_title,
)
from medprobe.report.load import RunData, group_metrics

#: test sets smaller than this get equal-count reliability bins (10 equal-width bins would average < 20)
EQUAL_COUNT_BELOW = 200
#: images per equal-count bin, at least
MIN_PER_BIN = 10


def _reference_rows(run: RunData, metrics: list[str]) -> list[tuple[str, str, int, Any]]:
    """Per backbone: (backbone, selected layer, seed, its rows of ``metrics``) at the largest fraction."""
    fraction = run.full_fraction
    rows = run.results
    out = []
    for backbone, layer, seed in run.reference_probes():
        part = rows[(rows["backbone"] == backbone) & (rows["layer"] == layer) & (rows["train_fraction"] == fraction)
                    & (rows["seed"] == seed) & rows["selected"] & rows["metric"].isin(metrics)]
        if len(part):
            out.append((backbone, layer, seed, part))
    return out


def reliability_bins(row: Any) -> list[dict[str, Any]]:
    """The ``reliability`` list of an ECE row, or [] when the row has none (older runs)."""
    bins = row.get("reliability") if hasattr(row, "get") else None
    return [b for b in bins if isinstance(b, dict)] if isinstance(bins, list) else []


def equal_count_bins(probability: np.ndarray, outcome: np.ndarray, min_per_bin: int = MIN_PER_BIN,
                     max_bins: int = 10) -> list[dict[str, Any]]:
    """Reliability bins holding (nearly) the same number of predictions each, in the layout of the
    results.json bins (``bin_low`` / ``bin_high`` = the smallest / largest probability in the bin)."""
    order = np.argsort(probability, kind="stable")
    n_bins = int(np.clip(len(order) // min_per_bin, 1, max_bins))
    bins = []
    for members in np.array_split(order, n_bins):
        p, o = probability[members], outcome[members]
        bins.append({"bin_low": float(p.min()), "bin_high": float(p.max()), "n": int(len(members)),
                     "mean_probability": float(p.mean()), "observed_frequency": float(o.mean())})
    return bins


def _predicted_events(run: RunData, backbone: str, layer: str, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The probabilities and 0/1 events results.json calibrates (binary: the positive class;
    multi-class: the top label and whether it is right; multi-label: every finding, pooled), from
    predictions.parquet; None when the run has no usable predictions for this probe."""
    frame = run.predictions
    if frame is None:
        return None
    part = frame[(frame["backbone"] == backbone) & (frame["layer"] == layer) & (frame["seed"] == seed)
                 & np.isclose(frame["train_fraction"].astype(float), run.full_fraction)]
    columns = [f"score[{c}]" for c in run.classes]
    if part.empty or any(c not in part.columns for c in columns):
        return None
    scores = part[columns].to_numpy(float)
    if run.task_type == "multilabel":
        truth = [f"true[{c}]" for c in run.classes]
        return (scores.ravel(), part[truth].to_numpy(float).ravel()) if all(c in part.columns for c in truth) else None
    if "y_true" not in part.columns:
        return None
    y = part["y_true"].to_numpy(int)
    if run.task_type == "binary":
        return scores[:, 1], (y == 1).astype(float)
    return scores.max(axis=1), (scores.argmax(axis=1) == y).astype(float)


def _bins_to_draw(run: RunData, backbone: str, layer: str, seed: int, row: Any) -> tuple[list[dict[str, Any]], bool]:
    """Equal-count bins from the predictions on a small test set, else the results.json bins; and
    whether they are equal-count."""
    events = _predicted_events(run, backbone, layer, seed)
    if events is not None and len(events[0]) < EQUAL_COUNT_BELOW:
        return equal_count_bins(*events), True
    return reliability_bins(row), False


def reliability_diagram(run: RunData) -> Figure:
    """Observed frequency against mean predicted probability per bin, with the bin counts below.

    Empty bins are left out of the curve (their mean probability is undefined) but stay in the
    count panel at zero, so a reader sees where the probe never puts its probabilities. Small test
    sets get equal-count bins (module docstring); the title says which binning is drawn.
    """
    if "reliability" not in run.results.columns:
        raise FigureSkipped("results.json has no ECE rows with reliability bins (metric 'ece')")
    entries = [(b, layer, seed, part.iloc[0]) for b, layer, seed, part in _reference_rows(run, ["ece"])
               if reliability_bins(part.iloc[0])]
    if not entries:
        raise FigureSkipped(f"no selected probe at train fraction {run.full_fraction:g} has reliability bins")
    drawn = [_bins_to_draw(run, backbone, layer, seed, row) for backbone, layer, seed, row in entries]
    equal_count = any(flag for _, flag in drawn)
    colours = backbone_colours(run)
    with figure_style():
        fig = new_figure(7.6, 6.4)
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
        top.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=0.9, label="perfect calibration")
        width = 0.8 / len(entries)
        for i, ((backbone, layer, seed, row), (bins, _)) in enumerate(zip(entries, drawn)):
            probability = np.array([number_or_nan(b.get("mean_probability")) for b in bins])
            observed = np.array([number_or_nan(b.get("observed_frequency")) for b in bins])
            counts = np.array([number_or_nan(b.get("n")) for b in bins])
            shown = np.isfinite(probability) & np.isfinite(observed)
            ece = number_or_nan(row.get("value"))
            top.plot(probability[shown], observed[shown], marker=MARKERS[i % len(MARKERS)], color=colours[backbone],
                     label=f"{backbone} ({layer}): ECE {ece:.3f}")
            low = np.array([number_or_nan(b.get("bin_low")) for b in bins])
            high = np.array([number_or_nan(b.get("bin_high")) for b in bins])
            bin_width = high - low
            bottom.bar(low + bin_width * (0.1 + width * (i + 0.5)), np.nan_to_num(counts),
                       width=bin_width * width * 0.95, color=colours[backbone], label=backbone)
        top.set_xlim(0, 1)
        top.set_ylim(-0.02, 1.02)
        top.set_aspect("auto")
        top.set_ylabel("Observed frequency of the event")
        what = str(entries[0][3].get("calibrated") or "predicted probability")
        seeds = ", ".join(sorted({str(e[2]) for e in entries}))
        binning = (f"bins of equal count (>= {MIN_PER_BIN} each: small test set)" if equal_count
                   else "equal-width bins")
        top.set_title(wrap_title(f"Reliability of the selected probe ({what}), train fraction {run.full_fraction:g}, "
                                 f"seed {seeds}; {binning}", 7.0))
        top.legend(loc="upper left", frameon=False)
        bottom.set_xlabel("Mean predicted probability in the bin")
        bottom.set_ylabel("Test images")
        bottom.grid(axis="x", visible=False)
        fig.tight_layout()
    return fig


def subgroup_forest(run: RunData) -> Figure:
    """Task metric ± 95% CI per subgroup, one row per group, one marker per backbone's selected layer.

    A group whose metric is undefined (e.g. one class absent) gets an "n/a" beside its row
    instead of silently missing. The dotted line per backbone is its value on the whole test set.
    """
    metrics = group_metrics(run)
    if not metrics:
        raise FigureSkipped(f"results.json has no per-group rows ({run.task_metric}@<group>)")
    task_metric = run.task_metric
    entries = _reference_rows(run, [*metrics.values(), task_metric])
    if not entries:
        raise FigureSkipped(f"no backbone has a validation-selected layer at train fraction {run.full_fraction:g}")
    labels = list(metrics)
    colours = backbone_colours(run)
    y = np.arange(len(labels))[::-1].astype(float)
    step = 0.7 / len(entries)
    with figure_style():
        fig = new_figure(8.0, max(3.0, 1.4 + 0.32 * len(labels) * max(1, len(entries) / 2)))
        ax = fig.add_subplot()
        for i, (backbone, layer, seed, part) in enumerate(entries):
            indexed = part.drop_duplicates("metric").set_index("metric")
            names = list(metrics.values())
            values = np.array([number_or_nan(indexed["value"].get(n)) for n in names])
            low = np.array([number_or_nan(indexed["ci_low"].get(n)) for n in names])
            high = np.array([number_or_nan(indexed["ci_high"].get(n)) for n in names])
            offset = y + 0.35 - step * (i + 0.5)
            ax.errorbar(values, offset, xerr=ci_errors(values, low, high), fmt=MARKERS[i % len(MARKERS)],
                        color=colours[backbone], capsize=2.5, label=f"{backbone} ({layer})", linestyle="none")
            for position in offset[~np.isfinite(values)]:
                ax.text(0.01, position, "n/a", transform=ax.get_yaxis_transform(), va="center", fontsize=7,
                        color=colours[backbone])
            overall = number_or_nan(indexed["value"].get(task_metric))
            if np.isfinite(overall):
                ax.axvline(overall, color=colours[backbone], linestyle=":", linewidth=0.9)
        counts = {}
        first = entries[0][3].drop_duplicates("metric").set_index("metric")
        for label, name in metrics.items():
            n = first["n_test"].get(name)
            counts[label] = f"{label} (n={int(n)})" if n is not None and np.isfinite(number_or_nan(n)) else label
        ax.set_yticks(y, [counts[label] for label in labels])
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_xlabel(f"Test {metric_label(task_metric, run.task_type)} with 95% CI")
        ax.set_title(wrap_title(f"Test {metric_label(task_metric, run.task_type)} per subgroup of the selected layer, "
                                f"train fraction {run.full_fraction:g} (dotted: whole test set)", 7.5))
        ax.grid(axis="y", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="backbone (layer)")
        fig.tight_layout()
    return fig


PER_GROUP = FigureSpec(
    "per_group",
    "Task metric per subgroup",
    "Forest plot: task metric within each subgroup of the test set (e.g. sex, site, organ) for each "
    "backbone's selected layer at the largest train fraction, with its 95% bootstrap CI resampled within "
    "the group (over patients when they have several images); dotted lines: the whole test set. 'n/a': the "
    "metric is undefined in that group (e.g. a class absent from it).",
    subgroup_forest,
    applies=lambda run: bool(group_metrics(run)),
)

RELIABILITY = FigureSpec(
    "reliability",
    "Calibration (reliability diagram)",
    "Observed frequency against mean predicted probability in equal-width probability bins (with fewer "
    f"than {EQUAL_COUNT_BELOW} test images: bins holding the same number of images, at least {MIN_PER_BIN}, so "
    "no point rests on one or two images), for each backbone's selected probe at the largest train fraction "
    "(top), and the number of test predictions per bin (bottom). The legend gives the expected calibration "
    "error (ECE, equal-width bins as in results.json); its CI is in the calibration table.",
    reliability_diagram,
    applies=lambda run: "ece" in set(run.results["metric"]),
)


__all__ = ["EQUAL_COUNT_BELOW", "MIN_PER_BIN", "PER_GROUP", "RELIABILITY", "equal_count_bins", "reliability_bins",
           "reliability_diagram", "subgroup_forest"]
