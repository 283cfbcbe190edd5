"""Metrics per subgroup of the test set (e.g. per organ or per acquisition site)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.errors import DataError
from medprobe.stats.bootstrap import bootstrap_indices, bootstrap_metrics, summarise
from medprobe.stats.metrics import TaskType, check_inputs, compute_metrics


def per_group_metrics(y_true: np.ndarray, scores: np.ndarray, groups: Sequence[Any] | np.ndarray,
                      task_type: TaskType, classes: Sequence[str], *, metrics: Sequence[str] | None = None,
                      n_replicates: int = 0, seed: int = 0, level: float = 0.95) -> list[dict[str, Any]]:
    """One row per (group, metric): ``group, n, metric, value`` (+ ``sd, ci_low, ci_high,
    n_dropped`` when ``n_replicates`` > 0), groups in sorted order.

    A group often lacks a class (an organ without a given finding), so a metric that is undefined
    within a group is reported as NaN rather than raised: the other groups' numbers stay usable.
    Bootstrap replicates resample within each group (seeded by ``seed``).
    """
    y, s = check_inputs(y_true, scores, task_type, classes)
    labels = pd.Series(np.asarray(groups, dtype=object).ravel())
    if len(labels) != s.shape[0]:
        raise DataError(f"groups must have one entry per sample ({s.shape[0]}), got {len(labels)}")
    if labels.isna().any():
        raise DataError(f"sample {int(np.flatnonzero(labels.isna().to_numpy())[0])} has no group")
    names = labels.astype(str).to_numpy()
    rows: list[dict[str, Any]] = []
    for group in sorted(set(names)):
        members = np.flatnonzero(names == group)
        values = compute_metrics(y[members], s[members], task_type, classes, metrics=metrics, undefined="nan")
        replicates = {}
        if n_replicates > 0:
            indices = bootstrap_indices(members.size, n_replicates, seed=seed)
            replicates = bootstrap_metrics(y[members], s[members], task_type, classes, indices, metrics=metrics)
        for metric, value in values.items():
            row: dict[str, Any] = {"group": group, "n": int(members.size), "metric": metric, "value": value}
            if n_replicates > 0:
                row.update(summarise(value, replicates[metric], level=level))
            rows.append(row)
    return rows


__all__ = ["per_group_metrics"]
