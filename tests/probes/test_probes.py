"""Probes: agreement with scikit-learn's LogisticRegression, the C path, selection, input errors.

References are independent: scikit-learn fitted on ``StandardScaler`` output, scikit-learn's
metrics, and the objective ``0.5 ||W||^2 + C * sum(logloss)`` written out in NumPy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from medprobe.errors import ConfigError, ConvergenceWarning, DataError
from medprobe.probes import (
    LinearProbe,
    cv_select,
    select_best,
    select_probe,
    validation_score,
)

SK_TIGHT = {"solver": "lbfgs", "tol": 1e-10, "max_iter": 10_000}


def make_data(n: int, d: int, k: int, seed: int, noise: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Class means in a 3-D subspace plus noise; raw features with offsets, unequal scales and
    one constant column, so the standardiser matters."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    means = rng.normal(0, 1.0, size=(k, 3))
    latent = means[y] + rng.normal(0, 1.0, size=(n, 3))
    X = latent @ rng.normal(0, 1.0, size=(3, d)) + noise * rng.normal(size=(n, d))
    X = X * np.exp(rng.normal(0, 1.5, size=d)) + rng.normal(0, 50, size=d)
    X[:, 1] = 7.5
    return X, y


def multilabel_from(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Overlapping findings: finding j is present for class j, and randomly for some others."""
    rng = np.random.default_rng(seed)
    Y = np.eye(k, dtype=np.int64)[y]
    Y[:, 0] |= (y == 1) & (rng.random(len(y)) < 0.5)
    Y[:, 2] |= rng.random(len(y)) < 0.1
    return Y


def objective(probe_coef: np.ndarray, intercept: np.ndarray, Xs: np.ndarray, y: np.ndarray, C: float, kind: str) -> float:
    """scikit-learn's primal objective: 0.5 ||W||^2 + C * sum of log-losses (NumPy, float64)."""
    z = Xs @ probe_coef.T + intercept
    if kind == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -log_p[np.arange(len(y)), y].sum()
    else:
        t = y.reshape(z.shape)
        loss = (np.logaddexp(0, z) - t * z).sum()
    return 0.5 * float((probe_coef ** 2).sum()) + C * float(loss)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X, y = make_data(900, 30, 4, seed=0)
    return {"X_train": X[:500], "y_train": y[:500], "X_val": X[500:700], "y_val": y[500:700],
            "X_test": X[700:], "y_test": y[700:]}


def standardised(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(data["X_train"])
    return scaler.transform(data["X_train"]), scaler.transform(data["X_test"])


# --------------------------------------------------------------------------- agreement with sklearn
@pytest.mark.parametrize("dtype,tol,max_prob_diff", [("float64", 1e-7, 1e-4), ("float32", 5e-5, 1e-3)])
@pytest.mark.parametrize("C", [0.01, 1.0])
def test_binary_matches_sklearn(data, dtype, tol, max_prob_diff, C):
    y = (data["y_train"] >= 2).astype(int)
    y_test = (data["y_test"] >= 2).astype(int)
    Xs, Xs_test = standardised(data)
    reference = LogisticRegression(C=C, **SK_TIGHT).fit(Xs, y)
    probe = LinearProbe("binary", C, tol=tol, dtype=dtype, device="cpu").fit(data["X_train"], y)

    assert probe.coef_.shape == (1, 30) and probe.intercept_.shape == (1,)
    np.testing.assert_allclose(probe.mean_, StandardScaler().fit(data["X_train"]).mean_, rtol=1e-12)
    proba = probe.predict_proba(data["X_test"])
    assert proba.shape == (len(y_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.abs(proba - reference.predict_proba(Xs_test)).max() < max_prob_diff
    np.testing.assert_allclose(probe.coef_, reference.coef_, atol=10 * max_prob_diff)
    np.testing.assert_allclose(probe.intercept_, reference.intercept_, atol=10 * max_prob_diff)
    auc = roc_auc_score(y_test, proba[:, 1])
    assert abs(auc - roc_auc_score(y_test, reference.predict_proba(Xs_test)[:, 1])) < 0.002
    assert abs(probe.coef_[0, 1]) < 1e-12  # the constant feature standardises to zeros and keeps no weight
    np.testing.assert_array_equal(probe.predict(data["X_test"]), (proba[:, 1] > 0.5).astype(int))


@pytest.mark.parametrize("dtype,tol,max_prob_diff", [("float64", 1e-7, 1e-4), ("float32", 5e-5, 1e-3)])
@pytest.mark.parametrize("C", [0.01, 1.0])
def test_multinomial_matches_sklearn(data, dtype, tol, max_prob_diff, C):
    Xs, Xs_test = standardised(data)
    reference = LogisticRegression(C=C, **SK_TIGHT).fit(Xs, data["y_train"])
    probe = LinearProbe("multiclass", C, tol=tol, dtype=dtype, device="cpu").fit(data["X_train"], data["y_train"])

    assert probe.coef_.shape == (4, 30) and probe.intercept_.shape == (4,)
    proba = probe.predict_proba(data["X_test"])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(proba - reference.predict_proba(Xs_test)).max() < max_prob_diff
    np.testing.assert_allclose(probe.coef_, reference.coef_, atol=10 * max_prob_diff)
    auc = roc_auc_score(data["y_test"], proba, multi_class="ovr")
    assert abs(auc - roc_auc_score(data["y_test"], reference.predict_proba(Xs_test), multi_class="ovr")) < 0.002
    np.testing.assert_array_equal(probe.predict(data["X_test"]), proba.argmax(axis=1))
    np.testing.assert_array_equal(probe.classes_, np.arange(4))


@pytest.mark.parametrize("dtype,tol,max_prob_diff", [("float64", 1e-7, 1e-4), ("float32", 5e-5, 1e-3)])
def test_multilabel_matches_one_sklearn_model_per_finding(data, dtype, tol, max_prob_diff):
    Y = multilabel_from(data["y_train"], 4, seed=1)
    Y_test = multilabel_from(data["y_test"], 4, seed=2)
    Xs, Xs_test = standardised(data)
    probe = LinearProbe("multilabel", 0.1, tol=tol, dtype=dtype, device="cpu").fit(data["X_train"], Y)
    proba = probe.predict_proba(data["X_test"])
    assert proba.shape == (len(Y_test), 4)
    for j in range(4):
        reference = LogisticRegression(C=0.1, **SK_TIGHT).fit(Xs, Y[:, j])
        assert np.abs(proba[:, j] - reference.predict_proba(Xs_test)[:, 1]).max() < max_prob_diff
        np.testing.assert_allclose(probe.coef_[j], reference.coef_[0], atol=10 * max_prob_diff)
        assert abs(roc_auc_score(Y_test[:, j], proba[:, j])
                   - roc_auc_score(Y_test[:, j], reference.predict_proba(Xs_test)[:, 1])) < 0.002
    np.testing.assert_array_equal(probe.predict(data["X_test"]), (proba > 0.5).astype(np.int64))


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_weakly_regularised_objective_is_at_least_as_low_as_sklearn(data, kind):
    """At large C the problem is ill-conditioned and scikit-learn stops on its relative-decrease
    rule; our solution must still reach (at least) the same objective value."""
    C = 100.0
    Xs, _ = standardised(data)
    y = data["y_train"] if kind == "softmax" else (data["y_train"] == 0).astype(int)
    task = "multiclass" if kind == "softmax" else "binary"
    reference = LogisticRegression(C=C, **SK_TIGHT).fit(Xs, y)
    probe = LinearProbe(task, C, tol=1e-7, dtype="float64", max_iter=5000, device="cpu").fit(data["X_train"], y)
    ours = objective(probe.coef_, probe.intercept_, Xs, y, C, kind)
    theirs = objective(reference.coef_, reference.intercept_, Xs, y, C, kind)
    assert ours <= theirs * (1 + 1e-9)
    assert probe.converged_


# --------------------------------------------------------------------------- the C path
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_path_equals_fitting_each_C_from_scratch(data, task):
    y = {"binary": (data["y_train"] == 3).astype(int), "multiclass": data["y_train"],
         "multilabel": multilabel_from(data["y_train"], 4, seed=3)}[task]
    Cs = [1.0, 1e-3, 0.1, 1e-2]  # deliberately unsorted: results come back in this order
    settings = {"tol": 1e-7, "dtype": "float64", "device": "cpu", "max_iter": 2000}
    path = LinearProbe(task, **settings).fit_path(data["X_train"], y, Cs)
    assert [p.C for p in path] == Cs
    for probe, C in zip(path, Cs):
        scratch = LinearProbe(task, C, **settings).fit(data["X_train"], y)
        assert probe.converged_ and scratch.converged_
        assert np.abs(probe.predict_proba(data["X_test"]) - scratch.predict_proba(data["X_test"])).max() < 1e-5
        np.testing.assert_allclose(probe.coef_, scratch.coef_, atol=1e-4)


def test_preconditioner_finds_the_dominant_directions():
    """The randomised eigen-sketch behind the L-BFGS preconditioner matches numpy's eigh, and the
    preconditioner is symmetric positive definite with the dominant directions scaled down."""
    from medprobe.probes.preconditioner import Preconditioner
    from medprobe.probes.products import FeatureProducts

    rng = np.random.default_rng(4)
    n, d = 400, 60
    X = rng.normal(size=(n, d)) + rng.normal(size=(n, 3)) @ (rng.normal(size=(3, d)) * np.array([[6.0], [4.0], [3.0]]))
    X = (X - X.mean(0)) / X.std(0)
    exact = np.linalg.eigvalsh(X.T @ X / n)[::-1]
    preconditioner = Preconditioner(FeatureProducts(X), max_rank=20)
    np.testing.assert_allclose(preconditioner.eigenvalues[0, :3], exact[:3], rtol=1e-4)
    factors = preconditioner.factors(np.array([1.0 / n]), np.array([0.25]))
    basis = np.eye(2 * (d + 1)).reshape(-1, 1, 2, d + 1)  # one problem of two outputs
    P = np.stack([preconditioner.apply(row, factors).ravel() for row in basis])
    np.testing.assert_allclose(P, P.T, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(P)
    assert eigenvalues.min() > 0
    weights = P.reshape(2, d + 1, 2, d + 1)[:, :d, :, :d].reshape(2 * d, 2 * d)
    assert np.linalg.eigvalsh(weights).max() == pytest.approx(1.0)  # the bulk directions are left alone
    # the (unpenalised) intercepts are scaled like a feature of eigenvalue 1 with the penalty / curvature
    assert P[d, d] == pytest.approx(preconditioner.eigenvalues[0, -1] + (1.0 / n) / 0.25)
    top = preconditioner.vectors[0, :, 0]
    assert top @ P[:d, :d] @ top < 0.1  # the strongest direction is damped hardest


def test_fit_is_deterministic_and_a_sklearn_estimator(data):
    probe = LinearProbe("multiclass", 0.1, device="cpu")
    first = clone(probe).fit(data["X_train"], data["y_train"])
    second = clone(probe).fit(data["X_train"], data["y_train"])
    np.testing.assert_array_equal(first.coef_, second.coef_)
    np.testing.assert_array_equal(first.predict_proba(data["X_test"]), second.predict_proba(data["X_test"]))
    assert probe.get_params()["C"] == 0.1 and not hasattr(probe, "coef_")
    assert first.fit(data["X_train"], data["y_train"]) is first


def test_float32_features_and_float_labels_give_the_same_probe(data):
    """float32 features (what the cache stores) and float-typed labels are taken as they are."""
    X32 = data["X_train"].astype(np.float32)
    settings = {"C": 0.1, "tol": 1e-6, "dtype": "float64", "device": "cpu"}
    probe32 = LinearProbe("multiclass", **settings).fit(X32, data["y_train"])
    probe64 = LinearProbe("multiclass", **settings).fit(X32.astype(np.float64), data["y_train"].astype(float))
    np.testing.assert_array_equal(probe32.coef_, probe64.coef_)


def test_max_iter_reached_warns(data):
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        probe = LinearProbe("multiclass", 10.0, max_iter=2, tol=1e-9, device="cpu").fit(data["X_train"], data["y_train"])
    assert not probe.converged_ and probe.n_iter_ == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu(data):
    settings = {"tol": 1e-7, "dtype": "float64"}
    cpu = LinearProbe("multiclass", 0.1, device="cpu", **settings).fit(data["X_train"], data["y_train"])
    gpu = LinearProbe("multiclass", 0.1, device="cuda", **settings).fit(data["X_train"], data["y_train"])
    assert np.abs(cpu.predict_proba(data["X_test"]) - gpu.predict_proba(data["X_test"])).max() < 1e-6


# --------------------------------------------------------------------------- validation metric
def test_validation_score_matches_sklearn(data):
    rng = np.random.default_rng(5)
    y = data["y_val"]
    p = rng.dirichlet(np.ones(4), size=len(y))
    p[np.arange(len(y)), y] += 0.3
    p /= p.sum(axis=1, keepdims=True)
    assert validation_score(y, p, "multiclass") == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    assert validation_score(y, p, "multiclass", "f1") == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    b = (y == 0).astype(int)
    pb = np.column_stack([1 - p[:, 0], p[:, 0]])
    assert validation_score(b, pb, "binary") == pytest.approx(roc_auc_score(b, p[:, 0]))
    Y = multilabel_from(y, 4, seed=6)
    assert validation_score(Y, p, "multilabel") == pytest.approx(roc_auc_score(Y, p, average="macro"))
    assert validation_score(Y, p, "multilabel", "f1") == pytest.approx(
        f1_score(Y, (p > 0.5).astype(int), average="macro", zero_division=np.nan))
    # a finding with no positives in val has no AUC: the mean runs over the other findings
    Y[:, 3] = 0
    expected = np.mean([roc_auc_score(Y[:, j], p[:, j]) for j in range(3)])
    assert validation_score(Y, p, "multilabel") == pytest.approx(expected)
    with pytest.raises(DataError, match="only one class"):
        validation_score(np.zeros(len(y), dtype=int), pb, "binary")
    with pytest.raises(ConfigError, match="selection metric"):
        validation_score(b, pb, "binary", "accuracy")


# --------------------------------------------------------------------------- selection
@pytest.mark.parametrize("metric", ["auc", "f1"])
def test_select_probe_maximises_the_validation_metric(data, metric):
    Cs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    settings = {"tol": 1e-6, "dtype": "float64", "device": "cpu"}  # tight: F1 jumps with small changes
    best, table = select_probe(data["X_train"], data["y_train"], data["X_val"], data["y_val"], "multiclass",
                               Cs=Cs, metric=metric, **settings)
    assert list(table["C"]) == Cs and int(table["selected"].sum()) == 1
    assert list(table["unconverged"]) == [""] * len(Cs) and table["converged"].all()
    # independent recomputation: one probe per C fitted on train only, scored with sklearn on val
    expected = []
    for C in Cs:
        probe = LinearProbe("multiclass", C, **settings).fit(data["X_train"], data["y_train"])
        proba = probe.predict_proba(data["X_val"])
        expected.append(roc_auc_score(data["y_val"], proba, multi_class="ovr") if metric == "auc"
                        else f1_score(data["y_val"], proba.argmax(1), average="macro"))
    np.testing.assert_allclose(table["val_score"], expected, atol=1e-3)
    assert best.C == table.loc[table["selected"], "C"].item()
    assert table.loc[table["selected"], "val_score"].item() == table["val_score"].max()
    # refit policy: the returned probe is the train-only fit (validation data never enter the fit)
    train_only = LinearProbe("multiclass", best.C, **settings).fit(data["X_train"], data["y_train"])
    np.testing.assert_allclose(best.predict_proba(data["X_test"]), train_only.predict_proba(data["X_test"]), atol=1e-4)


def test_select_probe_fits_on_train_and_scores_on_val_only(data, monkeypatch):
    """Spy on the probe: fitting sees exactly the training split, scoring exactly the validation split."""
    fitted_on, scored_on = [], []
    fit_layers_path, predict_proba = LinearProbe.fit_layers_path, LinearProbe.predict_proba

    def spy_fit_path(self, X_layers, y, Cs):
        fitted_on.extend((X, y) for X in X_layers)
        return fit_layers_path(self, X_layers, y, Cs)

    def spy_predict_proba(self, X):
        scored_on.append(X)
        return predict_proba(self, X)

    monkeypatch.setattr(LinearProbe, "fit_layers_path", spy_fit_path)
    monkeypatch.setattr(LinearProbe, "predict_proba", spy_predict_proba)
    select_probe(data["X_train"], data["y_train"], data["X_val"], data["y_val"], "multiclass",
                 Cs=[1e-3, 1e-1, 10.0], device="cpu")
    assert len(fitted_on) == 1 and fitted_on[0][0] is data["X_train"] and fitted_on[0][1] is data["y_train"]
    assert len(scored_on) == 3 and all(X is data["X_val"] for X in scored_on)


def test_select_probe_errors(data):
    with pytest.raises(DataError, match="X_val has 29 features"):
        select_probe(data["X_train"], data["y_train"], data["X_val"][:, 1:], data["y_val"], "multiclass")
    y_val = data["y_val"].copy()
    y_val[3] = 4
    with pytest.raises(DataError, match=r"y_val has labels outside 0\.\.3.*\[4\]"):
        select_probe(data["X_train"], data["y_train"], data["X_val"], y_val, "multiclass")
    with pytest.raises(ConfigError, match="Cs"):
        select_probe(data["X_train"], data["y_train"], data["X_val"], data["y_val"], "multiclass", Cs=[0.1, -1])
    with pytest.raises(ConfigError, match="selection metric"):
        select_probe(data["X_train"], data["y_train"], data["X_val"], data["y_val"], "multiclass", metric="acc")


def test_cv_select_grouped_folds(data):
    X, y = data["X_train"], data["y_train"]
    groups = np.arange(len(y)) // 3  # patients with three images each
    Cs = [1e-3, 1e-1, 10.0]
    probe, table = cv_select(X, y, "multiclass", Cs=Cs, n_splits=3, groups=groups, seed=1, device="cpu")
    assert list(table.columns) == ["C", "val_score", "val_std", "fold0", "fold1", "fold2", "selected"]
    np.testing.assert_allclose(table["val_score"], table[["fold0", "fold1", "fold2"]].mean(axis=1))
    assert probe.C == Cs[int(np.argmax(table["val_score"]))]
    refit = LinearProbe("multiclass", probe.C, device="cpu").fit(X, y)
    np.testing.assert_allclose(probe.coef_, refit.coef_, atol=1e-6)

    from medprobe.data.splits import group_stratified_split
    folds = group_stratified_split(y, groups, {f"fold{i}": 1 / 3 for i in range(3)}, seed=1)
    assert all(len(set(folds[groups == g])) == 1 for g in np.unique(groups))  # no patient in two folds
    held = folds == "fold1"
    proba = LinearProbe("multiclass", Cs[0], device="cpu").fit(X[~held], y[~held]).predict_proba(X[held])
    assert table["fold1"].iloc[0] == pytest.approx(roc_auc_score(y[held], proba, multi_class="ovr"), abs=2e-3)


def test_cv_select_multilabel_and_fold_errors(data):
    Y = multilabel_from(data["y_train"], 4, seed=7)
    probe, table = cv_select(data["X_train"], Y, "multilabel", Cs=[1e-2, 1.0], n_splits=2, device="cpu")
    assert probe.predict_proba(data["X_test"]).shape == (len(data["X_test"]), 4)
    assert table["selected"].sum() == 1
    rare = Y.copy()
    rare[:, 3] = 0
    rare[0, 3] = 1  # one positive: some fold's training part has none
    with pytest.raises(DataError, match=r"cross-validation fold\d.*finding 3: no positives"):
        cv_select(data["X_train"], rare, "multilabel", Cs=[1.0], n_splits=2, device="cpu")
    with pytest.raises(ConfigError, match="n_splits"):
        cv_select(data["X_train"], data["y_train"], "multiclass", n_splits=1)


def test_select_best_prefers_the_informative_layer(data):
    """select_best over the layers' val-selected probes (the experiment's layer selection)."""
    rng = np.random.default_rng(9)
    train = {"noise": rng.normal(size=data["X_train"].shape), "good": data["X_train"]}
    val = {"noise": rng.normal(size=data["X_val"].shape), "good": data["X_val"]}
    chosen = {layer: select_probe(train[layer], data["y_train"], val[layer], data["y_val"], "multiclass",
                                  Cs=[1e-3, 1e-1], device="cpu") for layer in train}
    scores = {layer: {probe.C: float(table.loc[table["selected"], "val_score"].iloc[0])}
              for layer, (probe, table) in chosen.items()}
    best, C, ties = select_best(scores)
    assert best == "good" and ties == [("good", C)] and C == chosen["good"][0].C
    assert scores["good"][C] > 0.7 > scores["noise"][chosen["noise"][0].C]
    proba = chosen["good"][0].predict_proba(data["X_val"])
    assert scores["good"][C] == pytest.approx(roc_auc_score(data["y_val"], proba, multi_class="ovr"))
    with pytest.raises(DataError, match="at least one layer"):
        select_best({})


def test_select_best_ties_go_to_the_shallowest_layer_and_smallest_C():
    grid = {"l0": {10.0: 0.8, 0.1: 0.9}, "l1": {0.01: 0.9 - 1e-15, 1.0: 0.9}, "l2": {1.0: 0.9 - 1e-3}}
    assert select_best(grid) == ("l0", 0.1, [("l0", 0.1), ("l1", 0.01), ("l1", 1.0)])
    # an exactly higher score wins even when it is within the tolerance of an earlier one
    assert select_best({"a": {1.0: 0.9}, "b": {1.0: 0.9 + 1e-15}}) == ("b", 1.0, [("a", 1.0), ("b", 1.0)])


def test_one_rule_for_the_C_grid():
    from medprobe.c_grid import check_Cs
    from medprobe.config import ProbeConfig

    assert check_Cs([1, 0.01, 0.1]) == (0.01, 0.1, 1.0)
    assert ProbeConfig(Cs=[1, 0.01]).Cs == [0.01, 1.0]
    for bad in ([], [0.1, -1], [0.0], [float("inf")], [float("nan")], [0.1, 0.1]):
        with pytest.raises(ConfigError, match="Cs"):
            check_Cs(bad)
        with pytest.raises(Exception, match="Cs"):
            ProbeConfig(Cs=bad)


# --------------------------------------------------------------------------- input errors
def test_non_finite_features_are_reported_with_rows_and_features(data):
    X = data["X_train"].copy()
    X[7, 4] = np.nan
    X[12, 4] = np.inf
    X[12, 9] = -np.inf
    with pytest.raises(DataError, match=r"2 row\(s\) with NaN or inf values in 2 feature\(s\) \(first: row 7, feature 4\)"):
        LinearProbe("multiclass").fit(X, data["y_train"])
    with pytest.raises(DataError, match="X_train has 2 row"):
        select_probe(X, data["y_train"], data["X_val"], data["y_val"], "multiclass")
    probe = LinearProbe("multiclass", device="cpu").fit(data["X_train"], data["y_train"])
    with pytest.raises(DataError, match="first: row 7"):
        probe.predict_proba(X)


@pytest.mark.parametrize("task,labels,message", [
    ("multilabel", lambda y: y, r"multilabel task must be a 0/1 matrix"),
    ("binary", lambda y: np.eye(4)[y], r"binary task must be a 1-D array"),
    ("binary", lambda y: y, r"labels outside 0\.\.1"),
    ("multiclass", lambda y: np.where(y == 0, -1, y), r"labels outside 0\.\.3.*\[-1\]"),
    ("multiclass", lambda y: np.where(y == 1, 0, y), r"class\(es\) \[1\] of 0\.\.3 have no training samples"),
    ("binary", lambda y: np.zeros_like(y), r"fewer than 2 classes \(only \[0\]\)"),
    ("multiclass", lambda y: np.zeros_like(y), r"fewer than 2 classes"),
    ("multiclass", lambda y: y[:-1], r"499 label rows but the features have 500 rows"),
    ("multiclass", lambda y: y + 0.5, r"non-integer"),
    ("multiclass", lambda y: np.where(y == 0, np.nan, y), r"missing label"),
    ("multilabel", lambda y: np.eye(4, dtype=int)[y] * 2, r"must be 0/1"),
    ("multilabel", lambda y: np.column_stack([np.eye(4, dtype=int)[y], np.ones_like(y)]), r"finding 4: no negatives"),
])
def test_label_errors(data, task, labels, message):
    with pytest.raises(DataError, match=message):
        LinearProbe(task, device="cpu").fit(data["X_train"], labels(data["y_train"]))


def test_multiclass_missing_last_class_needs_n_classes(data):
    y = np.where(data["y_train"] == 3, 2, data["y_train"])
    with pytest.raises(DataError, match=r"class\(es\) \[3\]"):
        LinearProbe("multiclass", n_classes=4, device="cpu").fit(data["X_train"], y)
    with pytest.raises(DataError, match=r"labels outside 0\.\.2"):
        LinearProbe("multiclass", n_classes=3, device="cpu").fit(data["X_train"], data["y_train"])


def test_setting_and_usage_errors(data):
    with pytest.raises(ConfigError, match="unknown task type"):
        LinearProbe("regression").fit(data["X_train"], data["y_train"])
    with pytest.raises(ConfigError, match="dtype"):
        LinearProbe("multiclass", dtype="float16").fit(data["X_train"], data["y_train"])
    with pytest.raises(ConfigError, match="repeated"):
        LinearProbe("multiclass").fit_path(data["X_train"], data["y_train"], [0.1, 0.1])
    with pytest.raises(DataError, match="not fitted"):
        LinearProbe("multiclass").predict_proba(data["X_test"])
    with pytest.raises(DataError, match="2-D array"):
        LinearProbe("multiclass").fit(data["X_train"][:, 0], data["y_train"])
    with pytest.raises(DataError, match="real numbers"):
        LinearProbe("multiclass").fit(data["X_train"].astype(str), data["y_train"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            LinearProbe("multiclass", device="cuda").fit(data["X_train"], data["y_train"])


def test_no_convergence_warnings_at_defaults(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        LinearProbe("multiclass").fit_path(data["X_train"], data["y_train"], [1e-4, 1e-2, 1.0, 100.0])


# --------------------------------------------------------------------------- batched grid, per-head convergence
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_batched_grid_reaches_the_same_optimum_as_the_path(data, task):
    """Every C (and head) fitted at once sharing each pass over X: same optimum as C after C."""
    y = {"binary": (data["y_train"] == 3).astype(int), "multiclass": data["y_train"],
         "multilabel": multilabel_from(data["y_train"], 4, seed=3)}[task]
    Cs = [1e-3, 0.1, 10.0]
    settings = {"dtype": "float64", "device": "cpu"}
    path = LinearProbe(task, **settings).fit_path(data["X_train"], y, Cs)
    batched = LinearProbe(task, grid="batched", **settings).fit_path(data["X_train"], y, Cs)
    Xs, _ = standardised(data)
    kind = "softmax" if task == "multiclass" else "sigmoid"
    for a, b, C in zip(path, batched, Cs):
        assert a.converged_ and b.converged_ and a.C == b.C == C
        ours = objective(a.coef_, a.intercept_, Xs, y, C, kind)
        theirs = objective(b.coef_, b.intercept_, Xs, y, C, kind)
        assert abs(ours - theirs) <= 1e-8 * theirs
        assert np.abs(a.predict_proba(data["X_test"]) - b.predict_proba(data["X_test"])).max() < 1e-5


def test_every_finding_converges_on_its_own_gradient(data):
    """Each head's own max |gradient| (written out here) meets tol -- not only the joint maximum."""
    Y = multilabel_from(data["y_train"], 4, seed=3)
    probe = LinearProbe("multilabel", 1.0, device="cpu").fit(data["X_train"], Y)
    Xs, _ = standardised(data)
    n = len(Xs)
    z = Xs @ probe.coef_.T + probe.intercept_
    residual = 1 / (1 + np.exp(-z)) - Y
    grad_w = residual.T @ Xs / n + probe.coef_ / (probe.C * n)
    grad_b = residual.mean(axis=0)
    per_head = np.maximum(np.abs(grad_w).max(axis=1), np.abs(grad_b))
    assert (per_head <= probe.tol * 1.01).all() and probe.head_converged_.all()
    # the solver's gradients come from float32 products: about 1e-8 absolute at this size
    np.testing.assert_allclose(probe.head_grad_max_, per_head, rtol=1e-2, atol=1e-8)
    assert probe.head_n_iter_.shape == (4,) and probe.n_iter_ == probe.head_n_iter_.max()


def test_a_head_that_does_not_converge_is_named(data):
    Y = multilabel_from(data["y_train"], 4, seed=3)
    names = ["effusion", "edema", "pneumothorax", "nodule"]
    with pytest.warns(ConvergenceWarning, match=r"did not converge for \d of 4 head\(s\).*'(effusion|edema|pneumothorax|nodule)'"):
        probe = LinearProbe("multilabel", 100.0, max_iter=3, device="cpu", head_names=names).fit(data["X_train"], Y)
    assert probe.unconverged_heads_ and set(probe.unconverged_heads_) <= set(names)
    assert probe.unconverged_heads_ == [names[j] for j in np.flatnonzero(~probe.head_converged_)]
    with pytest.raises(ConfigError, match="head_names has 2 name"):
        LinearProbe("multilabel", head_names=["a", "b"], device="cpu").fit(data["X_train"], Y)
    with pytest.raises(ConfigError, match="probe grid must be one of"):
        LinearProbe("binary", grid="parallel").fit(data["X_train"], (data["y_train"] == 0).astype(int))


# --------------------------------------------------------------------------- Newton for small sigmoid problems
@pytest.mark.parametrize("shape", [(500, 30), (40, 300)], ids=["primal n>D", "dual n<D"])
@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_newton_reaches_the_lbfgs_optimum(shape, task):
    """Both solvers stop on each head's own max |gradient| <= tol: same optimum, per head, every C,
    whether the Newton systems are solved in the primal (n >= D + 1) or the dual (n < D + 1)."""
    n, d = shape
    X, y = make_data(n, d, 4, seed=5)
    y = (y == 1).astype(int) if task == "binary" else multilabel_from(y, 4, seed=6)
    Cs = [1e-3, 0.1, 10.0]
    newton = LinearProbe(task, device="cpu", solver="newton").fit_path(X, y, Cs)
    lbfgs = LinearProbe(task, device="cpu", solver="lbfgs").fit_path(X, y, Cs)
    Xs = StandardScaler().fit_transform(X)
    for a, b, C in zip(newton, lbfgs, Cs):
        assert a.converged_ and b.converged_
        assert a.n_iter_ < b.n_iter_  # the point of Newton: fewer iterations
        for k in range(a.coef_.shape[0]):
            column = y if task == "binary" else y[:, k]
            ours = objective(a.coef_[k:k + 1], a.intercept_[k:k + 1], Xs, column, C, "sigmoid")
            theirs = objective(b.coef_[k:k + 1], b.intercept_[k:k + 1], Xs, column, C, "sigmoid")
            assert abs(ours - theirs) <= 1e-6 * theirs, (C, k, ours, theirs)
        # and each head's own gradient, written out here, meets tol
        z = Xs @ a.coef_.T + a.intercept_
        residual = 1 / (1 + np.exp(-z)) - (y[:, None] if task == "binary" else y)
        grad = np.maximum(np.abs(residual.T @ Xs / n + a.coef_ / (C * n)).max(axis=1), np.abs(residual.mean(axis=0)))
        assert (grad <= a.tol * 1.01).all()


def test_solver_choice_and_refusals(data):
    """The default solver (``auto``) takes Newton for small sigmoid problems only; asking for it where it cannot run is an error."""
    small = LinearProbe("binary", device="cpu").fit(data["X_train"], (data["y_train"] == 1).astype(int))
    assert small.n_iter_ < 20
    with pytest.raises(ConfigError, match="solver='newton' needs sigmoid heads"):
        LinearProbe("multiclass", device="cpu", solver="newton").fit(data["X_train"], data["y_train"])
    with pytest.raises(ConfigError, match="probe solver must be one of"):
        LinearProbe("binary", device="cpu", solver="sag").fit(data["X_train"], (data["y_train"] == 1).astype(int))
    from medprobe.probes.newton import newton_applies

    assert newton_applies(60, 384, 1) and newton_applies(500, 384, 1)  # dual; primal
    assert not newton_applies(500, 384, 54)  # 54 Hessians per iteration: L-BFGS
    assert not newton_applies(20_000, 4096, 1) and not newton_applies(2000, 2000, 1)


def test_probe_is_a_scikit_learn_estimator_without_importing_it():
    """clone, get_params/set_params, tags and repr work like a BaseEstimator's; fitting imports
    neither scikit-learn nor torch (a fresh interpreter)."""
    import subprocess
    import sys

    from sklearn.utils import get_tags

    probe = LinearProbe("multilabel", 0.5, tol=1e-5)
    copy = clone(probe)
    assert copy is not probe and copy.get_params() == probe.get_params()
    assert repr(probe) == "LinearProbe(task_type='multilabel', C=0.5, tol=1e-05)"
    assert get_tags(probe).target_tags.required is False
    with pytest.raises(ValueError, match="invalid parameter 'Cee'"):
        probe.set_params(Cee=1)
    code = ("import sys, numpy as np; from medprobe.probes import LinearProbe; "
            "X = np.random.default_rng(0).normal(size=(50, 8)); y = (X[:, 0] > 0).astype(int); "
            "LinearProbe('binary', device='auto').fit(X, y).predict_proba(X); "
            "print(sorted(m for m in ('sklearn', 'torch', 'scipy.stats') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# --------------------------------------------------------------------------- several layers in one solver pass
def _layers(data: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Three 'layers' of the same samples: the data, a rescaled mix of it, and a narrower view."""
    X = data["X_train"]
    mixed = X @ np.random.default_rng(7).normal(size=(X.shape[1], X.shape[1])) * 0.01 + 3.0
    return [X, mixed, X[:, :17]]


@pytest.mark.parametrize("grid", ["path", "batched"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_layers_fitted_in_one_pass_reach_each_layers_own_optimum(data, task, grid):
    """fit_layers_path shares the L-BFGS iterations of every layer (the two of equal width in one
    SharedPassLayers, the narrower one in its own pass) and must answer like fit_path on each layer."""
    y = {"binary": (data["y_train"] == 3).astype(int), "multiclass": data["y_train"],
         "multilabel": multilabel_from(data["y_train"], 4, seed=3)}[task]
    Cs = [1e-3, 0.1, 10.0]
    template = LinearProbe(task, dtype="float64", device="cpu", solver="lbfgs", grid=grid)
    layers = _layers(data)
    together = template.fit_layers_path(layers, y, Cs)
    kind = "softmax" if task == "multiclass" else "sigmoid"
    assert [len(row) for row in together] == [3, 3, 3]
    for X, stacked in zip(layers, together):
        alone = template.fit_path(X, y, Cs)
        Xs = StandardScaler().fit_transform(X)
        for a, b, C in zip(alone, stacked, Cs):
            assert a.converged_ and b.converged_ and a.C == b.C == C
            np.testing.assert_array_equal(a.mean_, b.mean_)  # each layer its own standardiser
            np.testing.assert_array_equal(a.scale_, b.scale_)
            ours = objective(b.coef_, b.intercept_, Xs, y, C, kind)
            theirs = objective(a.coef_, a.intercept_, Xs, y, C, kind)
            assert abs(ours - theirs) <= 1e-8 * theirs
            assert np.abs(a.predict_proba(data["X_test"][:, :X.shape[1]] if X.shape[1] < 30 else data["X_test"])
                          - b.predict_proba(data["X_test"][:, :X.shape[1]] if X.shape[1] < 30 else data["X_test"])
                          ).max() < 1e-5


def test_shared_pass_layers_products_and_sketches_are_each_layers_own():
    """The pieces the shared pass is built from: SharedPassLayers' products are each layer's products,
    column for column, and its preconditioner holds each layer's own sketch, bit for bit."""
    from medprobe.probes.preconditioner import Preconditioner
    from medprobe.probes.products import FeatureProducts, SharedPassLayers

    rng = np.random.default_rng(2)
    layers = [rng.normal(size=(120, 40)) * (1 + k) for k in range(3)]
    parts = [FeatureProducts(X) for X in layers]
    stack = SharedPassLayers(parts)
    M, R = rng.normal(size=(40, 6)), rng.normal(size=(120, 6))
    column_layer = np.array([2, 0, 0, 1, 2, 2])
    product, transposed = stack.times(M, column_layer), stack.transposed_times(R, column_layer)
    for j, layer in enumerate(column_layer):
        np.testing.assert_allclose(product[:, j], layers[layer] @ M[:, j], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(transposed[j], R[:, j] @ layers[layer], rtol=1e-12, atol=1e-12)
    together = Preconditioner(stack, max_rank=10)
    for number, part in enumerate(parts):
        alone = Preconditioner(part, max_rank=10)
        np.testing.assert_array_equal(together.eigenvalues[number], alone.eigenvalues[0])
        np.testing.assert_array_equal(together.vectors[number], alone.vectors[0])
    vector = rng.normal(size=(3, 1, 41))
    l2, curvature = np.full(3, 1e-3), np.full(3, 0.25)
    applied = together.apply(vector, together.factors(l2, curvature, np.array([1, 0, 2])))
    for row, layer in enumerate([1, 0, 2]):
        alone = Preconditioner(parts[layer], max_rank=10)
        np.testing.assert_allclose(applied[row], alone.apply(vector[row:row + 1], alone.factors(l2[:1], curvature[:1]))[0],
                                   rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="equal shapes"):
        SharedPassLayers([parts[0], FeatureProducts(layers[0][:, :30])])


def test_shared_pass_layers_on_torch_tensors_reach_the_numpy_optimum():
    """The GPU code path (torch tensors in every layer's FeatureProducts), run here on CPU tensors:
    one solver pass over a stack of float32 layers reaches the NumPy float64 optimum per layer."""
    from medprobe.probes.lbfgs import solve
    from medprobe.probes.objective import BatchObjective
    from medprobe.probes.preconditioner import Preconditioner
    from medprobe.probes.products import FeatureProducts, SharedPassLayers

    rng = np.random.default_rng(3)
    n, d, heads = 200, 24, 3
    layers = [rng.normal(size=(n, d)).astype(np.float32) for _ in range(3)]
    targets = (layers[0][:, :heads] + rng.normal(size=(n, heads)) > 0.5).astype(np.float64)

    def fit(parts):
        stack = SharedPassLayers(parts)
        head, layer = np.tile(np.arange(heads), 3), np.repeat(np.arange(3), heads)
        rate = targets.mean(axis=0)
        theta0 = np.zeros((3 * heads, 1, d + 1))
        theta0[:, 0, -1] = np.tile(np.log(rate / (1 - rate)), 3)
        return solve(BatchObjective(stack, targets, False), Preconditioner(stack), theta0, np.full(3 * heads, 1 / n),
                     head, np.tile(rate * (1 - rate), 3), 1000, 1e-7, 20, 1e-11, layer)

    exact = fit([FeatureProducts(X.astype(np.float64)) for X in layers])
    on_torch = fit([FeatureProducts(torch.from_numpy(X)) for X in layers])
    assert all(reason == "converged" for reason in exact.stop + on_torch.stop)
    assert (on_torch.grad_max <= 1e-7).all()
    np.testing.assert_allclose(on_torch.loss, exact.loss, rtol=1e-9)


def test_fit_layers_path_with_newton_fits_each_layer_alone(data):
    """Where Newton's method is chosen (small sigmoid problems on the CPU) every layer is its own
    pass: the probes are bit for bit those of fit_path."""
    y = multilabel_from(data["y_train"], 4, seed=3)
    layers = _layers(data)[:2]
    template = LinearProbe("multilabel", device="cpu", solver="newton")
    for X, stacked in zip(layers, template.fit_layers_path(layers, y, [0.01, 1.0])):
        for a, b in zip(template.fit_path(X, y, [0.01, 1.0]), stacked):
            assert a.coef_.tobytes() == b.coef_.tobytes() and a.intercept_.tobytes() == b.intercept_.tobytes()
    with pytest.raises(DataError, match=r"X_layers\[1\] has 499 rows but X_layers\[0\] has 500"):
        template.fit_layers_path([layers[0], layers[1][:-1]], y, [1.0])
    with pytest.raises(ConfigError, match="at least one layer"):
        template.fit_layers_path([], y, [1.0])


@pytest.mark.parametrize("softmax", [False, True], ids=["sigmoid", "softmax"])
@pytest.mark.parametrize("exact", [False, True], ids=["feature dtype", "float64 finish"])
def test_objective_on_torch_features_equals_the_numpy_objective(softmax, exact, monkeypatch):
    """The GPU objective keeps logits, losses and residuals on the device (here torch CPU tensors)
    and must give the host objective's losses and gradients: one layer and a stack, float32
    features, products in float32 or (the float64 finish, from a float64 copy or over row blocks)
    in float64."""
    from medprobe.probes import products
    from medprobe.probes.objective import BatchObjective
    from medprobe.probes.products import FeatureProducts, SharedPassLayers

    rng = np.random.default_rng(5)
    n, d, classes = 150, 20, 3
    layers = [rng.normal(size=(n, d)).astype(np.float32) for _ in range(2)]
    targets = np.eye(classes)[rng.integers(0, classes, n)]
    outputs = classes if softmax else 1
    for block_rows in (None, 64):  # None: the float64 copy; 64 rows: block by block
        if block_rows:
            monkeypatch.setattr(products, "_EXACT_COPY_BYTES", 0)
            monkeypatch.setattr(products, "_BLOCK_ELEMENTS", block_rows * d)
        host = [FeatureProducts(X, exact=exact) for X in layers]
        device = [FeatureProducts(torch.from_numpy(X), exact=exact) for X in layers]
        for parts in ([0], [0, 1]):
            ours = BatchObjective(SharedPassLayers([device[i] for i in parts]), targets, softmax)
            reference = BatchObjective(SharedPassLayers([host[i] for i in parts]), targets, softmax)
            problems = 4 * len(parts)
            theta = rng.normal(scale=0.3, size=(problems, outputs, d + 1))
            l2, head = np.full(problems, 0.01), rng.integers(0, classes, problems)
            layer = np.repeat(np.arange(len(parts)), 4)
            loss, grad = ours(theta, l2, head, layer)
            expected_loss, expected_grad = reference(theta, l2, head, layer)
            tolerance = 1e-12 if exact else 1e-6  # float32 products: two BLAS libraries' roundings
            np.testing.assert_allclose(loss, expected_loss, rtol=tolerance)
            np.testing.assert_allclose(grad, expected_grad, rtol=tolerance, atol=tolerance * np.abs(expected_grad).max())
