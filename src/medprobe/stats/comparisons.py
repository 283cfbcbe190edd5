"""comparisons.json rows: each backbone's selected probe against the reference backbone's.

Pure functions of the outcomes, the selected probes' replicates (:func:`medprobe.stats.rows.metric_rows`)
and the test labels: the paired bootstrap reuses the replicates the results rows were summarised
from, so a comparison and its two CIs are drawn from the same resamples.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medprobe.errors import DataError
from medprobe.stats.multiplicity import add_adjusted_p_values
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.paired import delong_test, paired_difference, t_test_on_replicates
from medprobe.stats.rows import EvaluationSet, SelectedReplicates


def paired_bootstrap_row(pair: tuple[tuple[dict, dict], tuple[dict, dict]], metric: str) -> dict[str, Any]:
    """One paired-bootstrap comparison from both probes' ``(point, replicates)`` on the shared
    replicates; an undefined metric is a row with a note, not an error."""
    (point_a, replicates_a), (point_b, replicates_b) = pair
    try:
        test = paired_difference(point_a[metric], point_b[metric], replicates_a[metric], replicates_b[metric], metric)
    except DataError as error:
        return {"metric": metric, "test": "paired_bootstrap", "diff": None, "ci_low": None, "ci_high": None,
                "p_value": None, "note": str(error)}
    return {"metric": metric, "test": "paired_bootstrap",
            **{k: float(test[k]) for k in ("diff", "ci_low", "ci_high", "p_value")},
            "n_bootstrap_dropped": int(test["n_dropped"])}


def delong_class_rows(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, task_type: str,
                      classes: Sequence[str], patients: np.ndarray | None) -> list[dict[str, Any]]:
    """DeLong rows of two probes' test scores: the positive class of a binary task, every class
    (one-vs-rest) otherwise; clustered (Obuchowski) when ``patients`` is given. A class DeLong
    cannot serve (too few positives or negatives) is a row with a note. Shared by a run's
    comparisons and by ``medprobe compare``, so both write the same rows."""
    if task_type == "binary":
        targets = [("auc", labels, 1)]
    else:
        truth = labels if task_type == "multilabel" else labels[:, None] == np.arange(len(classes))
        targets = [(f"auc[{c}]", truth[:, k].astype(int), k) for k, c in enumerate(classes)]
    rows = []
    for metric, target, column in targets:
        try:
            result = delong_test(target, scores_a[:, column], scores_b[:, column], patients=patients)
        except DataError as error:
            rows.append({"metric": metric, "test": "delong", "diff": None, "ci_low": None, "ci_high": None,
                         "p_value": None, "note": f"DeLong not applicable: {error}"})
            continue
        rows.append({"metric": metric, "test": "delong", "method": result["method"],
                     **{k: float(result[k]) for k in ("diff", "ci_low", "ci_high", "p_value", "z")},
                     "bootstrap_unit": "patient" if result["method"] == "obuchowski" else "image"})
    return rows


def delong_rows(evaluation: EvaluationSet, a: ProbeOutcome, b: ProbeOutcome, *,
                task_metric: str) -> list[dict[str, Any]]:
    """DeLong rows of a run (:func:`delong_class_rows`); the macro AUC of a multi-class task is not
    a single AUC, which a row says as well. Clustered when the replicates resample patients."""
    task_type = evaluation.task_type
    clustered = evaluation.patients if evaluation.resampling["bootstrap_unit"] == "patient" else None
    rows = delong_class_rows(evaluation.labels, a.test_scores, b.test_scores, task_type, evaluation.classes,
                             clustered)
    if task_type != "binary" and task_metric == "auc":
        rows.append({"metric": "auc", "test": "delong", "diff": None, "ci_low": None, "ci_high": None,
                     "p_value": None, "note": "DeLong compares one AUC; the macro AUC is compared by the "
                                              "paired bootstrap, the classes by the per-class DeLong rows"})
    return rows


def compare(outcomes: Sequence[ProbeOutcome], replicates: SelectedReplicates, evaluation: EvaluationSet, *,
            task_metric: str, reference: str | None, paired_t_test: bool = False,
            delong: bool = True) -> list[dict[str, Any]]:
    """Paired tests of each backbone's selected layer against the ``reference`` backbone's.

    Per pair: the paired bootstrap on the task metric and, for multi-class / multi-label
    tasks, on each class's AUC (or F1); DeLong (clustered when patients have several images)
    on the AUC, per class where there are several; optionally the study's replicate t-test.
    ``p_holm`` / ``p_bh`` adjust each family of per-class rows (same pair, fraction, seed,
    test and metric kind) for multiplicity; a headline row is a family of one."""
    if reference is None:
        return []
    unit = {"bootstrap_unit": evaluation.resampling["bootstrap_unit"], "n_units": evaluation.resampling["n_units"]}
    per_class = {"auc": "auc", "f1_macro": "f1"}.get(task_metric) if evaluation.task_type != "binary" else None
    selected = {o.key: o for o in outcomes if o.selected}
    comparisons = []
    for (backbone, fraction, seed), outcome in sorted(selected.items()):
        other = selected.get((reference, fraction, seed))
        if backbone == reference or other is None:
            continue
        base = {"task": evaluation.task, "train_fraction": fraction, "seed": seed,
                "backbone_a": backbone, "layer_a": outcome.layer, "backbone_b": reference, "layer_b": other.layer}
        pair = (replicates[(backbone, fraction, seed)], replicates[(reference, fraction, seed)])
        headline = {**base, **paired_bootstrap_row(pair, task_metric), **unit}
        comparisons.append(headline)
        for name in [f"{per_class}[{c}]" for c in evaluation.classes] if per_class else []:
            comparisons.append({**base, **paired_bootstrap_row(pair, name), **unit})
        if paired_t_test:
            test = t_test_on_replicates(pair[0][1][task_metric], pair[1][1][task_metric], task_metric)
            comparisons.append({**base, "metric": task_metric, "test": "replicate_t_test", "diff": headline["diff"],
                                "ci_low": None, "ci_high": None, **test, **unit})
        if delong:
            comparisons.extend({**base, **row} for row in delong_rows(evaluation, outcome, other,
                                                                        task_metric=task_metric))
    return add_adjusted_p_values(comparisons)


__all__ = ["compare", "delong_class_rows", "delong_rows", "paired_bootstrap_row"]
