"""Benchmark: are the bootstrap CIs and paired tests honest when patients have several images?

Simulates test sets under a clustered null and measures, for image-level and patient-level
resampling side by side, how often the 95 % CI of a model's AUC covers the true AUC (target
0.93-0.97) and how often the paired tests reject a true "no difference" at 5 % (target <= 0.06).

One simulated test set: ``n_patients`` patients with ``images_per_patient`` images each. A patient
has a latent disease propensity ``u ~ N(0, 1)``; each image is positive when
``u + N(0, label_noise^2) > 0`` (labels cluster within patients, as both eyes or repeat
radiographs do). Each model's score is its own patient effect plus image noise,
``v ~ N(0, 1)`` + ``N(0, score_noise^2)``, independent of the labels: the true AUC of both models
is exactly 0.5 and their true difference 0, while images of a patient share label and score.

    python benchmarks/bench_coverage.py            # full size (about 75 s on one core)
    python benchmarks/bench_coverage.py --quick    # small, for CI
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from medprobe.stats import (
    bootstrap_indices,
    bootstrap_metrics,
    cluster_bootstrap_indices,
    compute_metrics,
    delong_auc,
    delong_test,
    paired_bootstrap_test,
    replicate_t_test,
    summarise,
)

FULL = {"n_datasets": 2000, "n_patients": 45, "images_per_patient": 6, "n_replicates": 1000}
QUICK = {"n_datasets": 150, "n_patients": 45, "images_per_patient": 6, "n_replicates": 400}
CLASSES = ["negative", "positive"]
TRUE_AUC = 0.5


def simulate(rng: np.random.Generator, n_patients: int, images_per_patient: int, label_noise: float = 0.7,
             score_noise: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(y, scores_a, scores_b, patients)`` of one clustered null test set (see the module docstring).
    Redrawn until both classes occur, since an AUC needs them."""
    patients = np.repeat(np.arange(n_patients), images_per_patient)
    while True:
        propensity = rng.normal(0, 1, n_patients)[patients]
        y = (propensity + rng.normal(0, label_noise, patients.size) > 0).astype(np.int64)
        if 0 < y.sum() < y.size:
            break
    scores = []
    for _ in range(2):
        latent = rng.normal(0, 1, n_patients)[patients] + rng.normal(0, score_noise, patients.size)
        p = 1 / (1 + np.exp(-latent))
        scores.append(np.column_stack([1 - p, p]))
    return y, scores[0], scores[1], patients


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Coverage and type-I error per resampling unit; returns sizes and ``{unit: {...}}`` rates."""
    size = QUICK if quick else FULL
    rng = np.random.default_rng(seed)
    covered = {"image": 0, "patient": 0}
    rejected = {"image": 0, "patient": 0}
    delong_covered = {"delong": 0, "obuchowski": 0}
    delong_rejected = {"delong": 0, "obuchowski": 0}
    started = time.perf_counter()
    for dataset in range(size["n_datasets"]):
        y, a, b, patients = simulate(rng, size["n_patients"], size["images_per_patient"])
        plans = {"image": bootstrap_indices(y.size, size["n_replicates"], seed=dataset),
                 "patient": cluster_bootstrap_indices(patients, size["n_replicates"], seed=dataset)}
        point = compute_metrics(y, a, "binary", CLASSES, metrics=["auc"])["auc"]
        for unit, indices in plans.items():
            replicates = bootstrap_metrics(y, a, "binary", CLASSES, indices, metrics=["auc"])["auc"]
            summary = summarise(point, replicates)
            covered[unit] += summary["ci_low"] <= TRUE_AUC <= summary["ci_high"]
            test = paired_bootstrap_test(y, a, b, "binary", CLASSES, "auc", indices)
            rejected[unit] += test["p_value"] < 0.05
        for method, groups in (("delong", None), ("obuchowski", patients)):
            single = delong_auc(y, a[:, 1], patients=groups)
            delong_covered[method] += single["ci_low"] <= TRUE_AUC <= single["ci_high"]
            delong_rejected[method] += delong_test(y, a[:, 1], b[:, 1], patients=groups)["p_value"] < 0.05
    n = size["n_datasets"]
    return {
        "name": "bootstrap_coverage_clustered_null", **size, "quick": quick, "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "bootstrap": {unit: {"ci_coverage": covered[unit] / n, "type_i_error": rejected[unit] / n}
                      for unit in covered},
        "delong": {method: {"ci_coverage": delong_covered[method] / n, "type_i_error": delong_rejected[method] / n}
                   for method in delong_covered},
    }


def t_test_growth(replicate_counts: tuple[int, ...] = (100, 1000, 10000), seed: int = 0) -> list[dict[str, Any]]:
    """The study's t-test on bootstrap replicates vs the paired bootstrap p-value, on one clustered
    null test set (true difference 0) and more and more replicates of it."""
    y, a, b, patients = simulate(np.random.default_rng(seed), FULL["n_patients"], FULL["images_per_patient"])
    rows = []
    for n_replicates in replicate_counts:
        indices = cluster_bootstrap_indices(patients, n_replicates, seed=seed)
        t_test = replicate_t_test(y, a, b, "binary", CLASSES, "auc", indices)
        paired = paired_bootstrap_test(y, a, b, "binary", CLASSES, "auc", indices)
        rows.append({"n_replicates": n_replicates, "t": t_test["t"], "t_p_value": t_test["p_value"],
                     "paired_bootstrap_p_value": paired["p_value"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line of the coverage simulation: prints CI coverage and type-I error of each bootstrap unit and test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer simulated data sets and replicates")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, seed=args.seed)
    print(f"{result['n_datasets']} simulated null test sets: {result['n_patients']} patients x "
          f"{result['images_per_patient']} images, {result['n_replicates']} bootstrap replicates "
          f"({result['seconds']} s)")
    print(f"{'method':<28}{'95% CI coverage':>17}{'type-I error (5%)':>20}")
    for unit, rates in result["bootstrap"].items():
        print(f"{unit + '-level bootstrap':<28}{rates['ci_coverage']:>17.3f}{rates['type_i_error']:>20.3f}")
    for method, rates in result["delong"].items():
        label = "DeLong (images independent)" if method == "delong" else "clustered DeLong (Obuchowski)"
        print(f"{label:<28}{rates['ci_coverage']:>17.3f}{rates['type_i_error']:>20.3f}")
    print("\nthe study's t-test on bootstrap replicates, one null test set (true difference 0):")
    for row in t_test_growth():
        print(f"  R = {row['n_replicates']:>6}: t = {row['t']:7.1f}, p = {row['t_p_value']:.2g}; "
              f"paired bootstrap p = {row['paired_bootstrap_p_value']:.3f}")
    if args.quick:
        print("(quick size: too few test sets to check the targets; run without --quick)")
        return 0
    patient = result["bootstrap"]["patient"]
    if not (0.93 <= patient["ci_coverage"] <= 0.97 and patient["type_i_error"] <= 0.06):
        print("FAIL: patient-level bootstrap misses its targets (coverage 0.93-0.97, type-I <= 0.06)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
