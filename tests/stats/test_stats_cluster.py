"""Patient-level (cluster) bootstrap and clustered DeLong, each against a reference written here.

The bootstrap reference expands every replicate into the image rows it stands for (all images of
each drawn patient, once per draw) and scores them with scikit-learn. The clustered DeLong
reference is Obuchowski (1997, Biometrics 53:567-578), eqs. for V10/V01, S10/S01/S11, written
with explicit loops over patients and over every (positive, negative) image pair.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from medprobe.errors import ConfigError, DataError
from medprobe.stats import (
    ClusteredIndices,
    bootstrap_indices,
    bootstrap_metrics,
    cluster_bootstrap_indices,
    cluster_codes,
    delong_auc,
    delong_test,
    paired_bootstrap_test,
    per_group_metrics,
    resampling_plan,
)

TOL = 1e-12


def clustered_task(n_patients: int = 30, seed: int = 0, max_images: int = 5):
    """Binary labels and two models' scores with a shared patient effect (several images each)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_images + 1, n_patients)
    patients = np.repeat([f"p{i:03d}" for i in range(n_patients)], sizes)
    effect = np.repeat(rng.normal(0, 1, n_patients), sizes)
    y = (rng.random(patients.size) < 1 / (1 + np.exp(-effect))).astype(int)
    score_a = np.round(0.8 * y + effect + rng.normal(0, 1, y.size), 1)  # rounded: ties
    score_b = np.round(0.4 * y + effect + rng.normal(0, 1, y.size), 1)
    order = rng.permutation(y.size)  # patients' images need not be contiguous
    return y[order], score_a[order], score_b[order], patients[order]


def as_probabilities(score: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-score))
    return np.column_stack([1 - p, p])


def expand(replicate_patients: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Image rows of one patient-level replicate: every image of each drawn patient, per draw."""
    return np.concatenate([np.flatnonzero(codes == patient) for patient in replicate_patients])


# ------------------------------------------------------------------ codes and plans


def test_cluster_codes_missing_ids_are_patients_of_their_own() -> None:
    codes = cluster_codes(np.array(["b", None, "a", "b", np.nan, "a"], dtype=object))
    assert codes.tolist() == [0, 2, 1, 0, 3, 1]
    assert cluster_codes([None, None, None]).tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="one entry per sample"):
        cluster_codes(["a", "b"], n=3)


def test_counts_equal_the_expanded_replicates() -> None:
    _, _, _, patients = clustered_task(12, seed=1)
    plan = cluster_bootstrap_indices(patients, 40, seed=2)
    codes = cluster_codes(patients)
    assert plan.n_clusters == 12 and plan.n_samples == patients.size and plan.n_replicates == 40
    counts = plan.counts()
    for r in range(40):
        assert np.array_equal(counts[r], np.bincount(expand(plan.draws[r], codes), minlength=patients.size))
    # every image of a patient is counted equally often: patients enter whole
    for patient in range(12):
        members = counts[:, codes == patient]
        assert (members == members[:, :1]).all()
    assert np.array_equal(plan.draws, cluster_bootstrap_indices(patients, 40, seed=2).draws)


def test_plan_uses_patients_only_when_some_patient_has_several_images() -> None:
    _, _, _, patients = clustered_task(10, seed=3)
    indices, unit = resampling_plan(patients, patients.size, 50, seed=4)
    assert isinstance(indices, ClusteredIndices) and unit == {"bootstrap_unit": "patient", "n_units": 10}
    image, unit = resampling_plan(patients, patients.size, 50, seed=4, unit="image")
    assert unit["bootstrap_unit"] == "image" and np.array_equal(image, bootstrap_indices(patients.size, 50, seed=4))
    # one image per patient, or no ids at all: the two units coincide; plain (unchanged) replicates
    for groups in ([f"p{i}" for i in range(20)], [None] * 20, None):
        indices, unit = resampling_plan(groups, 20, 50, seed=4)
        assert unit == {"bootstrap_unit": "image", "n_units": 20}
        assert np.array_equal(indices, bootstrap_indices(20, 50, seed=4))
    with pytest.raises(ConfigError, match="bootstrap unit"):
        resampling_plan(patients, patients.size, 5, 0, unit="eye")


@pytest.mark.parametrize("task_type", ["binary", "multiclass", "multilabel"])
def test_cluster_bootstrap_metrics_equal_sklearn_on_expanded_rows(task_type: str) -> None:
    y, score_a, _, patients = clustered_task(25, seed=5)
    rng = np.random.default_rng(0)
    if task_type == "binary":
        labels, scores, classes = y, as_probabilities(score_a), ["neg", "pos"]
    elif task_type == "multiclass":
        labels = (y + (rng.random(y.size) < 0.4)).clip(0, 2)
        scores = rng.dirichlet(np.ones(3), y.size) + np.eye(3)[labels] * 0.3
        scores = np.round(scores / scores.sum(1, keepdims=True), 2)
        classes = ["a", "b", "c"]
    else:
        labels = np.column_stack([y, rng.random(y.size) < 0.3])
        scores = np.round(np.column_stack([as_probabilities(score_a)[:, 1], rng.random(y.size)]), 2)
        classes = ["f1", "f2"]
    plan = cluster_bootstrap_indices(patients, 30, seed=6)
    ours = bootstrap_metrics(labels, scores, task_type, classes, plan, metrics=["auc", "f1_macro", "accuracy"])
    codes = cluster_codes(patients)
    for r in range(30):
        rows = expand(plan.draws[r], codes)
        yr, sr = labels[rows], scores[rows]
        if task_type == "multilabel":
            auc = np.mean([roc_auc_score(yr[:, k], sr[:, k]) for k in range(2)])
            predicted = (sr > 0.5).astype(int)
            accuracy = (predicted == yr).mean()
        elif task_type == "multiclass":
            auc = np.mean([roc_auc_score(yr == k, sr[:, k]) for k in range(3)])
            predicted = sr.argmax(1)
            accuracy = (predicted == yr).mean()
        else:
            auc = roc_auc_score(yr, sr[:, 1])
            predicted = sr.argmax(1)
            accuracy = (predicted == yr).mean()
        assert ours["auc"][r] == pytest.approx(auc, abs=TOL)
        assert ours["accuracy"][r] == pytest.approx(accuracy, abs=TOL)
        if np.isfinite(ours["f1_macro"][r]):
            assert ours["f1_macro"][r] == pytest.approx(f1_score(yr, predicted, average="macro"), abs=TOL)


def test_paired_test_shares_patient_replicates() -> None:
    """The paired difference per replicate is the difference of each model on the same patients."""
    y, score_a, score_b, patients = clustered_task(30, seed=7)
    a, b = as_probabilities(score_a), as_probabilities(score_b)
    plan = cluster_bootstrap_indices(patients, 200, seed=8)
    test = paired_bootstrap_test(y, a, b, "binary", ["neg", "pos"], "auc", plan)
    codes = cluster_codes(patients)
    diffs = []
    for draws in plan.draws:
        rows = expand(draws, codes)
        diffs.append(roc_auc_score(y[rows], score_a[rows]) - roc_auc_score(y[rows], score_b[rows]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert test["ci_low"] == pytest.approx(low, abs=TOL) and test["ci_high"] == pytest.approx(high, abs=TOL)
    assert test["sd"] == pytest.approx(np.std(diffs, ddof=1), abs=TOL)


def test_per_group_rows_resample_patients_within_each_group() -> None:
    y, score_a, _, patients = clustered_task(40, seed=9)
    scores = as_probabilities(score_a)
    site = np.array(["A" if int(p[1:]) % 2 else "B" for p in patients])  # a patient stays at one site
    rows = per_group_metrics(y, scores, site, "binary", ["neg", "pos"], metrics=["auc"], n_replicates=100,
                             seed=3, patients=patients)
    for row in rows:
        members = np.flatnonzero(site == row["group"])
        plan = cluster_bootstrap_indices(patients[members], 100, seed=3)
        codes = cluster_codes(patients[members])
        values = [roc_auc_score(y[members][expand(d, codes)], score_a[members][expand(d, codes)])
                  for d in plan.draws if 0 < y[members][expand(d, codes)].sum() < expand(d, codes).size]
        assert row["bootstrap_unit"] == "patient" and row["n_units"] == np.unique(patients[members]).size
        assert row["ci_low"] == pytest.approx(np.percentile(values, 2.5), abs=TOL)
        assert row["sd"] == pytest.approx(np.std(values, ddof=1), abs=TOL)


# ------------------------------------------------------------------ clustered DeLong


def obuchowski_reference(y: np.ndarray, scores: list[np.ndarray], patients: np.ndarray):
    """AUCs and covariance matrix from Obuchowski (1997) with explicit loops.

    psi(X, Y) = 1 if X > Y, 1/2 if X = Y, 0 otherwise; X: positive images, Y: negative images.
    V10(X_ij) = 1/N sum_kl psi(X_ij, Y_kl);  V01(Y_kl) = 1/M sum_ij psi(X_ij, Y_kl);
    V10_i = sum_j V10(X_ij);  V01_i = sum_l V01(Y_il);
    S10^{ab} = I/((I-1)M) sum_i (V10_i^a - m_i A^a)(V10_i^b - m_i A^b), S01 likewise with n_i, N;
    S11^{ab} = I/(I-1) sum_i (V10_i^a - m_i A^a)(V01_i^b - n_i A^b);
    cov(A^a, A^b) = S10^{ab}/M + S01^{ab}/N + (S11^{ab} + S11^{ba})/(MN).
    """
    ids = sorted(set(patients.tolist()))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    big_m, big_n, big_i = pos.size, neg.size, len(ids)
    k = len(scores)
    v10_i, v01_i, m_i, n_i = np.zeros((k, big_i)), np.zeros((k, big_i)), np.zeros(big_i), np.zeros(big_i)
    aucs = np.zeros(k)
    for model, s in enumerate(scores):
        psi = np.array([[1.0 if s[p] > s[q] else 0.5 if s[p] == s[q] else 0.0 for q in neg] for p in pos])
        aucs[model] = psi.sum() / (big_m * big_n)
        v10, v01 = psi.sum(axis=1) / big_n, psi.sum(axis=0) / big_m
        for c, patient in enumerate(ids):
            v10_i[model, c] = sum(v10[j] for j, p in enumerate(pos) if patients[p] == patient)
            v01_i[model, c] = sum(v01[j] for j, q in enumerate(neg) if patients[q] == patient)
    for c, patient in enumerate(ids):
        m_i[c] = sum(patients[p] == patient for p in pos)
        n_i[c] = sum(patients[q] == patient for q in neg)
    cov = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            s10 = big_i / ((big_i - 1) * big_m) * sum(
                (v10_i[a, c] - m_i[c] * aucs[a]) * (v10_i[b, c] - m_i[c] * aucs[b]) for c in range(big_i))
            s01 = big_i / ((big_i - 1) * big_n) * sum(
                (v01_i[a, c] - n_i[c] * aucs[a]) * (v01_i[b, c] - n_i[c] * aucs[b]) for c in range(big_i))
            s11_ab = big_i / (big_i - 1) * sum((v10_i[a, c] - m_i[c] * aucs[a]) * (v01_i[b, c] - n_i[c] * aucs[b])
                                               for c in range(big_i))
            s11_ba = big_i / (big_i - 1) * sum((v10_i[b, c] - m_i[c] * aucs[b]) * (v01_i[a, c] - n_i[c] * aucs[a])
                                               for c in range(big_i))
            cov[a, b] = s10 / big_m + s01 / big_n + (s11_ab + s11_ba) / (big_m * big_n)
    return aucs, cov


def test_clustered_delong_matches_obuchowski_reference() -> None:
    y, score_a, score_b, patients = clustered_task(25, seed=11)
    aucs, cov = obuchowski_reference(y, [score_a, score_b], patients)
    single = delong_auc(y, score_a, patients=patients)
    assert single["method"] == "obuchowski"
    assert single["auc"] == pytest.approx(roc_auc_score(y, score_a), abs=TOL) == pytest.approx(aucs[0], abs=TOL)
    assert single["var"] == pytest.approx(cov[0, 0], rel=1e-10)
    test = delong_test(y, score_a, score_b, patients=patients)
    assert test["method"] == "obuchowski"
    assert test["var_a"] == pytest.approx(cov[0, 0], rel=1e-10)
    assert test["var_b"] == pytest.approx(cov[1, 1], rel=1e-10)
    assert test["cov_ab"] == pytest.approx(cov[0, 1], rel=1e-10)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    assert test["var"] == pytest.approx(var, rel=1e-10)
    assert test["z"] == pytest.approx((aucs[0] - aucs[1]) / np.sqrt(var), rel=1e-10)
    # positive within-patient correlation: the clustered variance exceeds the naive one here
    assert single["var"] > delong_auc(y, score_a)["var"]


def test_clustered_delong_with_one_image_per_patient_is_delong() -> None:
    """Obuchowski's formulas on singleton clusters are DeLong's variance times I/(I-1) (M-1)/M for
    the positive part and I/(I-1) (N-1)/N for the negative part (the cross term vanishes): the
    reference checks that identity against the existing DeLong, and medprobe then uses DeLong."""
    y, score_a, score_b, _ = clustered_task(60, seed=12, max_images=1)
    singletons = np.array([f"s{i}" for i in range(y.size)])
    _, cov = obuchowski_reference(y, [score_a], singletons)
    big_m, big_n, big_i = int(y.sum()), int((1 - y).sum()), y.size
    pos, neg = score_a[y == 1], score_a[y == 0]
    v10 = np.array([np.mean((p > neg) + 0.5 * (p == neg)) for p in pos])
    v01 = np.array([np.mean((pos > q) + 0.5 * (pos == q)) for q in neg])
    plain = v10.var(ddof=1) / big_m + v01.var(ddof=1) / big_n
    assert delong_auc(y, score_a)["var"] == pytest.approx(plain, rel=1e-10)
    scaled = big_i / (big_i - 1) * ((big_m - 1) / big_m * v10.var(ddof=1) / big_m
                                   + (big_n - 1) / big_n * v01.var(ddof=1) / big_n)
    assert cov[0, 0] == pytest.approx(scaled, rel=1e-10)
    assert cov[0, 0] == pytest.approx(plain, rel=0.05)
    clustered = delong_test(y, score_a, score_b, patients=singletons)
    assert clustered["method"] == "delong"
    assert clustered == delong_test(y, score_a, score_b)


def test_group_with_a_single_patient_has_no_interval() -> None:
    y, score_a, _, patients = clustered_task(20, seed=13, max_images=4)
    codes = cluster_codes(patients)
    lone = codes == np.argmax(np.bincount(codes))  # the patient with the most images (>= 2 here)
    assert lone.sum() >= 2
    sites = np.where(lone, "single", "rest")
    rows = per_group_metrics(y, as_probabilities(score_a), sites, "binary", ["neg", "pos"], metrics=["accuracy"],
                             n_replicates=50, patients=patients)
    single = next(r for r in rows if r["group"] == "single")
    assert single["n_units"] == 1 and single["n"] == lone.sum()
    assert np.isnan(single["sd"]) and np.isnan(single["ci_low"]) and single["n_dropped"] == 50
    rest = next(r for r in rows if r["group"] == "rest")
    assert rest["n_units"] == 19 and rest["sd"] > 0
