"""``medprobe compare``: finished run folders in, one comparison (JSON, CSV, figures, HTML) out."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import medprobe
from medprobe.compare.pairing import SharedTestSet, add_task_holm, group_comparisons, group_test_sets
from medprobe.compare.runs import OTHER_DISCIPLINE, RunFolder, load_runs
from medprobe.compare.tables import add_ranks, cell, cells_csv, headline_row, mean_ranks, setting_warnings
from medprobe.errors import ConfigError
from medprobe.io import atomic_write_json, atomic_write_text

#: files compare writes into its output folder (anything else there is left alone)
COMPARE_FILES = ("comparison.json", "comparison.csv", "compare.html")
DISCIPLINE_NOTE = ("Disciplines come from the study's task table (medprobe.data.paper.PAPER_TASKS) for runs of the "
                   "study's task adapters; run.json has no discipline field, so every other run is grouped as "
                   f"'{OTHER_DISCIPLINE}'.")


def task_groups(runs: list[RunFolder]) -> dict[str, list[RunFolder]]:
    groups: dict[str, list[RunFolder]] = {}
    for run in runs:
        groups.setdefault(run.task, []).append(run)
    return groups


def sweep_rows(task: str, group: SharedTestSet, fraction: float, headline: dict[tuple[str, str], dict]) -> list[dict]:
    """Per-layer headline metric of each column at the chosen fraction and seed (layer-sweep data)."""
    out = []
    for column in group.columns:
        chosen = headline.get((task, column.key))
        if chosen is None:
            continue
        run = column.run
        for row in run.results:
            if (row["backbone"] == column.backbone and row["metric"] == run.task_metric
                    and row["seed"] == chosen["seed"] and abs(float(row["train_fraction"]) - fraction) < 1e-12):
                out.append({"task": task, "column": column.key, "layer": row["layer"], "value": row["value"],
                            "ci_low": row["ci_low"], "ci_high": row["ci_high"], "selected": bool(row["selected"])})
    return out


def per_class_rows(task: str, group: SharedTestSet, headline: dict[tuple[str, str], dict]) -> list[dict]:
    """Per-class AUC of each column's headline probe (multi-class and multi-label tasks)."""
    out = []
    for column in group.columns:
        chosen = headline.get((task, column.key))
        if chosen is None or column.run.task_type == "binary":
            continue
        for name in column.run.classes:
            for row in column.run.results:
                if (row["backbone"] == column.backbone and row["metric"] == f"auc[{name}]" and row["selected"]
                        and row["seed"] == chosen["seed"] and row["train_fraction"] == chosen["train_fraction"]):
                    out.append({"task": task, "column": column.key, "class": name, "value": row["value"],
                                "ci_low": row["ci_low"], "ci_high": row["ci_high"]})
    return out


def efficiency_rows(task: str, group: SharedTestSet) -> list[dict]:
    """run.json's label-efficiency entries (share of full-data performance, CI) per column."""
    out = []
    for column in group.columns:
        run = column.run
        for entry in run.summary.get("label_efficiency") or []:
            if entry.get("backbone") == column.backbone and entry.get("fraction_of_full") is not None:
                out.append({"task": task, "discipline": run.discipline, "column": column.key,
                            "train_fraction": entry["train_fraction"], "fraction_of_full": entry["fraction_of_full"],
                            "ci_low": entry.get("fraction_of_full_ci_low"),
                            "ci_high": entry.get("fraction_of_full_ci_high")})
    return out


def build_comparison(runs: list[RunFolder], fraction: float = 1.0, reference: str | None = None) -> dict[str, Any]:
    """Everything comparison.json holds (see the README's ``medprobe compare`` section)."""
    tasks, cells, comparisons, sweeps, per_class, efficiency = [], [], [], [], [], []
    groups_by_task = task_groups(runs)
    # one task: its own check below says it all
    warnings = setting_warnings(runs, "all runs") if len(groups_by_task) > 1 else []
    headline: dict[tuple[str, str], dict] = {}
    for task, members in groups_by_task.items():
        groups, unpaired = group_test_sets(members)
        first = members[0]
        for group in groups:
            for column in group.columns:
                row = headline_row(column, fraction)
                if row is None:
                    warnings.append(f"{task}: {column.key} ({column.run.path}) has no probe at train fraction "
                                    f"{fraction:g}; its cell is empty")
                    continue
                headline[(task, column.key)] = row
                cells.append(cell(task, column, row))
            comparisons.extend(group_comparisons(task, group, reference))
            sweeps.extend(sweep_rows(task, group, fraction, headline))
            per_class.extend(per_class_rows(task, group, headline))
            efficiency.extend(efficiency_rows(task, group))
            if len(group.runs) > 1:
                warnings.extend(setting_warnings(group.runs, f"task {task}"))
        tasks.append({"task": task, "title": first.task_title, "discipline": first.discipline,
                      "task_type": first.task_type, "metric": first.task_metric, "classes": first.classes,
                      "test_sets": [[r.name for r in g.runs] for g in groups], "unpaired": unpaired,
                      "columns": [c.key for g in groups for c in g.columns]})
    add_ranks(cells)
    add_task_holm(comparisons, {t["task"]: t["metric"] for t in tasks})
    return {
        "medprobe_version": medprobe.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_fraction": fraction, "reference": reference,
        "runs": [{"name": r.name, "run_dir": str(r.path.resolve()), "task": r.task, "discipline": r.discipline,
                  "run_fingerprint": r.fingerprint, "medprobe_version": r.version, "task_type": r.task_type,
                  "task_metric": r.task_metric, "settings": r.settings()} for r in runs],
        "tasks": tasks, "columns": list(dict.fromkeys(c["column"] for c in cells)), "cells": cells,
        "mean_ranks": mean_ranks(cells), "comparisons": comparisons, "layer_sweeps": sweeps,
        "per_class": per_class, "label_efficiency": efficiency, "warnings": warnings,
        "discipline_note": DISCIPLINE_NOTE,
    }


def compare_runs(run_dirs: list[str | Path], out: str | Path, *, fraction: float = 1.0,
                 reference: str | None = None, overwrite: bool = False) -> Path:
    """Compare finished run folders into ``out``; returns the HTML report's path."""
    from medprobe.compare.html import write_report

    if not 0 < fraction <= 1:
        raise ConfigError(f"--fraction must lie in (0, 1], got {fraction}")
    out = Path(out)
    existing = [name for name in COMPARE_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds a comparison ({', '.join(existing)}); pass --overwrite or "
                          "choose another --out")
    runs = load_runs(list(run_dirs))
    comparison = build_comparison(runs, fraction, reference)
    if reference is not None and not any(reference in (c["column"], c["backbone"]) for c in comparison["cells"]):
        raise ConfigError(f"--reference {reference!r} is not a backbone of these runs "
                          f"(columns: {comparison['columns']})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "comparison.json", comparison)
    atomic_write_text(out / "comparison.csv", cells_csv(comparison["cells"]))
    return write_report(comparison, out)


__all__ = ["compare_runs", "build_comparison", "COMPARE_FILES"]
