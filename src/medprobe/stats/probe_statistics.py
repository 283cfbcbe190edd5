"""All statistics of a run's probes in one pure call: results rows, comparisons, label efficiency.

The statistics stage (:mod:`medprobe.stages.statistics`) only gathers the inputs from the data set
and the run file; everything that turns outcomes into numbers is here, testable from arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from medprobe.stats.comparisons import compare
from medprobe.stats.label_efficiency import label_efficiency
from medprobe.stats.operating_points import operating_point_rows, rules_for
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.protocols import protocol_comparison
from medprobe.stats.rows import (
    EvaluationSet,
    GroupColumn,
    SelectedReplicates,
    calibration_rows,
    group_rows,
    metric_rows,
    statistics_summary,
    unconverged_warnings,
)

if TYPE_CHECKING:
    from medprobe.config import StatsConfig


@dataclass(frozen=True)
class ProbeStatistics:
    """What the statistics of one run produce (results.json, comparisons.json, parts of run.json)."""

    rows: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    label_efficiency: list[dict[str, Any]]
    #: run.json ``statistics``
    summary: dict[str, Any]
    warnings: list[str]
    #: the selected probes' point values and replicates the comparisons were computed from
    replicates: SelectedReplicates
    #: operating_points.json rows: thresholds chosen on validation, test measures with CIs
    #: (:mod:`medprobe.stats.operating_points`); kept out of ``rows`` so results.json is unchanged
    operating_points: list[dict[str, Any]] = field(default_factory=list)
    #: run.json ``protocol_comparison``: the study protocol vs medprobe's per backbone
    #: (:mod:`medprobe.stats.protocols`); empty unless ``probe.protocols`` ran both
    protocols: list[dict[str, Any]] = field(default_factory=list)


def probe_statistics(outcomes: Sequence[ProbeOutcome], evaluation: EvaluationSet, settings: "StatsConfig", *,
                     task_metric: str, seed: int, reference: str | None,
                     groups: Sequence[GroupColumn] = ()) -> ProbeStatistics:
    """Rows for every outcome (metrics, then calibration, then groups), the paired comparisons of
    each backbone with ``reference``, label efficiency and the run.json summary."""
    rows, replicates = metric_rows(outcomes, evaluation, per_class_rows=settings.per_class_rows)
    rows.extend(calibration_rows(outcomes, evaluation, n_bins=settings.calibration_bins))
    rows.extend(group_rows(outcomes, evaluation, groups, metric=task_metric, n_bootstrap=settings.n_bootstrap,
                           seed=seed, bootstrap_unit=settings.bootstrap_unit))
    warnings = unconverged_warnings(outcomes)
    comparisons = compare(outcomes, replicates, evaluation, task_metric=task_metric, reference=reference,
                          paired_t_test=settings.paired_t_test, delong=settings.delong)
    rules = rules_for(settings.operating_points.sensitivity, settings.operating_points.specificity)
    return ProbeStatistics(rows, comparisons, label_efficiency(rows, replicates, metric=task_metric, seed=seed),
                           statistics_summary(evaluation.resampling, settings, warnings), warnings, replicates,
                           operating_point_rows(outcomes, evaluation, rules),
                           protocols=protocol_comparison(outcomes, replicates, evaluation, metric=task_metric))


__all__ = ["ProbeStatistics", "probe_statistics"]
