"""Paired bootstrap test and DeLong's test.

DeLong is checked against published numbers: pROC (Robin et al. 2011, BMC Bioinformatics 12:77)
on its ``aSAH`` data set (113 patients with aneurysmal subarachnoid haemorrhage, Turck et al.
2010; outcome Poor = positive). The expected values are pROC's own regression-test values
(tests/testthat/test-roc.test.R and test-var.R in the pROC repository): AUCs, DeLong variances and
paired roc.test z, p and 95 % CI for wfns vs s100b, wfns vs ndka and ndka vs s100b.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medprobe.errors import ConfigError, DataError
from medprobe.stats import (
    bootstrap_indices,
    bootstrap_metrics,
    compute_metrics,
    delong_auc,
    delong_test,
    paired_bootstrap_test,
)

# pROC's aSAH data, one character / value per patient in the data set's row order.
ASAH_POOR = ("000011010010110010111010000000001001101100000000011000100"
             "01010011101101111000110100000010000000000001111110001000")
ASAH_WFNS = ("111132541252551252252111121211342145414255112411255212512"
             "22151125214524414121421232421451154221113125225552445111")
ASAH_S100B = """
0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04 0.07 0.33 0.09 0.09 0.07 0.11
0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34 0.35 0.48 0.09 0.96 0.25 0.5 0.46 0.16 0.07 0.43 0.45 0.11
0.08 0.09 0.86 0.52 0.08 0.06 0.13 2.07 0.1 0.14 0.15 0.07 0.06 0.77 0.05 0.09 0.3 0.03 0.09 0.04 0.23 0.7 0.09 0.27
0.71 0.08 0.26 0.08 0.16 0.09 0.13 0.1 0.08 0.11 0.33 0.11 0.28 0.07 0.1 0.32 0.22 0.07 0.05 0.24 0.38 0.1 0.15 0.08
0.14 0.1 0.07 0.04 0.19 0.56 0.14 0.58 0.32 0.82 0.74 0.15 0.47 0.17 0.44 0.15 0.5 0.48
"""
ASAH_NDKA = """
3.01 8.54 8.09 10.42 17.4 12.75 6.0 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75 11.6 16.11 32.37 54.82 32.41
49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81 9.85 18.21 5.03 14.04 21.93 8.02 7.42 8.38 6.59 9.63 13.12
7.96 14.34 41.43 7.63 7.06 12.59 13.56 3.87 9.44 7.66 12.98 419.19 27.19 22.27 9.95 21.22 11.73 10.4 58.83 6.39 11.09
12.22 13.67 17.21 22.63 12.9 9.7 21.57 8.23 72.57 15.54 10.51 10.6 14.57 5.19 9.63 4.61 21.48 17.3 12.71 9.44 11.07
19.46 10.83 5.37 11.97 7.75 9.83 10.55 28.49 8.53 12.57 12.9 46.83 11.68 12.67 9.01 9.57 34.06 11.72 14.26 47.61
11.67 24.58 10.33 13.87 15.89 22.43 6.79 13.45
"""


@pytest.fixture(scope="module")
def asah() -> dict[str, np.ndarray]:
    data = {
        "poor": np.array([int(c) for c in ASAH_POOR]),
        "wfns": np.array([float(c) for c in ASAH_WFNS]),
        "s100b": np.array([float(v) for v in ASAH_S100B.split()]),
        "ndka": np.array([float(v) for v in ASAH_NDKA.split()]),
    }
    assert all(v.size == 113 for v in data.values()) and data["poor"].sum() == 41
    return data


PROC_AUC = {"wfns": 0.823678861788618, "ndka": 0.611957994579946}
PROC_VAR = {"wfns": 0.00146991470882363, "ndka": 0.0031908105493913, "s100b": 0.00266868245717244}
PROC_TESTS = [  # (a, b, z, p, ci_low, ci_high) of roc.test(a, b) with DeLong's method
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, None, None),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, None, None),
]


@pytest.mark.parametrize("marker", ["wfns", "ndka", "s100b"])
def test_delong_auc_and_variance_match_proc(asah: dict[str, np.ndarray], marker: str) -> None:
    result = delong_auc(asah["poor"], asah[marker])
    assert result["auc"] == pytest.approx(roc_auc_score(asah["poor"], asah[marker]), abs=1e-12)
    if marker in PROC_AUC:
        assert result["auc"] == pytest.approx(PROC_AUC[marker], rel=1e-12)
    assert result["var"] == pytest.approx(PROC_VAR[marker], rel=1e-10)


def test_delong_auc_ci_matches_proc(asah: dict[str, np.ndarray]) -> None:
    result = delong_auc(asah["poor"], asah["ndka"])  # pROC ci.auc(r.ndka): 0.5012 .. 0.7227
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.501244999271703, 0.722670989888189), rel=1e-10)


@pytest.mark.parametrize(("a", "b", "z", "p", "ci_low", "ci_high"), PROC_TESTS)
def test_delong_paired_test_matches_proc(asah: dict[str, np.ndarray], a, b, z, p, ci_low, ci_high) -> None:
    result = delong_test(asah["poor"], asah[a], asah[b])
    assert result["z"] == pytest.approx(z, rel=1e-10)
    assert result["p_value"] == pytest.approx(p, rel=1e-10)
    assert result["var_a"] == pytest.approx(PROC_VAR[a], rel=1e-10)
    assert result["diff"] == pytest.approx(result["auc_a"] - result["auc_b"], abs=1e-15)
    if ci_low is not None:
        assert (result["ci_low"], result["ci_high"]) == pytest.approx((ci_low, ci_high), rel=1e-10)
    swapped = delong_test(asah["poor"], asah[b], asah[a])
    assert swapped["z"] == pytest.approx(-z, rel=1e-10) and swapped["p_value"] == pytest.approx(p, rel=1e-10)


def slow_structural_components(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) by definition, O(m * n) pairs: psi(X, Y) = 1, 1/2, 0."""
    positives, negatives = y == 1, y == 0
    v10, v01 = [], []
    for s in scores:
        x, yy = s[positives], s[negatives]
        psi = (x[:, None] > yy[None, :]) + 0.5 * (x[:, None] == yy[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = positives.sum(), negatives.sum()
    aucs = np.array([v.mean() for v in v10])
    s10 = np.array([[np.sum((a - a.mean()) * (b - b.mean())) / (m - 1) for b in v10] for a in v10])
    s01 = np.array([[np.sum((a - a.mean()) * (b - b.mean())) / (n - 1) for b in v01] for a in v01])
    return aucs, s10 / m + s01 / n


def correlated_scores(n: int, seed: int, decimals: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    shared = rng.normal(0, 1, n)
    a = np.round(1.0 * y + shared + rng.normal(0, 0.7, n), decimals)  # rounding: many ties
    b = np.round(0.6 * y + shared + rng.normal(0, 0.7, n), decimals)
    return y, a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_slow_structural_components(seed: int) -> None:
    y, a, b = correlated_scores(90, seed)
    aucs, covariance = slow_structural_components(y, [a, b])
    result = delong_test(y, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert (result["auc_a"], result["auc_b"]) == pytest.approx(tuple(aucs), abs=1e-12)
    assert result["var_a"] == pytest.approx(covariance[0, 0], rel=1e-10)
    assert result["var_b"] == pytest.approx(covariance[1, 1], rel=1e-10)
    assert result["cov_ab"] == pytest.approx(covariance[0, 1], rel=1e-10)
    expected_var = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    assert result["var"] == pytest.approx(expected_var, rel=1e-10)
    assert result["z"] == pytest.approx((aucs[0] - aucs[1]) / math.sqrt(expected_var), rel=1e-10)
    assert delong_auc(y, a)["var"] == pytest.approx(covariance[0, 0], rel=1e-10)


def test_delong_identical_and_very_different_models() -> None:
    y, a, b = correlated_scores(300, 5)
    same = delong_test(y, a, a.copy())
    assert same["diff"] == 0 and same["z"] == 0 and same["p_value"] == 1.0
    noise = np.random.default_rng(1).normal(size=y.size)
    strong = delong_test(y, a + 3.0 * y, noise)
    assert strong["diff"] > 0.3 and strong["p_value"] < 1e-10


def test_delong_needs_two_of_each_class() -> None:
    with pytest.raises(DataError, match="at least 2 positive"):
        delong_test(np.array([0, 0, 0, 1]), np.arange(4.0), np.arange(4.0))
    with pytest.raises(DataError, match="1-D score vectors"):
        delong_test(np.array([0, 1, 0, 1]), np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(DataError, match=r"labels in \{0, 1\}"):
        delong_auc(np.array([0, 1, 2, 1]), np.arange(4.0))


# ------------------------------------------------------------------ paired bootstrap


def as_probabilities(score: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-score))
    return np.column_stack([1 - p, p])


def test_paired_bootstrap_identical_models_give_p_one() -> None:
    y, a, _ = correlated_scores(150, 0)
    indices = bootstrap_indices(y.size, 200, seed=0)
    result = paired_bootstrap_test(y, as_probabilities(a), as_probabilities(a), "binary", ["neg", "pos"],
                                   "auc", indices)
    assert result["diff"] == 0 and result["p_value"] == 1.0
    assert result["ci_low"] == result["ci_high"] == 0 and result["n_dropped"] == 0


def test_paired_bootstrap_clear_winner_gets_smallest_possible_p() -> None:
    """Every replicate favours model a, so p = 2 * (0 + 1) / (R + 1) exactly."""
    y, a, _ = correlated_scores(200, 1)
    noise = np.random.default_rng(2).normal(size=y.size)
    indices = bootstrap_indices(y.size, 300, seed=0)
    result = paired_bootstrap_test(y, as_probabilities(a + 3.0 * y), as_probabilities(noise), "binary",
                                   ["neg", "pos"], "auc", indices)
    assert result["p_value"] == pytest.approx(2 / 301, abs=1e-15)
    assert 0 < result["ci_low"] < result["diff"] < result["ci_high"]


@pytest.mark.parametrize("metric", ["auc", "f1_macro", "accuracy", "auc[lymph]"])
def test_paired_bootstrap_p_value_formula(metric: str) -> None:
    """Recompute the documented formula from the two models' replicate values."""
    rng = np.random.default_rng(3)
    classes = ["adipose", "debris", "lymph"]
    y = rng.integers(0, 3, 240)
    shared = rng.normal(0, 1, (240, 3))
    logits_a, logits_b = shared + rng.normal(0, 1, (240, 3)), shared + rng.normal(0, 1, (240, 3))
    logits_a[np.arange(240), y] += 1.0
    logits_b[np.arange(240), y] += 0.85
    scores_a = np.exp(logits_a) / np.exp(logits_a).sum(axis=1, keepdims=True)
    scores_b = np.exp(logits_b) / np.exp(logits_b).sum(axis=1, keepdims=True)
    indices = bootstrap_indices(240, 400, seed=7)
    result = paired_bootstrap_test(y, scores_a, scores_b, "multiclass", classes, metric, indices)
    d = (bootstrap_metrics(y, scores_a, "multiclass", classes, indices)[metric]
         - bootstrap_metrics(y, scores_b, "multiclass", classes, indices)[metric])
    expected_p = min(1.0, 2 * min((1 + np.sum(d <= 0)) / 401, (1 + np.sum(d >= 0)) / 401))
    assert result["p_value"] == pytest.approx(expected_p, abs=1e-15)
    assert 2 / 401 < result["p_value"] <= 1  # the models are close: neither wins every replicate
    assert result["diff"] == pytest.approx(
        compute_metrics(y, scores_a, "multiclass", classes)[metric]
        - compute_metrics(y, scores_b, "multiclass", classes)[metric], abs=1e-15)
    assert result["ci_low"] == pytest.approx(np.percentile(d, 2.5), abs=1e-15)
    assert result["ci_high"] == pytest.approx(np.percentile(d, 97.5), abs=1e-15)


def test_paired_bootstrap_sd_agrees_with_delong() -> None:
    """Two independent estimates of the SD of an AUC difference: bootstrap and DeLong."""
    y, a, b = correlated_scores(400, 11, decimals=3)
    indices = bootstrap_indices(y.size, 1000, seed=0)
    boot = paired_bootstrap_test(y, as_probabilities(a), as_probabilities(b), "binary", ["neg", "pos"],
                                 "auc", indices)
    delong = delong_test(y, a, b)
    assert boot["diff"] == pytest.approx(delong["diff"], abs=1e-12)
    assert boot["sd"] == pytest.approx(math.sqrt(delong["var"]), rel=0.15)


def resample_has_no_positive(indices: np.ndarray, y: np.ndarray) -> np.ndarray:
    return y[indices].sum(axis=1) == 0


def test_paired_bootstrap_drops_replicates_missing_a_class() -> None:
    rng = np.random.default_rng(4)
    y = np.zeros(60, dtype=int)
    y[[3, 17, 40]] = 1  # three positives: some replicates draw none
    a, b = rng.normal(size=60) + 2 * y, rng.normal(size=60) + y
    indices = bootstrap_indices(60, 300, seed=1)
    result = paired_bootstrap_test(y, as_probabilities(a), as_probabilities(b), "binary", ["neg", "pos"],
                                   "auc", indices)
    expected_dropped = int(np.sum(resample_has_no_positive(indices, y)))
    assert result["n_dropped"] == expected_dropped > 0


def test_paired_bootstrap_rejects_mismatched_inputs() -> None:
    y, a, b = correlated_scores(50, 0)
    indices = bootstrap_indices(50, 20)
    with pytest.raises(DataError, match="same samples"):
        paired_bootstrap_test(y, as_probabilities(a), as_probabilities(b[:40]), "binary", ["n", "p"], "auc", indices)
    with pytest.raises(ConfigError, match="unknown metric"):
        paired_bootstrap_test(y, as_probabilities(a), as_probabilities(b), "binary", ["n", "p"], "auprc", indices)
