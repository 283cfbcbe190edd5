"""Paired comparisons of two models scored on the same test samples.

* :func:`paired_bootstrap_test`: any metric; both models are evaluated on the *same* bootstrap
  replicates, so the spread of the per-replicate difference includes the correlation between
  the models (they see the same easy and hard samples).
* :func:`delong_test`: DeLong, DeLong & Clarke-Pearson (1988) test for two correlated AUCs, with
  the O(n log n) midrank formulation of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389).
  It needs no resampling and is the usual test reported for binary AUCs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.special import ndtri, stdtr

from medprobe.errors import ConfigError, DataError
from medprobe.scoring import midranks, normal_two_sided_p
from medprobe.stats.bootstrap import bootstrap_metrics
from medprobe.stats.resampling import ClusteredIndices, cluster_codes, has_clusters
from medprobe.stats.metrics import TaskType, compute_metrics


def paired_bootstrap_test(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, task_type: TaskType,
                          classes: Sequence[str], metric: str, indices: np.ndarray | ClusteredIndices, *,
                          level: float = 0.95) -> dict[str, float | int]:
    """Difference ``metric(a) - metric(b)`` with a paired bootstrap CI and two-sided p-value.

    With ``d_r`` the difference on replicate ``r`` (replicates where the metric is undefined for
    either model are dropped; ``R`` = those kept), the p-value is

        p = min(1, 2 * min((1 + #{d_r <= 0}) / (R + 1), (1 + #{d_r >= 0}) / (R + 1)))

    i.e. twice the bootstrap share on the far side of zero, the percentile-interval inversion
    of the test of "no difference". The +1 terms count the observed data as one more replicate
    (Davison & Hinkley 1997, ch. 4), so p is never 0 from a finite number of replicates; identical
    models give p = 1. Returns ``diff, ci_low, ci_high, p_value, sd, value_a, value_b,
    n_dropped``; the CI is the percentile interval of ``d_r``.
    """
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    if a.shape != b.shape:
        raise DataError(f"paired test needs both models' scores on the same samples; shapes {a.shape} and {b.shape}")
    value_a = compute_metrics(y_true, a, task_type, classes, metrics=[metric])[metric]
    value_b = compute_metrics(y_true, b, task_type, classes, metrics=[metric])[metric]
    replicates_a = bootstrap_metrics(y_true, a, task_type, classes, indices, metrics=[metric])[metric]
    replicates_b = bootstrap_metrics(y_true, b, task_type, classes, indices, metrics=[metric])[metric]
    return paired_difference(value_a, value_b, replicates_a, replicates_b, metric, level=level)


def paired_difference(value_a: float, value_b: float, replicates_a: np.ndarray, replicates_b: np.ndarray,
                      metric: str = "metric", *, level: float = 0.95) -> dict[str, float | int]:
    """:func:`paired_bootstrap_test` from values already computed: both models' point values and
    their per-replicate values on the *same* replicates (e.g. kept from scoring each model)."""
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be between 0 and 1, got {level}")
    replicates_a, replicates_b = np.asarray(replicates_a, dtype=float), np.asarray(replicates_b, dtype=float)
    if replicates_a.shape != replicates_b.shape:
        raise DataError(f"paired replicates differ in number: {replicates_a.shape} and {replicates_b.shape}")
    differences = replicates_a - replicates_b
    kept = differences[np.isfinite(differences)]
    if kept.size < 2:
        raise DataError(f"only {kept.size} of {differences.size} bootstrap replicates define {metric!r}; "
                        "cannot compare the models on it")
    at_most_zero = (1 + np.count_nonzero(kept <= 0)) / (kept.size + 1)
    at_least_zero = (1 + np.count_nonzero(kept >= 0)) / (kept.size + 1)
    low, high = np.percentile(kept, [50 * (1 - level), 50 * (1 + level)])
    return {"diff": value_a - value_b, "ci_low": float(low), "ci_high": float(high),
            "p_value": min(1.0, 2 * min(at_most_zero, at_least_zero)), "sd": float(kept.std(ddof=1)),
            "value_a": value_a, "value_b": value_b, "n_dropped": int(differences.size - kept.size)}


REPLICATE_T_TEST_WARNING = (
    "paired t-test on bootstrap replicates (the study's test), for reproduction only: not a valid "
    "test. Its standard error treats the R replicates as R independent observations, so t grows "
    "like sqrt(R) on the same data (and p shrinks towards 0) however small the difference; use "
    "the paired bootstrap or DeLong p-value instead.")


def replicate_t_test(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, task_type: TaskType,
                     classes: Sequence[str], metric: str,
                     indices: np.ndarray | ClusteredIndices) -> dict[str, Any]:
    """The study's "paired two-tailed t-test on bootstrap replicates", kept to reproduce its numbers.

    A paired t-test (``scipy.stats.ttest_rel``'s) on the two models' per-replicate metric values (replicates where
    either is undefined dropped). Returns ``t, p_value, df, n_replicates`` and ``warning``
    (:data:`REPLICATE_T_TEST_WARNING`): the test answers nothing about the models, because R is
    the analyst's choice, not a sample size.
    """
    replicates_a = bootstrap_metrics(y_true, scores_a, task_type, classes, indices, metrics=[metric])[metric]
    replicates_b = bootstrap_metrics(y_true, scores_b, task_type, classes, indices, metrics=[metric])[metric]
    return t_test_on_replicates(replicates_a, replicates_b, metric)


def t_test_on_replicates(replicates_a: np.ndarray, replicates_b: np.ndarray, metric: str = "metric") -> dict[str, Any]:
    """:func:`replicate_t_test` from both models' per-replicate values on the same replicates."""
    replicates_a, replicates_b = np.asarray(replicates_a, dtype=float), np.asarray(replicates_b, dtype=float)
    kept = np.isfinite(replicates_a) & np.isfinite(replicates_b)
    if kept.sum() < 2:
        raise DataError(f"only {int(kept.sum())} bootstrap replicates define {metric!r}; no t-test")
    differences = replicates_a[kept] - replicates_b[kept]
    df = int(kept.sum() - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = float(differences.mean() / (differences.std(ddof=1) / np.sqrt(df + 1)))
    p_value = float(2.0 * stdtr(df, -abs(t))) if np.isfinite(t) else float("nan")
    return {"t": t, "p_value": p_value, "df": df,
            "n_replicates": int(kept.sum()), "warning": REPLICATE_T_TEST_WARNING}


def _binary_labels(y_true: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"DeLong's test needs 1-D binary labels, got shape {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise DataError(f"DeLong's test needs labels in {{0, 1}}, got values {sorted(values)}")
    return y.astype(bool)


def _structural_components(positive: np.ndarray, score_rows: Sequence[np.ndarray]
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs (k,) and DeLong's structural components ``V10`` (k, m) and ``V01`` (k, n).

    Via midranks (Sun & Xu 2014): with ``Tz`` the midranks of a model's scores among all samples
    and ``Tx`` / ``Ty`` the midranks among the positives / negatives, ``V10_i = (Tz_i - Tx_i) / n``
    is the share of negatives that positive ``i`` outscores (ties count half) and
    ``V01_j = 1 - (Tz_j - Ty_j) / m`` the share of positives that outscore negative ``j``;
    ``AUC = mean(V10)``.
    """
    scores = np.vstack([np.asarray(s, dtype=np.float64) for s in score_rows])
    if scores.shape[1] != positive.size:
        raise DataError(f"{positive.size} labels but {scores.shape[1]} scores per model")
    if not np.isfinite(scores).all():
        model, sample = np.argwhere(~np.isfinite(scores))[0]
        raise DataError(f"score of sample {sample} (model {model}) is {scores[model, sample]} (not finite)")
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise DataError(f"DeLong's variance needs at least 2 positive and 2 negative samples, got {m} and {n}")
    pos, neg = scores[:, positive], scores[:, ~positive]
    ranks_all = midranks(np.hstack([pos, neg]))
    v10 = (ranks_all[:, :m] - midranks(pos)) / n
    v01 = 1.0 - (ranks_all[:, m:] - midranks(neg)) / m
    return v10.mean(axis=1), v10, v01


def _delong_covariance(y_true: np.ndarray, score_rows: Sequence[np.ndarray],
                       patients: Sequence[Any] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """AUCs (k,), their covariance matrix (k, k) and the method, for k score vectors on the same samples.

    Without clustering (no ``patients``, or one image per patient): DeLong et al. (1988),
    ``Cov = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample covariance matrices (ddof=1) of
    the structural components across models. With several images per patient: Obuchowski (1997,
    Biometrics 53:567), who sums the components per patient ``i`` (``V10_i``, ``V01_i`` over its
    ``m_i`` positive and ``n_i`` negative images) and, with ``I`` patients, ``M`` positive and
    ``N`` negative images in all,

        S10 = I / ((I-1) M) sum_i (V10_i - m_i AUC)(V10_i - m_i AUC)'
        S01 = I / ((I-1) N) sum_i (V01_i - n_i AUC)(V01_i - n_i AUC)'
        S11 = I / (I-1)     sum_i (V10_i - m_i AUC)(V01_i - n_i AUC)'
        Cov = S10 / M + S01 / N + (S11 + S11') / (M N)

    The cross term carries the correlation between a patient's positive and negative images. With
    one image per patient this is DeLong's variance times ``I/(I-1) (M-1)/M`` (resp. ``(N-1)/N``),
    which tends to 1; the plain form is then used so the two agree exactly.
    """
    positive = _binary_labels(y_true)
    aucs, v10, v01 = _structural_components(positive, score_rows)
    if patients is None or not has_clusters(patients):
        covariance = np.atleast_2d(np.cov(v10)) / v10.shape[1] + np.atleast_2d(np.cov(v01)) / v01.shape[1]
        return aucs, covariance, "delong"
    codes = cluster_codes(patients, positive.size)
    n_patients = int(codes.max()) + 1
    if n_patients < 2:
        raise DataError("the clustered DeLong variance needs at least 2 patients")
    m_total, n_total = v10.shape[1], v01.shape[1]
    per_patient_pos = np.bincount(codes[positive], minlength=n_patients)
    per_patient_neg = np.bincount(codes[~positive], minlength=n_patients)
    v10_sums = np.stack([np.bincount(codes[positive], weights=row, minlength=n_patients) for row in v10])
    v01_sums = np.stack([np.bincount(codes[~positive], weights=row, minlength=n_patients) for row in v01])
    a10 = v10_sums - per_patient_pos[None, :] * aucs[:, None]
    a01 = v01_sums - per_patient_neg[None, :] * aucs[:, None]
    inflation = n_patients / (n_patients - 1)
    s10 = inflation / m_total * (a10 @ a10.T)
    s01 = inflation / n_total * (a01 @ a01.T)
    s11 = inflation * (a10 @ a01.T)
    covariance = s10 / m_total + s01 / n_total + (s11 + s11.T) / (m_total * n_total)
    return aucs, covariance, "obuchowski"


def delong_auc(y_true: np.ndarray, scores: np.ndarray, level: float = 0.95, *,
               patients: Sequence[Any] | np.ndarray | None = None) -> dict[str, Any]:
    """One AUC with its DeLong variance and normal CI (clipped to [0, 1]): ``auc, var, ci_low,
    ci_high, method``; clustered (Obuchowski) when ``patients`` shows several images per patient."""
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be between 0 and 1, got {level}")
    aucs, covariance, method = _delong_covariance(y_true, [scores], patients)
    auc, var = float(aucs[0]), float(covariance[0, 0])
    half = float(ndtri(0.5 + level / 2) * np.sqrt(var))
    return {"auc": auc, "var": var, "ci_low": max(0.0, auc - half), "ci_high": min(1.0, auc + half),
            "method": method}


def delong_test(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                level: float = 0.95, *, patients: Sequence[Any] | np.ndarray | None = None) -> dict[str, Any]:
    """DeLong's two-sided test of AUC(a) = AUC(b) for two models scored on the same samples.

    ``scores_a`` / ``scores_b`` are 1-D positive-class scores. Returns ``auc_a, auc_b, diff
    (= auc_a - auc_b), var`` (variance of the difference: var_a + var_b - 2 cov_ab), ``z, p_value``
    and a normal ``ci_low, ci_high`` for the difference, plus ``var_a, var_b, cov_ab`` and ``method``
    (``"obuchowski"``, the clustered form, when ``patients`` shows several images per patient,
    else ``"delong"``; see :func:`_delong_covariance`). When the
    difference has zero variance (e.g. identical scores) z is 0 and p is 1 if the AUCs are equal,
    and z is +-inf with p = 0 otherwise.
    """
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be between 0 and 1, got {level}")
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise DataError(f"DeLong's test needs two 1-D score vectors of equal length, got {a.shape} and {b.shape}")
    aucs, covariance, method = _delong_covariance(y_true, [a, b], patients)
    diff = float(aucs[0] - aucs[1])
    var = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    if var > 0:
        z = diff / np.sqrt(var)
    else:
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    half = float(ndtri(0.5 + level / 2) * np.sqrt(max(var, 0.0)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "var": var, "z": float(z),
            "p_value": normal_two_sided_p(z), "ci_low": diff - half, "ci_high": diff + half,
            "var_a": float(covariance[0, 0]), "var_b": float(covariance[1, 1]), "cov_ab": float(covariance[0, 1]),
            "method": method}


__all__ = ["paired_bootstrap_test", "paired_difference", "delong_auc", "delong_test", "replicate_t_test",
           "t_test_on_replicates", "REPLICATE_T_TEST_WARNING"]
