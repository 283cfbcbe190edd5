"""Calibration of a probe's probabilities: expected calibration error (ECE) and reliability bins.

What is calibrated depends on the task:

* binary: the positive-class probability against the label;
* multiclass: the top-label confidence (max probability) against "the argmax is correct"
  (Guo et al. 2017);
* multilabel: every (image, finding) probability against that finding's label, pooled.

Probabilities go into ``n_bins`` equal-width bins on [0, 1] (bin ``b`` holds
``b/B <= p < (b+1)/B``; p = 1 goes to the last bin). With ``n_b`` predictions in bin ``b``, mean
probability ``conf_b`` and observed frequency ``freq_b``,

    ECE = sum_b (n_b / n) |freq_b - conf_b|

As for the other metrics, everything is a count-weighted sum over images, so a bootstrap
replicate (image- or patient-level) is scored with three matrix products and the CI comes from
the same replicates as the AUC's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medprobe.errors import ConfigError
from medprobe.stats.bootstrap import BLOCK_ELEMENTS, summarise
from medprobe.stats.resampling import ClusteredIndices, resample_counts
from medprobe.stats.metrics import TaskType, check_inputs


def _predictions(y: np.ndarray, s: np.ndarray, task_type: TaskType) -> tuple[np.ndarray, np.ndarray]:
    """``(n, k)`` probabilities and ``(n, k)`` 0/1 outcomes they predict (k = 1 unless multilabel)."""
    if task_type == "binary":
        return s[:, 1:2], y[:, None].astype(np.float64)
    if task_type == "multiclass":
        return s.max(axis=1, keepdims=True), (s.argmax(axis=1) == y)[:, None].astype(np.float64)
    return s, y.astype(np.float64)


class CalibrationEvaluator:
    """ECE of one model's test-set probabilities for many count vectors at once."""

    def __init__(self, y_true: np.ndarray, scores: np.ndarray, task_type: TaskType, classes: list[str],
                 n_bins: int = 10) -> None:
        if n_bins < 2:
            raise ConfigError(f"calibration needs at least 2 bins, got {n_bins}")
        y, s = check_inputs(y_true, scores, task_type, classes)
        probability, outcome = _predictions(y, s, task_type)
        bins = np.minimum((probability * n_bins).astype(np.int64), n_bins - 1)
        one_hot = bins[:, :, None] == np.arange(n_bins)  # (n, k, B)
        self.n_bins = n_bins
        self.n_samples = s.shape[0]
        # per image and bin: number of predictions, sum of probabilities, sum of outcomes
        self._count = one_hot.sum(axis=1).astype(np.float64)
        self._probability = (one_hot * probability[:, :, None]).sum(axis=1)
        self._outcome = (one_hot * outcome[:, :, None]).sum(axis=1)

    def _binned(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        weights = counts.astype(np.float64)
        return weights @ self._count, weights @ self._probability, weights @ self._outcome

    def evaluate(self, counts: np.ndarray) -> np.ndarray:
        """``(R,)`` ECE per row of an ``(R, n)`` count matrix."""
        n, probability, outcome = self._binned(counts)
        return np.abs(outcome - probability).sum(axis=1) / n.sum(axis=1)

    def reliability(self) -> list[dict[str, Any]]:
        """Reliability-diagram data on the test set as given: one entry per bin (empty bins too)."""
        n, probability, outcome = (v[0] for v in self._binned(np.ones((1, self.n_samples), dtype=np.int64)))
        rows = []
        for b in range(self.n_bins):
            filled = n[b] > 0
            rows.append({"bin_low": b / self.n_bins, "bin_high": (b + 1) / self.n_bins, "n": int(n[b]),
                         "mean_probability": float(probability[b] / n[b]) if filled else None,
                         "observed_frequency": float(outcome[b] / n[b]) if filled else None})
        return rows


def calibration_summary(y_true: np.ndarray, scores: np.ndarray, task_type: TaskType, classes: list[str],
                        indices: np.ndarray | ClusteredIndices, *, n_bins: int = 10,
                        level: float = 0.95) -> dict[str, Any]:
    """ECE with bootstrap SD and percentile CI (``value, sd, ci_low, ci_high, n_dropped``), plus
    ``calibrated`` (what was calibrated, see the module docstring), ``n_bins`` and ``reliability``."""
    evaluator = CalibrationEvaluator(y_true, scores, task_type, list(classes), n_bins)
    point = float(evaluator.evaluate(np.ones((1, evaluator.n_samples), dtype=np.int64))[0])
    n_replicates = indices.n_replicates if isinstance(indices, ClusteredIndices) else len(indices)
    replicates = np.empty(n_replicates)
    block = max(1, BLOCK_ELEMENTS // evaluator.n_samples)
    for start in range(0, n_replicates, block):
        stop = min(start + block, n_replicates)
        counts = (indices.counts(start, stop) if isinstance(indices, ClusteredIndices)
                  else resample_counts(np.asarray(indices[start:stop]), evaluator.n_samples))
        replicates[start:stop] = evaluator.evaluate(counts)
    summary = summarise(point, replicates, level=level)
    calibrated = {"binary": "positive-class probability", "multiclass": "top-label confidence",
                  "multilabel": "per-finding probabilities, pooled"}[task_type]
    return {**summary, "calibrated": calibrated, "n_bins": n_bins, "reliability": evaluator.reliability()}


__all__ = ["CalibrationEvaluator", "calibration_summary"]
