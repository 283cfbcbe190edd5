"""The study's figures across runs, drawn from comparison.json's data alone (matplotlib, Agg).

Each function takes the comparison dict and returns SVG text, or None when its data is absent
(no multi-class task: no per-class figure; no run with several train fractions: no
label-efficiency figure). One panel per task (per discipline for label efficiency).
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: p_holm_tasks below this draws a significance mark
ALPHA = 0.05
PANEL_W, PANEL_H = 4.2, 3.2


def _panels(n: int, height: float = PANEL_H) -> tuple[Any, list[Any]]:
    columns = min(n, 4)
    rows = math.ceil(n / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(PANEL_W * columns, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return figure, flat[:n]


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.tight_layout()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    return buffer.getvalue()


def _colours(columns: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(columns) <= 10 else "tab20")
    return {column: cmap(i % cmap.N) for i, column in enumerate(columns)}


def _err(value: float, low: float | None, high: float | None) -> tuple[float, float]:
    if value is None or low is None or high is None:
        return 0.0, 0.0
    return max(value - low, 0.0), max(high - value, 0.0)


def significance_marks(comparison: dict[str, Any], task: str, cells: list[dict]) -> dict[str, str]:
    """``{column: "*"}`` for columns whose headline differs from the task's best column
    (paired bootstrap, Holm across tasks); columns never paired with the best get no mark."""
    ranked = [c for c in cells if c["rank"] is not None]
    if not ranked:
        return {}
    best = min(ranked, key=lambda c: c["rank"])
    marks = {}
    for row in comparison["comparisons"]:
        if (row["task"] == task and row["test"] == "paired_bootstrap" and row.get("p_holm_tasks") is not None
                and row["train_fraction"] == best["train_fraction"] and row["seed"] == best["seed"]
                and best["column"] in (row["backbone_a"], row["backbone_b"]) and row["p_holm_tasks"] < ALPHA):
            other = row["backbone_b"] if row["backbone_a"] == best["column"] else row["backbone_a"]
            marks[other] = "*"
    return marks


def task_bars(comparison: dict[str, Any]) -> str | None:
    tasks = [t for t in comparison["tasks"] if any(c["task"] == t["task"] for c in comparison["cells"])]
    if not tasks:
        return None
    colours = _colours(comparison["columns"])
    figure, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        cells = [c for c in comparison["cells"] if c["task"] == task["task"] and c["value"] is not None]
        marks = significance_marks(comparison, task["task"], cells)
        for x, entry in enumerate(cells):
            low, high = _err(entry["value"], entry["ci_low"], entry["ci_high"])
            ax.bar(x, entry["value"], color=colours[entry["column"]], yerr=[[low], [high]], capsize=3)
            if entry["column"] in marks:
                ax.text(x, entry["value"] + high + 0.01, marks[entry["column"]], ha="center", fontsize=12)
        ax.set_xticks(range(len(cells)), [c["column"] for c in cells], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task['task']}: {task['metric']}", fontsize=9)
        ax.set_ylim(0, 1.08)
    return _svg(figure)


def per_class(comparison: dict[str, Any]) -> str | None:
    tasks = list(dict.fromkeys(r["task"] for r in comparison["per_class"]))
    if not tasks:
        return None
    colours = _colours(comparison["columns"])
    most = max(len(t["classes"]) for t in comparison["tasks"] if t["task"] in tasks)
    figure, axes = _panels(len(tasks), height=max(PANEL_H, 0.22 * most + 1))
    for ax, task in zip(axes, tasks):
        rows = [r for r in comparison["per_class"] if r["task"] == task]
        classes = list(dict.fromkeys(r["class"] for r in rows))
        columns = list(dict.fromkeys(r["column"] for r in rows))
        for k, column in enumerate(columns):
            offset = (k - (len(columns) - 1) / 2) * 0.8 / max(len(columns), 1)
            mine = [r for r in rows if r["column"] == column and r["value"] is not None]
            ys = [classes.index(r["class"]) + offset for r in mine]
            errors = list(zip(*[_err(r["value"], r["ci_low"], r["ci_high"]) for r in mine])) or [[], []]
            ax.errorbar([r["value"] for r in mine], ys, xerr=errors, fmt="o", ms=3, color=colours[column],
                        label=column, capsize=2)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("AUC (one vs rest)", fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=6)
    return _svg(figure)


def layer_sweeps(comparison: dict[str, Any]) -> str | None:
    sweeps = comparison["layer_sweeps"]
    swept = [(r["task"], r["column"]) for r in sweeps]
    tasks = list(dict.fromkeys(task for task, column in swept if swept.count((task, column)) > 1))
    if not tasks:  # every column probed one layer: nothing was swept
        return None
    colours = _colours(comparison["columns"])
    metric = {t["task"]: t["metric"] for t in comparison["tasks"]}
    figure, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        rows = [r for r in comparison["layer_sweeps"] if r["task"] == task and r["value"] is not None]
        for column in dict.fromkeys(r["column"] for r in rows):
            mine = [r for r in rows if r["column"] == column]
            depth = [i / max(len(mine) - 1, 1) for i in range(len(mine))]
            ax.plot(depth, [r["value"] for r in mine], marker="." if len(mine) > 1 else "o", color=colours[column],
                    label=column)
            ax.fill_between(depth, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine],
                            color=colours[column], alpha=0.15, linewidth=0)
            for x, r in zip(depth, mine):
                if r["selected"]:
                    ax.plot(x, r["value"], marker="*", ms=11, color=colours[column], markeredgecolor="black")
        ax.set_xlabel("relative depth (layer / last layer)", fontsize=8)
        ax.set_ylabel(metric[task], fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=6)
    return _svg(figure)


def label_efficiency(comparison: dict[str, Any]) -> str | None:
    rows = comparison["label_efficiency"]
    disciplines = list(dict.fromkeys(r["discipline"] for r in rows))
    if not disciplines:
        return None
    figure, axes = _panels(len(disciplines))
    series = list(dict.fromkeys(f"{r['task']}: {r['column']}" for r in rows))
    colours = _colours(series)
    for ax, discipline in zip(axes, disciplines):
        for name in series:
            mine = sorted((r for r in rows if r["discipline"] == discipline and f"{r['task']}: {r['column']}" == name),
                          key=lambda r: r["train_fraction"])
            if not mine:
                continue
            errors = list(zip(*[_err(r["fraction_of_full"], r["ci_low"], r["ci_high"]) for r in mine]))
            ax.errorbar([r["train_fraction"] for r in mine], [r["fraction_of_full"] for r in mine], yerr=errors,
                        marker="o", ms=3, capsize=2, color=colours[name], label=name)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("train fraction", fontsize=8)
        ax.set_ylabel("share of full-data performance", fontsize=8)
        ax.set_title(discipline, fontsize=9)
        ax.legend(fontsize=6)
    return _svg(figure)


#: (file stem, title, caption, drawer) in report order
FIGURES: tuple[tuple[str, str, str, Callable[[dict[str, Any]], str | None]], ...] = (
    ("task_bars", "Headline metric per task",
     "Val-selected layer at the chosen train fraction, 95 % bootstrap CI from each run. *: differs from the task's "
     "best column (paired bootstrap, Holm-adjusted across tasks, p < 0.05); runs with different test sets are "
     "never tested, so carry no mark.", task_bars),
    ("per_class", "Per-class AUC (multi-class and multi-label tasks)",
     "One-vs-rest AUC of each class with its 95 % CI, for the headline probe of each column.", per_class),
    ("layer_sweeps", "Layer sweeps", "Headline metric of every probed layer (depth relative to the deepest one "
     "probed) with 95 % CI bands; the star is the layer chosen on validation.", layer_sweeps),
    ("label_efficiency", "Label efficiency by discipline",
     "Share of the full-data value reached at each train fraction (mean over seeds) with the run's two-level "
     "bootstrap CI, one panel per discipline.", label_efficiency),
)


def draw_figures(comparison: dict[str, Any]) -> dict[str, str]:
    """``{stem: svg}`` of every figure whose data the comparison holds."""
    out = {}
    for stem, _, _, draw in FIGURES:
        svg = draw(comparison)
        if svg is not None:
            out[stem] = svg
    return out


__all__ = ["FIGURES", "draw_figures", "significance_marks"]
