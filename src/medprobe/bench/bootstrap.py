"""Benchmark: per-class bootstrap AUCs, medprobe.stats vs two baselines, side by side.

Baselines: (1) the obvious loop over ``sklearn.metrics.roc_auc_score`` (one call per replicate and
class), and (2) the strongest plain implementation a skilled user would write: each class sorted once, the
replicates as draw counts, every replicate's Mann-Whitney AUC from cumulative sums in one NumPy
matrix operation (:func:`numpy_per_class_auc`).

Full size mirrors the study's largest multiclass test set (NCT-CRC-HE-100K's CRC-VAL-HE-7K: 7,180
tiles, 9 tissue classes) with 1,000 replicates, i.e. 9,000 ``roc_auc_score`` calls for the naive
way. Scores are random but realistic: softmax of noisy logits in which the true class is favoured,
rounded to float32 like a model's output (so some scores tie), with unequal class sizes.

    python benchmarks/bench_bootstrap.py            # full size (or: python -m medprobe.bench.bootstrap)
    python benchmarks/bench_bootstrap.py --quick    # small, for CI

``run(quick)`` returns the numbers as a dict so ``medprobe bench`` can call it.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from medprobe.stats import bootstrap_indices, bootstrap_metrics

FULL = {"n_samples": 7180, "n_classes": 9, "n_replicates": 1000}
QUICK = {"n_samples": 1500, "n_classes": 9, "n_replicates": 60}


def make_scores(n_samples: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with unequal class sizes and float32-rounded softmax scores favouring the true class."""
    rng = np.random.default_rng(seed)
    prevalence = rng.dirichlet(np.full(n_classes, 5.0))
    y = rng.choice(n_classes, size=n_samples, p=prevalence)
    logits = rng.normal(0.0, 1.0, size=(n_samples, n_classes))
    logits[np.arange(n_samples), y] += rng.normal(2.0, 1.5, size=n_samples)
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return y, probabilities.astype(np.float32).astype(np.float64)


def naive_per_class_auc(y: np.ndarray, scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(R, K) AUCs the obvious way: one ``roc_auc_score`` call per replicate and class."""
    out = np.empty((indices.shape[0], scores.shape[1]))
    for r, rows in enumerate(indices):
        y_r, s_r = y[rows], scores[rows]
        for k in range(scores.shape[1]):
            out[r, k] = roc_auc_score(y_r == k, s_r[:, k])
    return out


def numpy_per_class_auc(y: np.ndarray, scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(R, K) AUCs as a skilled NumPy user would write them: sort each class's scores once, turn
    the replicates into per-sample draw counts (one ``bincount``), sum the counts per tied-score
    group, and get every replicate's Mann-Whitney AUC from cumulative sums of the negatives' counts
    (a tie counts one half), all replicates in one matrix operation."""
    n_replicates, n = indices.shape
    flat = (indices + n * np.arange(n_replicates)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_replicates * n).reshape(n_replicates, n).astype(np.float64)
    out = np.empty((n_replicates, scores.shape[1]))
    for k in range(scores.shape[1]):
        order = np.argsort(scores[:, k], kind="stable")
        sorted_scores = scores[order, k]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        positive = (y[order] == k).astype(np.float64)
        drawn = counts[:, order]
        pos = np.add.reduceat(drawn * positive, starts, axis=1)        # (R, tie groups)
        neg = np.add.reduceat(drawn * (1.0 - positive), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg                             # negatives strictly lower
        wins = (pos * (below + 0.5 * neg)).sum(axis=1)
        out[:, k] = wins / (pos.sum(axis=1) * neg.sum(axis=1))
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Time every way on the same replicates; returns name, sizes, naive_s (sklearn loop), numpy_s
    (vectorised NumPy), ours_s, their ratios and max_abs_diff (over both baselines)."""
    size = QUICK if quick else FULL
    y, scores = make_scores(size["n_samples"], size["n_classes"])
    classes = [f"class{k}" for k in range(size["n_classes"])]
    indices = bootstrap_indices(size["n_samples"], size["n_replicates"], seed=0)
    wanted = [f"auc[{c}]" for c in classes]

    # The fast path is timed 3 times and the median kept, so one hiccup of a shared machine does
    # not decide the ratio; the naive loop is long enough to average such noise out by itself.
    ours_times = []
    for _ in range(3):
        started = time.perf_counter()
        ours = bootstrap_metrics(y, scores, "multiclass", classes, indices, metrics=wanted)
        ours_times.append(time.perf_counter() - started)
    ours_s = float(np.median(ours_times))
    numpy_times = []
    for _ in range(3):
        started = time.perf_counter()
        vectorised = numpy_per_class_auc(y, scores, indices)
        numpy_times.append(time.perf_counter() - started)
    numpy_s = float(np.median(numpy_times))
    started = time.perf_counter()
    naive = naive_per_class_auc(y, scores, indices)
    naive_s = time.perf_counter() - started

    ours_matrix = np.stack([ours[name] for name in wanted], axis=1)
    return {"name": "bootstrap_per_class_auc", **size, "quick": quick,
            "naive_s": round(naive_s, 4), "numpy_s": round(numpy_s, 4), "ours_s": round(ours_s, 4),
            "ratio": round(naive_s / ours_s, 1), "ratio_vs_numpy": round(numpy_s / ours_s, 2),
            "max_abs_diff": float(max(np.max(np.abs(ours_matrix - naive)), np.max(np.abs(ours_matrix - vectorised))))}


def main(argv: list[str] | None = None) -> int:
    """Command line of the bootstrap benchmark; exits 1 when the vectorised AUCs disagree with scikit-learn's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds instead of a minute)")
    result = run(quick=parser.parse_args(argv).quick)
    print(f"{result['n_replicates']} replicates x {result['n_classes']} classes x {result['n_samples']} samples")
    print(f"baseline 1, loop over sklearn roc_auc_score:  {result['naive_s']:.3f} s")
    print(f"baseline 2, vectorised NumPy (sort once, counts): {result['numpy_s']:.3f} s (median of 3)")
    print(f"medprobe.stats.bootstrap_metrics:             {result['ours_s']:.3f} s (median of 3)")
    print(f"speed-up vs the sklearn loop:   {result['ratio']:.1f}x")
    print(f"speed-up vs vectorised NumPy:   {result['ratio_vs_numpy']:.2f}x")
    print(f"max |difference|:     {result['max_abs_diff']:.3g}")
    if result["max_abs_diff"] > 1e-12:
        print("FAIL: vectorised AUCs differ from scikit-learn", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
