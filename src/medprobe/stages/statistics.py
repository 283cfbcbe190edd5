"""Statistics stage: gather the test labels, patients and group columns of a run, and hand them
with the probe outcomes to the pure row builders of :mod:`medprobe.stats`.

All backbones are scored on the *same* bootstrap replicates of the same test samples, which is
what makes the paired comparisons valid; the replicates resample test patients (all their images
together) whenever a patient has several images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medprobe.config import RunConfig
from medprobe.data.dataset import Dataset
from medprobe.errors import ConfigError
from medprobe.progress import console
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.probe_statistics import ProbeStatistics, probe_statistics
from medprobe.stats.rows import EvaluationSet, GroupColumn


@dataclass(frozen=True)
class ScoredRun:
    """The statistics of a run and how long they took."""

    statistics: ProbeStatistics
    seconds: float


def sample_column(dataset: Dataset, test_ids: list[str], column: str) -> np.ndarray:
    """``column`` of the sample table for the test samples, in ``test_ids`` order."""
    if column not in dataset.samples.columns:
        raise ConfigError(f"stats: {column!r} is not a column of the sample table "
                          f"(columns: {list(dataset.samples.columns)})")
    by_id = dataset.samples.set_index(dataset.samples["sample_id"].astype(str))[column]
    return by_id.loc[test_ids].to_numpy(dtype=object)




def group_columns(config: RunConfig, dataset: Dataset, test_ids: list[str]) -> list[GroupColumn]:
    """``stats.group_column`` (rows ``<metric>@<value>``) and each of ``stats.group_columns``
    (rows ``<metric>@<column>=<value>``) with their test values."""
    stats = config.stats
    named = ([(stats.group_column, False)] if stats.group_column else []) + \
        [(column, True) for column in stats.group_columns]
    return [GroupColumn(name, sample_column(dataset, test_ids, name), qualified) for name, qualified in named]


def reference_backbone(config: RunConfig) -> str | None:
    """The backbone every other is compared with: ``stats.reference``, else the first of several."""
    names = [backbone.display_name for backbone in config.backbones]
    return config.stats.reference or (names[0] if len(names) > 1 else None)


def score_run(config: RunConfig, dataset: Dataset, test_ids: list[str], y_test: np.ndarray,
              outcomes: Sequence[ProbeOutcome]) -> ScoredRun:
    """results.json / comparisons.json rows, label efficiency and run.json ``statistics``; warnings
    (a selected probe that did not converge) are also said on the console."""
    started = time.perf_counter()
    evaluation = EvaluationSet.draw(config.name, dataset.task_type, dataset.classes, y_test,
                                    sample_column(dataset, test_ids, "group"), n_bootstrap=config.stats.n_bootstrap,
                                    seed=config.seed, bootstrap_unit=config.stats.bootstrap_unit)
    statistics = probe_statistics(outcomes, evaluation, config.stats, task_metric=config.task_metric,
                                  seed=config.seed, reference=reference_backbone(config),
                                  groups=group_columns(config, dataset, test_ids))
    print_warnings(statistics.warnings)
    return ScoredRun(statistics, round(time.perf_counter() - started, 3))


def print_warnings(warnings: Sequence[str]) -> None:
    """Statistics warnings the user must see, also with --quiet (they are in run.json too)."""
    for message in warnings:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)


__all__ = ["ScoredRun", "group_columns", "print_warnings", "reference_backbone", "score_run", "sample_column"]
