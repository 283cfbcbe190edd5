"""Metrics per subgroup of the test set (e.g. per organ or per acquisition site)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.errors import DataError
from medprobe.stats.bootstrap import bootstrap_metrics, summarise
from medprobe.stats.resampling import BootstrapUnit, resampling_plan
from medprobe.stats.metrics import TaskType, check_inputs, compute_metrics


def per_group_metrics(y_true: np.ndarray, scores: np.ndarray, groups: Sequence[Any] | np.ndarray,
                      task_type: TaskType, classes: Sequence[str], *, metrics: Sequence[str] | None = None,
                      n_replicates: int = 0, seed: int = 0, level: float = 0.95,
                      patients: Sequence[Any] | np.ndarray | None = None,
                      bootstrap_unit: BootstrapUnit = "patient") -> list[dict[str, Any]]:
    """One row per (group, metric): ``group, n, metric, value`` (+ ``sd, ci_low, ci_high,
    n_dropped, bootstrap_unit, n_units`` when ``n_replicates`` > 0), groups in sorted order.

    A group often lacks a class (an organ without a given finding), so a metric that is undefined
    within a group is reported as NaN rather than raised: the other groups' numbers stay usable.
    Bootstrap replicates resample within each group (seeded by ``seed``): the group's patients
    when ``patients`` (one id per sample) shows several images per patient and ``bootstrap_unit``
    is ``"patient"`` (see :func:`~medprobe.stats.resampling.resampling_plan`), else its images. A
    group of one patient has no SD or CI (NaN), not a zero-width one.
    """
    y, s = check_inputs(y_true, scores, task_type, classes)
    labels = pd.Series(np.asarray(groups, dtype=object).ravel())
    if len(labels) != s.shape[0]:
        raise DataError(f"groups must have one entry per sample ({s.shape[0]}), got {len(labels)}")
    if labels.isna().any():
        raise DataError(f"sample {int(np.flatnonzero(labels.isna().to_numpy())[0])} has no group")
    names = labels.astype(str).to_numpy()
    patient_ids = None if patients is None else np.asarray(patients, dtype=object).ravel()
    if patient_ids is not None and patient_ids.size != names.size:
        raise DataError(f"patient ids must have one entry per sample ({names.size}), got {patient_ids.size}")
    rows: list[dict[str, Any]] = []
    for group in sorted(set(names)):
        members = np.flatnonzero(names == group)
        values = compute_metrics(y[members], s[members], task_type, classes, metrics=metrics, undefined="nan")
        replicates, unit = {}, {}
        if n_replicates > 0:
            indices, unit = resampling_plan(None if patient_ids is None else patient_ids[members], members.size,
                                            n_replicates, seed, bootstrap_unit)
            replicates = bootstrap_metrics(y[members], s[members], task_type, classes, indices, metrics=metrics)
            if unit["n_units"] < 2:  # one patient (or image): resampling it says nothing about spread
                replicates = {name: np.full(n_replicates, np.nan) for name in replicates}
        for metric, value in values.items():
            row: dict[str, Any] = {"group": group, "n": int(members.size), "metric": metric, "value": value}
            if n_replicates > 0:
                row.update(summarise(value, replicates[metric], level=level), **unit)
            rows.append(row)
    return rows


__all__ = ["per_group_metrics"]
