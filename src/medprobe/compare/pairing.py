"""Paired tests between backbones of different runs that scored the same test samples.

A run pairs its backbones on one set of bootstrap replicates of one test set. Across runs that is
only valid when the runs saw the *same* test samples with the *same* labels, which is checked
from predictions.parquet (sample ids and labels), never assumed from the data set's name. Runs
that pass are put in one :class:`SharedTestSet`; the replicates are drawn once for it with the function,
seed, replicate count and unit the first run used, so a comparison of two single-backbone runs
equals the one a single run file holding both backbones writes (same rows, same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medprobe.compare.runs import RunFolder
from medprobe.errors import DataError
from medprobe.stats import (
    add_adjusted_p_values,
    bootstrap_metrics,
    compute_metrics,
    holm,
    resampling_plan,
)
from medprobe.stats.comparisons import delong_class_rows, paired_bootstrap_row

Probe = tuple[float, int]  # (train fraction, seed)


@dataclass(frozen=True)
class Column:
    """One backbone of one run, as a column of the task x backbone table."""

    key: str
    run: RunFolder
    backbone: str


@dataclass
class SharedTestSet:
    """Runs of one task that scored the same samples with the same labels (the first run's order)."""

    runs: list[RunFolder]
    sample_ids: np.ndarray
    labels: np.ndarray
    columns: list[Column] = field(default_factory=list)


def task_columns(runs: list[RunFolder]) -> list[Column]:
    """Columns of one task's runs, in run order: the backbone's label, qualified by the run name
    (``"pixels [run-b]"``) where two runs of the task share it."""
    labels = [(run, backbone) for run in runs for backbone in dict.fromkeys(r["backbone"] for r in run.results)]
    counts: dict[str, int] = {}
    for _, backbone in labels:
        counts[backbone] = counts.get(backbone, 0) + 1
    return [Column(backbone if counts[backbone] == 1 else f"{backbone} [{run.name}]", run, backbone)
            for run, backbone in labels]


def label_columns(run: RunFolder) -> list[str]:
    return [f"true[{c}]" for c in run.classes] if run.task_type == "multilabel" else ["y_true"]


def read_test_set(run: RunFolder) -> tuple[np.ndarray, np.ndarray]:
    """The test sample ids and labels a run scored, from its first probe in predictions.parquet."""
    frame = run.predictions
    columns = label_columns(run)
    missing = [c for c in columns if c not in frame.columns]
    if missing or frame.empty:
        raise DataError(f"{run.path}: predictions.parquet holds no test labels ({missing or 'no rows'})")
    first = frame.iloc[0]
    probe = frame[(frame["backbone"] == first["backbone"]) & (frame["layer"] == first["layer"])
                  & (frame["train_fraction"] == first["train_fraction"]) & (frame["seed"] == first["seed"])]
    labels = probe[columns].to_numpy(dtype=np.int64)
    return probe["sample_id"].astype(str).to_numpy(), labels[:, 0] if len(columns) == 1 else labels


def test_set_difference(ids_a: np.ndarray, labels_a: np.ndarray, ids_b: np.ndarray,
                        labels_b: np.ndarray) -> str | None:
    """Why two test sets are not the same (None when they are): sample ids, then labels."""
    only = set(ids_a).symmetric_difference(ids_b)
    if len(ids_a) != len(ids_b) or only or len(set(ids_a)) != len(ids_a):
        return f"{len(ids_a)} vs {len(ids_b)} test samples, {len(only)} sample id(s) in only one of them"
    order = pd.Index(ids_b).get_indexer(ids_a)
    differ = np.asarray(labels_a != labels_b[order]).reshape(len(ids_a), -1).any(axis=1)
    if differ.any():
        return f"same {len(ids_a)} sample ids, but {int(differ.sum())} label(s) differ (e.g. {ids_a[differ][0]})"
    return None


def group_test_sets(runs: list[RunFolder]) -> tuple[list[SharedTestSet], list[str]]:
    """Split one task's runs into groups with identical test sets; say why any run stands apart."""
    groups: list[SharedTestSet] = []
    reasons = []
    for run in runs:
        ids, labels = read_test_set(run)
        why = []
        for group in groups:
            difference = test_set_difference(group.sample_ids, group.labels, ids, labels)
            if difference is None:
                group.runs.append(run)
                break
            why.append(f"{run.name} ({run.path}) is not paired with {', '.join(r.name for r in group.runs)}: "
                       f"its test set differs ({difference})")
        else:
            groups.append(SharedTestSet([run], ids, labels))
            reasons.extend(why)
    columns = task_columns(runs)  # named across the task: unpaired runs may share a backbone label
    for group in groups:
        group.columns = [c for c in columns if any(c.run is run for run in group.runs)]
    return groups, reasons


def test_patients(run: RunFolder, sample_ids: np.ndarray) -> np.ndarray:
    """Patient ids of the test samples, read again from the run's data (predictions.parquet does
    not hold them); needed only when the run resampled patients."""
    from medprobe.config import parse_config
    from medprobe.data.loaders import load_dataset

    try:
        config = parse_config(run.summary["config"], f"{run.path}/run.json")
        samples = load_dataset(config.data).samples
        by_id = samples.set_index(samples["sample_id"].astype(str))["group"]
        return by_id.loc[list(sample_ids)].to_numpy(dtype=object)
    except (KeyError, DataError, OSError) as error:
        raise DataError(f"{run.path}: the run resampled patients, and their ids are not in predictions.parquet; "
                        f"reading them from the run's data failed: {error}") from None


def replicates_for(group: SharedTestSet) -> tuple[Any, dict[str, Any]]:
    """The group's bootstrap replicates, drawn as the first run drew its own (same function,
    seed, count and unit)."""
    first = group.runs[0]
    settings = first.settings()
    patient_level = settings["bootstrap_unit"] == "patient"
    patients = test_patients(first, group.sample_ids) if patient_level else None
    indices, unit = resampling_plan(patients, len(group.sample_ids), int(settings["n_bootstrap"]),
                                    int(settings["seed"]), "patient" if patient_level else "image")
    return indices, {**unit, "n_bootstrap": int(settings["n_bootstrap"]), "replicate_seed": int(settings["seed"]),
                     "patients": patients}


def selected_scores(column: Column, group: SharedTestSet) -> dict[Probe, tuple[str, np.ndarray]]:
    """``{(fraction, seed): (layer, scores)}`` of a column's val-selected probes, in the group's order."""
    frame = column.run.predictions
    frame = frame[frame["backbone"] == column.backbone]
    score_columns = [f"score[{c}]" for c in column.run.classes]
    out = {}
    for (fraction, seed, layer), part in frame.groupby(["train_fraction", "seed", "layer"], sort=False):
        scores = part.set_index(part["sample_id"].astype(str)).loc[list(group.sample_ids), score_columns]
        out[(float(fraction), int(seed))] = (str(layer), scores.to_numpy(dtype=np.float64))
    return out


def column_pairs(columns: list[Column], reference: str | None) -> list[tuple[Column, Column]]:
    """``(a, b)`` pairs tested as a - b: every later column against every earlier one, or, with a
    reference backbone, every other column against it (a run's own convention)."""
    if reference is not None:
        refs = [c for c in columns if reference in (c.key, c.backbone)]
        return [(other, ref) for ref in refs for other in columns if other.key != ref.key]
    return [(columns[j], columns[i]) for i in range(len(columns)) for j in range(i + 1, len(columns))]


def group_comparisons(task: str, group: SharedTestSet, reference: str | None) -> list[dict[str, Any]]:
    """Paired bootstrap (headline metric, and per class for multi-class / multi-label tasks) and
    DeLong rows for every pair of the group's columns at every (fraction, seed) both hold; the
    per-class rows of a pair are Holm/BH-adjusted as in a run."""
    pairs = column_pairs(group.columns, reference)
    if not pairs:
        return []
    first = group.runs[0]
    metric = first.task_metric
    per_class = {"auc": "auc", "f1_macro": "f1"}.get(metric) if first.task_type != "binary" else None
    metrics = [metric] + ([f"{per_class}[{c}]" for c in first.classes] if per_class else [])
    indices, unit = replicates_for(group)
    patients = unit.pop("patients")
    delong_patients = patients if unit["bootstrap_unit"] == "patient" else None
    scores = {c.key: selected_scores(c, group) for c in group.columns}
    kept: dict[tuple[str, Probe], tuple[dict, dict]] = {}

    def point_and_replicates(column: Column, probe: Probe) -> tuple[dict, dict]:
        if (column.key, probe) not in kept:
            values = scores[column.key][probe][1]
            point = compute_metrics(group.labels, values, first.task_type, first.classes, metrics=metrics)
            replicates = bootstrap_metrics(group.labels, values, first.task_type, first.classes, indices,
                                           metrics=metrics)
            kept[(column.key, probe)] = (point, replicates)
        return kept[(column.key, probe)]

    delong = bool(((first.summary.get("config") or {}).get("stats") or {}).get("delong", True))
    rows = []
    for a, b in pairs:
        for probe in sorted(set(scores[a.key]) & set(scores[b.key])):
            base = {"task": task, "train_fraction": probe[0], "seed": probe[1],
                    "backbone_a": a.key, "layer_a": scores[a.key][probe][0], "run_a": a.run.name,
                    "backbone_b": b.key, "layer_b": scores[b.key][probe][0], "run_b": b.run.name}
            pair = (point_and_replicates(a, probe), point_and_replicates(b, probe))
            rows.extend({**base, **paired_bootstrap_row(pair, name), **unit} for name in metrics)
            if delong:
                rows.extend({**base, **row} for row in delong_class_rows(
                    group.labels, scores[a.key][probe][1], scores[b.key][probe][1], first.task_type,
                    first.classes, delong_patients))
    return add_adjusted_p_values(rows)


def add_task_holm(rows: list[dict[str, Any]], headline: dict[str, str]) -> list[dict[str, Any]]:
    """``p_holm_tasks``: Holm across tasks for each pair of columns, fraction, seed and test, on
    the headline metric rows (``headline``: task -> its metric); other rows get None."""
    families: dict[tuple, list[int]] = {}
    for position, row in enumerate(rows):
        row["p_holm_tasks"] = None
        if row["metric"] == headline.get(row["task"]):
            key = (row["backbone_a"], row["backbone_b"], row["train_fraction"], row["seed"], row["test"])
            families.setdefault(key, []).append(position)
    for members in families.values():
        p = np.array([np.nan if rows[i]["p_value"] is None else rows[i]["p_value"] for i in members])
        for i, adjusted in zip(members, holm(p)):
            rows[i]["p_holm_tasks"] = float(adjusted) if np.isfinite(adjusted) else None
            rows[i]["n_tasks_family"] = int(np.isfinite(p).sum())
    return rows


__all__ = ["Column", "SharedTestSet", "task_columns", "group_test_sets", "group_comparisons", "add_task_holm",
           "test_set_difference", "read_test_set"]
