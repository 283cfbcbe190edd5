"""Clinical operating points: thresholds chosen on the validation split, reported on the test split.

Why: an AUC says how well a probe ranks images; a clinic needs a decision. A threshold is chosen
on the *validation* probabilities only -- at Youden's optimum (max sensitivity + specificity - 1)
and at fixed sensitivity or specificity levels -- and then applied unchanged to the test split,
whose sensitivity, specificity, PPV and NPV are reported with percentile CIs from the run's own
bootstrap replicates (patient-level when patients have several images), so the numbers say how
the rule would do on new patients, not how well it was tuned.

Rules (an image is called positive when its probability is ``>= threshold``; candidate thresholds
are the distinct validation probabilities of the finding):

* ``youden``: the candidate with the largest sensitivity + specificity - 1 (the highest of equal ones);
* ``sens<L>``: the highest candidate whose validation sensitivity is at least ``L`` (the most
  specific rule that reaches it);
* ``spec<L>``: the lowest candidate whose validation specificity is at least ``L`` (the most
  sensitive rule that reaches it); above every validation probability when only that reaches it.

Binary tasks have one finding (the positive class, column 1); multi-label tasks one per finding.
Multi-class tasks have no operating points (the decision is the most probable class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from medprobe.stats.bootstrap import BLOCK_ELEMENTS, summarise
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.resampling import ClusteredIndices, resample_counts
from medprobe.stats.rows import EvaluationSet

#: the test measures of an operating point, each the ratio of two confusion-matrix cells' sums
MEASURES = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"), "ppv": ("tp", "fp"), "npv": ("tn", "fn")}


@dataclass(frozen=True)
class OperatingPointRule:
    """One rule: ``kind`` ``"youden"``, ``"sensitivity"`` or ``"specificity"``, and its level."""

    kind: str
    level: float | None = None

    @property
    def name(self) -> str:
        """``youden``, ``sens90``, ``spec97.5``: what ``medprobe predict --threshold`` accepts."""
        return "youden" if self.kind == "youden" else f"{self.kind[:4]}{100 * self.level:g}"


def rules_for(sensitivity: Sequence[float] = (0.9, 0.95),
              specificity: Sequence[float] = ()) -> list[OperatingPointRule]:
    """Youden's rule first, then the sensitivity and specificity levels (duplicates once)."""
    rules = [OperatingPointRule("youden")]
    rules += [OperatingPointRule("sensitivity", float(level)) for level in dict.fromkeys(sensitivity)]
    rules += [OperatingPointRule("specificity", float(level)) for level in dict.fromkeys(specificity)]
    return rules


def findings(task_type: str, classes: Sequence[str]) -> list[tuple[int, str]]:
    """``(column, name)`` of each finding that gets operating points (none for multi-class tasks)."""
    if task_type == "binary":
        return [(1, str(classes[1]))]
    if task_type == "multilabel":
        return [(k, str(name)) for k, name in enumerate(classes)]
    return []


def _positive(labels: np.ndarray, task_type: str, column: int) -> np.ndarray:
    return (labels[:, column] if task_type == "multilabel" else labels == column).astype(bool)


def validation_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, sensitivity, specificity)`` at every distinct validation score, highest first."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]  # last index of each distinct score
    tp = np.cumsum(hits)[last]
    fp = np.cumsum(~hits)[last]
    n_pos, n_neg = int(hits.sum()), int((~hits).sum())
    return ranked[last], tp / n_pos, 1.0 - fp / n_neg


def choose_threshold(rule: OperatingPointRule, positive: np.ndarray, scores: np.ndarray) -> float:
    """The threshold ``rule`` picks on validation labels ``positive`` and probabilities ``scores``
    (both classes must occur; see the module docstring for the rules)."""
    thresholds, sensitivity, specificity = validation_curve(positive, np.asarray(scores, dtype=np.float64))
    if rule.kind == "youden":
        return float(thresholds[int(np.argmax(sensitivity + specificity - 1.0))])
    if rule.kind == "sensitivity":
        return float(thresholds[int(np.flatnonzero(sensitivity >= rule.level)[0])])
    reaching = np.flatnonzero(specificity >= rule.level)
    if reaching.size:
        return float(thresholds[int(reaching[-1])])
    return float(np.nextafter(thresholds[0], np.inf))  # only "nothing positive" reaches it


def probe_thresholds(outcome: ProbeOutcome, task_type: str, classes: Sequence[str],
                     rules: Sequence[OperatingPointRule]) -> dict[str, dict[str, float]]:
    """``{finding: {rule name: threshold}}`` of one probe from its validation scores; a finding
    whose validation rows lack positives or negatives has none."""
    if outcome.val_scores is None or outcome.val_labels is None:
        return {}
    scores, labels = np.asarray(outcome.val_scores, dtype=np.float64), np.asarray(outcome.val_labels)
    chosen = {}
    for column, name in findings(task_type, classes):
        positive = _positive(labels, task_type, column)
        if 0 < positive.sum() < len(positive):
            chosen[name] = {rule.name: choose_threshold(rule, positive, scores[:, column]) for rule in rules}
    return chosen


def _cells(positive: np.ndarray, called: np.ndarray) -> dict[str, np.ndarray]:
    return {"tp": positive & called, "fn": positive & ~called, "fp": ~positive & called, "tn": ~positive & ~called}


def measures_at(positive: np.ndarray, scores: np.ndarray, threshold: float,
                  replicates: np.ndarray | ClusteredIndices) -> dict[str, dict[str, float | int]]:
    """Test sensitivity, specificity, PPV and NPV of ``scores >= threshold`` with bootstrap summaries
    (:func:`~medprobe.stats.bootstrap.summarise`) on the run's ``replicates``."""
    cells = _cells(positive, scores >= threshold)
    matrix = np.column_stack([cells[name] for name in ("tp", "fn", "fp", "tn")]).astype(np.float64)
    n = len(positive)
    if isinstance(replicates, ClusteredIndices):
        n_replicates, counts = replicates.n_replicates, replicates.counts
    else:
        n_replicates = replicates.shape[0]

        def counts(start: int, stop: int) -> np.ndarray:
            return resample_counts(replicates[start:stop], n)
    sums = np.empty((n_replicates, 4))
    block = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, n_replicates, block):
        stop = min(start + block, n_replicates)
        sums[start:stop] = counts(start, stop) @ matrix
    replicate_cells = dict(zip(("tp", "fn", "fp", "tn"), sums.T))
    point_cells = dict(zip(("tp", "fn", "fp", "tn"), matrix.sum(axis=0)))
    out: dict[str, dict[str, float | int]] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for measure, (hit, miss) in MEASURES.items():
            total = point_cells[hit] + point_cells[miss]
            point = point_cells[hit] / total if total else float("nan")
            values = replicate_cells[hit] / (replicate_cells[hit] + replicate_cells[miss])
            out[measure] = summarise(point, values)
    out["counts"] = {name: int(value) for name, value in point_cells.items()}
    return out


def operating_point_rows(outcomes: Sequence[ProbeOutcome], evaluation: EvaluationSet,
                         rules: Sequence[OperatingPointRule]) -> list[dict[str, Any]]:
    """One row per selected probe x finding x rule: the threshold chosen on validation, its
    validation sensitivity / specificity, and its test measures with CIs."""
    rows = []
    for outcome in (o for o in outcomes if o.selected):
        thresholds = probe_thresholds(outcome, evaluation.task_type, evaluation.classes, rules)
        test_scores = np.asarray(outcome.test_scores, dtype=np.float64)
        val_scores, val_labels = np.asarray(outcome.val_scores), np.asarray(outcome.val_labels)
        for column, name in findings(evaluation.task_type, evaluation.classes):
            if name not in thresholds:
                continue
            positive = _positive(evaluation.labels, evaluation.task_type, column)
            val_positive = _positive(val_labels, evaluation.task_type, column)
            for rule in rules:
                threshold = thresholds[name][rule.name]
                val_called = val_scores[:, column] >= threshold
                rows.append({
                    "task": evaluation.task, "backbone": outcome.backbone, "layer": outcome.layer,
                    "train_fraction": outcome.train_fraction, "seed": outcome.seed, "stack": outcome.stack,
                    "finding": name, "operating_point": rule.name, "rule": rule.kind, "level": rule.level,
                    "threshold": threshold,
                    "val_sensitivity": float(val_called[val_positive].mean()),
                    "val_specificity": float((~val_called[~val_positive]).mean()),
                    "n_val": int(len(val_positive)), "n_test": int(len(positive)),
                    "test": measures_at(positive, test_scores[:, column], threshold, evaluation.replicates),
                    **evaluation.resampling,
                })
    return rows


__all__ = ["MEASURES", "OperatingPointRule", "choose_threshold", "findings", "operating_point_rows",
           "probe_thresholds", "rules_for", "measures_at", "validation_curve"]
