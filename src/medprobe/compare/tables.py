"""The task x backbone table: headline metric with its CI, ranks, provenance, and warnings.

Each cell is one column's val-selected probe at the chosen train fraction, read from the run's
results.json as the run computed it (its own replicates); only the paired tests are recomputed.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pandas as pd

from medprobe.compare.pairing import Column
from medprobe.compare.runs import RunFolder

CELL_FIELDS = ("task", "column", "backbone", "run", "metric", "value", "ci_low", "ci_high", "rank", "layer",
               "train_fraction", "seed", "n_test", "C", "bootstrap_unit", "n_bootstrap", "run_dir",
               "run_fingerprint", "medprobe_version", "cache_key")
#: statistics settings that should agree between runs set side by side
SETTING_NAMES = {"bootstrap_unit": "bootstrap units", "n_bootstrap": "bootstrap replicate counts", "Cs": "C grids",
                 "seed": "seeds"}


def headline_row(column: Column, fraction: float) -> dict[str, Any] | None:
    """The column's selected row of the task metric at ``fraction``: the run's own seed where it
    has one there, else the smallest seed; None when the run has no probe at that fraction."""
    run = column.run
    rows = [r for r in run.results if r["backbone"] == column.backbone and r.get("selected")
            and r["metric"] == run.task_metric and abs(float(r["train_fraction"]) - fraction) < 1e-12]
    if not rows:
        return None
    own = [r for r in rows if r["seed"] == run.seed]
    return own[0] if own else min(rows, key=lambda r: r["seed"])


def cell(task: str, column: Column, row: dict[str, Any]) -> dict[str, Any]:
    """One task x column cell of the table: the headline row's value and CI with the provenance needed
    to trace it back to its run (folder, fingerprint, version, cache key)."""
    run = column.run
    return {"task": task, "column": column.key, "backbone": column.backbone, "run": run.name,
            "metric": run.task_metric, **{k: row.get(k) for k in ("value", "ci_low", "ci_high", "layer", "seed",
                                                                   "n_test", "C", "bootstrap_unit")},
            "train_fraction": float(row["train_fraction"]), "rank": None,
            "n_bootstrap": run.settings()["n_bootstrap"], "run_dir": str(run.path.resolve()),
            "run_fingerprint": run.fingerprint, "medprobe_version": run.version,
            "cache_key": run.backbone_info(column.backbone).get("cache_key")}


def add_ranks(cells: list[dict[str, Any]]) -> None:
    """Rank columns within each task (1 = best; ties share the mean rank; undefined values unranked)."""
    frame = pd.DataFrame(cells)
    if frame.empty:
        return
    ranks = frame.groupby("task")["value"].rank(ascending=False, method="average")
    for entry, rank in zip(cells, ranks):
        entry["rank"] = None if pd.isna(rank) else float(rank)


def mean_ranks(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean rank of each column over the tasks where it has a ranked cell, best first."""
    ranked: dict[str, list[float]] = {}
    for entry in cells:
        if entry["rank"] is not None:
            ranked.setdefault(entry["column"], []).append(entry["rank"])
    summary = [{"column": column, "mean_rank": float(np.mean(ranks)), "n_tasks": len(ranks)}
               for column, ranks in ranked.items()]
    return sorted(summary, key=lambda s: (s["mean_rank"], -s["n_tasks"], s["column"]))


def setting_warnings(runs: list[RunFolder], scope: str) -> list[str]:
    """A warning for each statistics setting on which ``runs`` disagree."""
    warnings = []
    for key, label in SETTING_NAMES.items():
        values: dict[str, list[str]] = {}
        for run in runs:
            values.setdefault(repr(run.settings()[key]), []).append(run.name)
        if len(values) > 1:
            listing = "; ".join(f"{value} in {', '.join(names)}" for value, names in values.items())
            warnings.append(f"{scope}: runs used different {label} ({listing}); their CIs are not computed alike"
                            + (" and paired tests use the first run's replicates" if key != "Cs" else ""))
    return warnings


def cells_csv(cells: list[dict[str, Any]]) -> str:
    """comparison.csv: one row per task x column cell, provenance included."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CELL_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(cells)
    return buffer.getvalue()


__all__ = ["headline_row", "cell", "add_ranks", "mean_ranks", "setting_warnings", "cells_csv", "CELL_FIELDS"]
