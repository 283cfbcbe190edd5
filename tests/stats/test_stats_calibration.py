"""Expected calibration error and reliability bins against a reference written from the formula
ECE = sum_b (n_b / n) |freq_b - conf_b| (equal-width bins, p = 1 in the last bin)."""

from __future__ import annotations

import numpy as np
import pytest

from medprobe.errors import ConfigError
from medprobe.stats import bootstrap_indices, calibration_summary, cluster_bootstrap_indices, cluster_codes

TOL = 1e-12


def ece_reference(probability: np.ndarray, outcome: np.ndarray, n_bins: int) -> float:
    """Loop over bins of flat arrays of probabilities and 0/1 outcomes."""
    total, n = 0.0, probability.size
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        inside = (probability >= low) & ((probability < high) if b < n_bins - 1 else (probability <= high))
        if inside.any():
            total += inside.sum() / n * abs(outcome[inside].mean() - probability[inside].mean())
    return total


def flatten(y: np.ndarray, scores: np.ndarray, task_type: str) -> tuple[np.ndarray, np.ndarray]:
    if task_type == "binary":
        return scores[:, 1], y.astype(float)
    if task_type == "multiclass":
        return scores.max(axis=1), (scores.argmax(axis=1) == y).astype(float)
    return scores.ravel(), y.ravel().astype(float)


def make(task_type: str, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    if task_type == "multilabel":
        y = (rng.random((n, 3)) < 0.3).astype(int)
        scores = np.clip(0.6 * y + rng.random((n, 3)) * 0.5, 0, 1)
        scores[0, 0] = 1.0  # exactly 1 goes to the last bin
        return y, np.round(scores, 2), ["a", "b", "c"]
    k = 2 if task_type == "binary" else 4
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.0
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, scores, [f"c{i}" for i in range(k)]


@pytest.mark.parametrize("task_type", ["binary", "multiclass", "multilabel"])
def test_ece_point_ci_and_bins_match_reference(task_type: str) -> None:
    y, scores, classes = make(task_type)
    indices = bootstrap_indices(len(y), 50, seed=1)
    summary = calibration_summary(y, scores, task_type, classes, indices, n_bins=10)
    probability, outcome = flatten(y, scores, task_type)
    assert summary["value"] == pytest.approx(ece_reference(probability, outcome, 10), abs=TOL)
    replicates = []
    for rows in indices:
        p, o = flatten(y[rows], scores[rows], task_type)
        replicates.append(ece_reference(p, o, 10))
    assert summary["ci_low"] == pytest.approx(np.percentile(replicates, 2.5), abs=TOL)
    assert summary["ci_high"] == pytest.approx(np.percentile(replicates, 97.5), abs=TOL)
    assert summary["sd"] == pytest.approx(np.std(replicates, ddof=1), abs=TOL)
    bins = summary["reliability"]
    assert len(bins) == 10 and sum(b["n"] for b in bins) == probability.size
    for b in bins:
        inside = (probability >= b["bin_low"]) & ((probability < b["bin_high"]) if b["bin_high"] < 1
                                                  else (probability <= 1))
        assert b["n"] == inside.sum()
        if b["n"]:
            assert b["mean_probability"] == pytest.approx(probability[inside].mean(), abs=TOL)
            assert b["observed_frequency"] == pytest.approx(outcome[inside].mean(), abs=TOL)
        else:
            assert b["mean_probability"] is None and b["observed_frequency"] is None


def test_ece_with_patient_replicates_and_perfect_calibration() -> None:
    y, scores, classes = make("binary", n=120, seed=3)
    patients = np.repeat(np.arange(40), 3)
    plan = cluster_bootstrap_indices(patients, 40, seed=2)
    summary = calibration_summary(y, scores, "binary", classes, plan, n_bins=5)
    codes = cluster_codes(patients)
    replicates = []
    for draws in plan.draws:
        rows = np.concatenate([np.flatnonzero(codes == d) for d in draws])
        replicates.append(ece_reference(scores[rows, 1], y[rows].astype(float), 5))
    assert summary["sd"] == pytest.approx(np.std(replicates, ddof=1), abs=TOL)
    # outcomes equal to the mean probability in every bin: ECE 0
    calibrated = np.array([0, 1] * 10)
    flat = np.full((20, 2), 0.5)
    assert calibration_summary(calibrated, flat, "binary", ["a", "b"], bootstrap_indices(20, 10))["value"] == 0
    with pytest.raises(ConfigError, match="2 bins"):
        calibration_summary(calibrated, flat, "binary", ["a", "b"], bootstrap_indices(20, 10), n_bins=1)
