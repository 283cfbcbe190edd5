"""results.json rows, built from probe outcomes and the test labels by pure functions.

Every SD and CI of a run comes from one set of replicates (:class:`EvaluationSet`), drawn over the
test *patients* when some have several images (:func:`~medprobe.stats.resampling.resampling_plan`);
the point values and replicates of each selected probe are returned with the rows so that the paired
comparisons (:mod:`medprobe.stats.comparisons`) and label efficiency
(:mod:`medprobe.stats.label_efficiency`) reuse them instead of recomputing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from medprobe.probes.study_recipes import SELECTED_ON_TEST, study_layer
from medprobe.stats.bootstrap import bootstrap_metrics, summarise
from medprobe.stats.calibration import calibration_summary
from medprobe.stats.resampling import BootstrapUnit, ClusteredIndices, resampling_plan
from medprobe.stats.groups import per_group_metrics
from medprobe.stats.metrics import TaskType, compute_metrics
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.paired import REPLICATE_T_TEST_WARNING

if TYPE_CHECKING:
    from medprobe.config import StatsConfig

#: a selected probe's ``(point values, replicate values)`` per metric, by :attr:`ProbeOutcome.key`
SelectedReplicates = dict[tuple[str, float, int], tuple[dict[str, float], dict[str, np.ndarray]]]


@dataclass(frozen=True)
class EvaluationSet:
    """The test split every probe is scored on, and the bootstrap replicates all of them share
    (sharing them is what makes the comparisons paired). ``task`` is the run name rows carry."""

    task: str
    task_type: TaskType
    classes: list[str]
    labels: np.ndarray
    #: one patient id per test image (None entries, or no array, when the data has none)
    patients: np.ndarray | None
    replicates: np.ndarray | ClusteredIndices
    #: ``{"bootstrap_unit": "patient" | "image", "n_units": int}``
    resampling: dict[str, Any]

    @classmethod
    def draw(cls, task: str, task_type: TaskType, classes: list[str], labels: np.ndarray,
             patients: np.ndarray | None, *, n_bootstrap: int, seed: int,
             bootstrap_unit: BootstrapUnit = "patient") -> "EvaluationSet":
        """Draw the run's replicates (see :func:`~medprobe.stats.resampling.resampling_plan`)."""
        indices, unit = resampling_plan(patients, len(labels), n_bootstrap, seed, bootstrap_unit)
        return cls(task, task_type, classes, labels, patients, indices, unit)


class GroupColumn(NamedTuple):
    """A sample-table column to report the task metric per value of, with its test values.
    ``qualified`` names rows ``<metric>@<column>=<value>`` (``stats.group_columns``) instead of
    ``<metric>@<value>`` (the older ``stats.group_column``)."""

    name: str
    values: np.ndarray
    qualified: bool


def result_row(evaluation: EvaluationSet, outcome: ProbeOutcome, metric: str, summary: dict[str, Any],
               n_test: int) -> dict[str, Any]:
    """One results.json row: a probe's metric with its bootstrap summary and resampling unit (and
    the study-reproduction fields of :func:`study_fields` when a study option made the probe)."""
    return {
        "task": evaluation.task, "backbone": outcome.backbone, "layer": outcome.layer,
        "train_fraction": outcome.train_fraction, "seed": outcome.seed, "metric": metric,
        "value": summary["value"], "sd": summary["sd"], "ci_low": summary["ci_low"],
        "ci_high": summary["ci_high"], "n_test": int(n_test),
        "n_bootstrap_dropped": int(summary["n_dropped"]),
        **evaluation.resampling,
        "selected": outcome.selected, "C": outcome.C, "val_score": outcome.val_score,
        "converged": outcome.converged, "unconverged_heads": outcome.unconverged or None,
        "n_train": outcome.n_train, "n_val": outcome.n_val,
        "stack": outcome.stack, "val_tie": outcome.val_tie, "tied_layers": outcome.tied_layers,
        "tied_Cs": outcome.tied_Cs, **study_fields(outcome),
    }


def study_fields(outcome: ProbeOutcome) -> dict[str, Any]:
    """``recipe``, ``layer_selection`` ("selected on test (optimistic)") and ``study_layer`` (the
    study's file index of the layer), each only when a study option is active: a default run's
    rows keep exactly their keys."""
    fields: dict[str, Any] = {}
    if outcome.recipe != "medprobe":
        fields["recipe"] = outcome.recipe
    if outcome.selected_on == "test":
        fields["layer_selection"] = SELECTED_ON_TEST
    if outcome.study_labels:
        fields["study_layer"] = study_layer(outcome.layer)
    return fields


def metric_rows(outcomes: Sequence[ProbeOutcome], evaluation: EvaluationSet, *,
                per_class_rows: str = "selected") -> tuple[list[dict[str, Any]], SelectedReplicates]:
    """Every metric of every probe with its bootstrap summary, and the selected probes' replicates.

    A layer the sweep did not select keeps its summary metrics only (the layer-sweep figure's data)
    unless ``per_class_rows == "all"``: per-class rows for every layer would multiply results.json
    by the class count."""
    y, task_type, classes = evaluation.labels, evaluation.task_type, evaluation.classes
    rows: list[dict[str, Any]] = []
    selected: SelectedReplicates = {}
    for outcome in outcomes:
        point = compute_metrics(y, outcome.test_scores, task_type, classes)
        if not outcome.selected and per_class_rows == "selected":
            point = {metric: value for metric, value in point.items() if "[" not in metric}
        replicates = bootstrap_metrics(y, outcome.test_scores, task_type, classes, evaluation.replicates,
                                       metrics=list(point))
        if outcome.selected:
            selected[outcome.key] = (point, replicates)
        for metric, value in point.items():
            rows.append(result_row(evaluation, outcome, metric, summarise(value, replicates[metric]), len(y)))
    return rows, selected


def calibration_rows(outcomes: Sequence[ProbeOutcome], evaluation: EvaluationSet, *,
                     n_bins: int = 10) -> list[dict[str, Any]]:
    """ECE with CI and reliability-bin data (``metric="ece"``) for every selected probe."""
    rows = []
    for outcome in (o for o in outcomes if o.selected):
        summary = calibration_summary(evaluation.labels, outcome.test_scores, evaluation.task_type,
                                      evaluation.classes, evaluation.replicates, n_bins=n_bins)
        row = result_row(evaluation, outcome, "ece", summary, len(evaluation.labels))
        row.update({key: summary[key] for key in ("calibrated", "n_bins", "reliability")})
        rows.append(row)
    return rows


def group_rows(outcomes: Sequence[ProbeOutcome], evaluation: EvaluationSet, groups: Sequence[GroupColumn], *,
               metric: str, n_bootstrap: int, seed: int, bootstrap_unit: BootstrapUnit) -> list[dict[str, Any]]:
    """Task metric per value of each group column (e.g. organ, sex, site), selected probes only,
    resampling patients within each group (:func:`~medprobe.stats.groups.per_group_metrics`)."""
    rows = []
    for column in groups:
        for outcome in (o for o in outcomes if o.selected):
            for row in per_group_metrics(evaluation.labels, outcome.test_scores, column.values, evaluation.task_type,
                                         evaluation.classes, metrics=[metric], n_replicates=n_bootstrap, seed=seed,
                                         patients=evaluation.patients, bootstrap_unit=bootstrap_unit):
                label = f"{column.name}={row['group']}" if column.qualified else row["group"]
                result = result_row(evaluation, outcome, f"{row['metric']}@{label}", row, row["n"])
                result.update(group_column=column.name, group=row["group"], bootstrap_unit=row["bootstrap_unit"],
                              n_units=row["n_units"])
                rows.append(result)
    return rows


def unconverged_warnings(outcomes: Sequence[ProbeOutcome]) -> list[str]:
    """One warning per selected probe whose solver stopped at max_iter (shown and kept in run.json)."""
    return [f"selected probe did not converge: {o.backbone} layer {o.layer} (train fraction {o.train_fraction}, "
            f"seed {o.seed}, C={o.C:g})" + (f", heads {o.unconverged}" if o.unconverged else "")
            + "; raise probe.max_iter or check feature scaling"
            for o in outcomes if o.selected and not o.converged]


def statistics_summary(resampling: dict[str, Any], settings: "StatsConfig", warnings: Sequence[str]) -> dict[str, Any]:
    """run.json ``statistics``: how the uncertainty was computed, and warnings to show."""
    return {**resampling, "n_bootstrap": settings.n_bootstrap, "bootstrap_unit_requested": settings.bootstrap_unit,
            "ci": "percentile, 95 %", "multiplicity": "Holm and Benjamini-Hochberg across classes",
            "paired_t_test_warning": REPLICATE_T_TEST_WARNING if settings.paired_t_test else None,
            "warnings": list(warnings)}


__all__ = ["EvaluationSet", "GroupColumn", "SelectedReplicates", "calibration_rows", "group_rows", "metric_rows",
           "result_row", "statistics_summary", "study_fields", "unconverged_warnings"]
