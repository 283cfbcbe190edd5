"""The study protocol beside medprobe's: how much higher its numbers come out, and why.

With ``probe.protocols: [medprobe, study]`` every backbone is probed twice on the same cached
features: medprobe's protocol (L2 logistic regression, C and layer chosen on validation) and the
study's as it ran (its recipe trained on every non-test image, the layer picked on *test*). For
each selected pair (backbone row, train fraction, seed) :func:`protocol_comparison` reports

* the headline metric under each protocol,
* their difference (study - medprobe) with a paired CI,
* the part of it due to picking the layer on test: the study probe of the best-on-test layer
  minus the study probe of the layer medprobe picked on validation (same recipe, same training
  images, only the layer choice differs), with its CI,
* the rest, due to the recipe and to training on the validation images too: the study probe at
  medprobe's layer minus medprobe's probe.

The two parts add up to the difference exactly, replicate by replicate; ``selection_share`` is
the first part's share of a positive difference (None when the study protocol is not higher). Every CI is the
percentile interval of replicate differences on the run's shared bootstrap replicates
(:class:`~medprobe.stats.rows.EvaluationSet`), so the pairing is the same as in every other
comparison of the run.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medprobe.probes.study_recipes import SELECTED_ON_TEST
from medprobe.stats.bootstrap import bootstrap_metrics, summarise
from medprobe.stats.metrics import compute_metrics
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.rows import EvaluationSet, SelectedReplicates


def _summary(point: float, replicates: np.ndarray) -> dict[str, float]:
    summary = summarise(point, replicates)
    return {key: summary[key] for key in ("value", "ci_low", "ci_high")}


def _point_and_replicates(outcome: ProbeOutcome, evaluation: EvaluationSet, metric: str,
                          replicates: SelectedReplicates) -> tuple[float, np.ndarray]:
    """A probe's metric and its values on the run's replicates (reused when already computed)."""
    if outcome.selected and outcome.key in replicates:
        point, values = replicates[outcome.key]
        return float(point[metric]), np.asarray(values[metric], dtype=float)
    scores = np.asarray(outcome.test_scores)
    point = compute_metrics(evaluation.labels, scores, evaluation.task_type, evaluation.classes, metrics=[metric])
    values = bootstrap_metrics(evaluation.labels, scores, evaluation.task_type, evaluation.classes,
                               evaluation.replicates, metrics=[metric])
    return float(point[metric]), np.asarray(values[metric], dtype=float)


def protocol_comparison(outcomes: Sequence[ProbeOutcome], replicates: SelectedReplicates,
                        evaluation: EvaluationSet, *, metric: str) -> list[dict[str, Any]]:
    """One row per study-protocol selection that has a medprobe selection to pair with (empty
    without ``probe.protocols``); see the module docstring for what each number is."""
    medprobe = {o.key: o for o in outcomes if o.selected and o.protocol_of is None and o.recipe == "medprobe"}
    by_layer = {(o.backbone, o.layer, o.train_fraction, o.seed): o for o in outcomes}
    rows = []
    for study in (o for o in outcomes if o.selected and o.protocol_of is not None):
        base = medprobe.get((study.protocol_of, study.train_fraction, study.seed))
        at_base_layer = base and by_layer.get((study.backbone, base.layer, study.train_fraction, study.seed))
        if base is None or at_base_layer is None:
            continue
        ours, ours_r = _point_and_replicates(base, evaluation, metric, replicates)
        theirs, theirs_r = _point_and_replicates(study, evaluation, metric, replicates)
        same_layer, same_layer_r = _point_and_replicates(at_base_layer, evaluation, metric, replicates)
        difference = theirs - ours
        selection = theirs - same_layer
        rows.append({
            "task": evaluation.task, "backbone": base.backbone, "study_backbone": study.backbone,
            "train_fraction": study.train_fraction, "seed": study.seed, "metric": metric,
            "medprobe_layer": base.layer, "study_layer": study.layer, "study_recipe": study.recipe,
            "study_selection": SELECTED_ON_TEST if study.selected_on == "test" else "validation",
            "medprobe": _summary(ours, ours_r), "study": _summary(theirs, theirs_r),
            "study_at_medprobe_layer": _summary(same_layer, same_layer_r),
            "difference": _summary(difference, theirs_r - ours_r),
            "layer_selection_on_test": _summary(selection, theirs_r - same_layer_r),
            "recipe_and_training_images": _summary(same_layer - ours, same_layer_r - ours_r),
            # a share of the study's advantage; none when the study protocol comes out no higher
            "selection_share": selection / difference + 0.0 if difference > 0 else None,
            **evaluation.resampling,
        })
    return rows


__all__ = ["protocol_comparison"]
