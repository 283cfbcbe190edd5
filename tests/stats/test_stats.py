"""Metrics and bootstrap: every number is checked against scikit-learn / numpy on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, roc_auc_score

import medprobe.stats.bootstrap as bootstrap_module
from medprobe.errors import ConfigError, DataError
from medprobe.stats import (
    bootstrap_indices,
    bootstrap_metrics,
    compute_metrics,
    metric_names,
    per_group_metrics,
    resample_counts,
    summarise,
)

TOL = 1e-12


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def make_task(task_type: str, n: int = 150, seed: int = 0, decimals: int | None = 2,
              rare: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Informative but imperfect scores; rounding to ``decimals`` creates many tied scores.
    ``rare`` gives the last class only that many positive samples."""
    rng = np.random.default_rng(seed)
    if task_type == "multilabel":
        classes = ["effusion", "nodule", "edema", "cardiomegaly"]
        y = (rng.random((n, len(classes))) < [0.5, 0.3, 0.2, 0.4]).astype(int)
        if rare is not None:
            y[:, -1] = 0
            y[rng.choice(n, rare, replace=False), -1] = 1
        scores = 1 / (1 + np.exp(-(rng.normal(0, 1.2, y.shape) + 1.5 * (y - 0.5))))
    else:
        classes = ["neg", "pos"] if task_type == "binary" else ["adipose", "debris", "lymph", "tumor"]
        y = rng.integers(0, len(classes), n)
        if rare is not None:
            y[y == len(classes) - 1] = 0
            y[rng.choice(n, rare, replace=False)] = len(classes) - 1
        logits = rng.normal(0, 1, (n, len(classes)))
        logits[np.arange(n), y] += 1.2
        scores = softmax(logits)
    if decimals is not None:
        scores = np.round(scores, decimals)
    return y, scores, classes


def sklearn_metrics(y: np.ndarray, scores: np.ndarray, task_type: str, classes: list[str],
                    f1_classes: np.ndarray | None = None) -> dict[str, float]:
    """The reference: scikit-learn on the rows as given (NaN where it refuses an AUC or an F1).

    ``f1_classes`` (bool per class): the class set macro F1 averages over, when it is not the one
    of these rows (a bootstrap replicate keeps the point estimate's set); NaN if one of them has
    no F1 on these rows."""

    def auc(labels: np.ndarray, column: np.ndarray) -> float:
        if labels.min() == labels.max():  # roc_auc_score raises: only one class present
            return float("nan")
        return roc_auc_score(labels, column)

    out: dict[str, float] = {}
    labels = list(range(len(classes)))
    if task_type == "multilabel":
        per_class = [auc(y[:, k], scores[:, k]) for k in range(len(classes))]
        predicted = (scores > 0.5).astype(int)
        out["f1_macro"] = f1_score(y, predicted, average="macro", zero_division=np.nan)
        per_class_f1 = f1_score(y, predicted, average=None, zero_division=np.nan)
        out["accuracy"] = 1 - hamming_loss(y, predicted)
        out["exact_match"] = accuracy_score(y, predicted)
    else:
        per_class = [auc((y == k).astype(int), scores[:, k]) for k in range(len(classes))]
        predicted = scores.argmax(axis=1)
        out["f1_macro"] = f1_score(y, predicted, average="macro")
        per_class_f1 = f1_score(y, predicted, labels=labels, average=None, zero_division=np.nan)
        out["accuracy"] = accuracy_score(y, predicted)
    for name, value in zip(classes, per_class_f1):
        out[f"f1[{name}]"] = float(value)
    if f1_classes is not None:
        out["f1_macro"] = float(np.mean(per_class_f1[f1_classes]))  # NaN if one of them is undefined
    for name, value in zip(classes, per_class):
        out[f"auc[{name}]"] = value
    out["auc_macro"] = float(np.mean(per_class))
    out["auc"] = per_class[1] if task_type == "binary" else out["auc_macro"]
    return out


@pytest.mark.parametrize("task_type", ["binary", "multiclass", "multilabel"])
def test_point_metrics_match_sklearn(task_type: str) -> None:
    y, scores, classes = make_task(task_type, n=300)
    ours = compute_metrics(y, scores, task_type, classes)
    reference = sklearn_metrics(y, scores, task_type, classes)
    assert list(ours) == metric_names(task_type, classes)
    assert set(ours) == set(reference)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=TOL), name


def test_binary_auc_is_positive_class_auc() -> None:
    y, scores, classes = make_task("binary", n=200, decimals=None)
    ours = compute_metrics(y, scores, "binary", classes)
    assert ours["auc"] == pytest.approx(roc_auc_score(y, scores[:, 1]), abs=TOL)
    # with probabilities summing to 1, the negative class's one-vs-rest AUC is the same number
    assert ours["auc[neg]"] == pytest.approx(ours["auc"], abs=TOL)


def test_macro_auc_matches_sklearn_one_vs_rest() -> None:
    """Unrounded softmax scores (rows sum to 1), so sklearn's multiclass OvR macro AUC applies."""
    y, scores, classes = make_task("multiclass", n=400, decimals=None)
    ours = compute_metrics(y, scores, "multiclass", classes)
    assert ours["auc_macro"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr", average="macro"), abs=TOL)
    assert ours["auc"] == ours["auc_macro"]


def test_multilabel_macro_auc_matches_sklearn() -> None:
    y, scores, classes = make_task("multilabel", n=250)
    ours = compute_metrics(y, scores, "multilabel", classes)
    assert ours["auc_macro"] == pytest.approx(roc_auc_score(y, scores, average="macro"), abs=TOL)


def test_auc_with_all_scores_tied_is_one_half() -> None:
    y = np.array([0, 1, 0, 1, 1])
    scores = np.full((5, 2), 0.5)
    assert compute_metrics(y, scores, "binary", ["a", "b"])["auc"] == 0.5


def test_undefined_auc_raises_naming_the_class() -> None:
    y, scores, classes = make_task("multiclass", n=60)
    y[y == 2] = 0  # class "lymph" has no positive sample
    with pytest.raises(DataError, match=r"class 'lymph'.*0 positive"):
        compute_metrics(y, scores, "multiclass", classes)
    relaxed = compute_metrics(y, scores, "multiclass", classes, undefined="nan")
    assert np.isnan(relaxed["auc[lymph]"]) and np.isnan(relaxed["auc_macro"])
    assert np.isfinite(relaxed["auc[tumor]"]) and np.isfinite(relaxed["f1_macro"])
    # metrics that do not need the missing class's AUC are still computed without error
    assert compute_metrics(y, scores, "multiclass", classes, metrics=["accuracy", "auc[tumor]"])["accuracy"] > 0


def test_multilabel_finding_without_negatives_raises() -> None:
    y, scores, classes = make_task("multilabel", n=40)
    y[:, 1] = 1
    with pytest.raises(DataError, match=r"class 'nodule'.*0 negative"):
        compute_metrics(y, scores, "multilabel", classes)


@pytest.mark.parametrize(("y", "scores", "task_type", "classes", "message"), [
    (np.array([0, 1, 1]), np.ones((3, 3)) / 3, "binary", ["a", "b", "c"], "exactly 2 classes"),
    (np.array([0, 1]), np.ones((3, 2)) / 2, "binary", ["a", "b"], r"shape \(3,\)"),
    (np.array([0, 3, 1]), np.ones((3, 3)) / 3, "multiclass", ["a", "b", "c"], "sample 1 is 3"),
    (np.array([0, 0.5, 1]), np.ones((3, 2)) / 2, "binary", ["a", "b"], "non-integer"),
    (np.array([0, 1, 1]), np.array([[0.5, 0.5], [np.nan, 1], [0, 1]]), "binary", ["a", "b"], "sample 1.*'a'"),
    (np.array([[0, 2], [1, 0]]), np.ones((2, 2)) / 2, "multilabel", ["a", "b"], "0/1"),
    (np.array([], dtype=int), np.zeros((0, 2)), "binary", ["a", "b"], "empty"),
])
def test_invalid_inputs_raise_data_error(y, scores, task_type, classes, message) -> None:
    with pytest.raises(DataError, match=message):
        compute_metrics(y, scores, task_type, classes)


def test_unknown_metric_or_task_type_is_a_config_error() -> None:
    y, scores, classes = make_task("binary", n=20)
    with pytest.raises(ConfigError, match="auc_micro"):
        compute_metrics(y, scores, "binary", classes, metrics=["auc_micro"])
    with pytest.raises(ConfigError, match="regression"):
        compute_metrics(y, scores, "regression", classes)


def test_integer_valued_float_labels_are_accepted() -> None:
    y, scores, classes = make_task("multiclass", n=80)
    assert compute_metrics(y.astype(float), scores, "multiclass", classes) == \
        compute_metrics(y, scores, "multiclass", classes)


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_indices_shape_determinism_and_range() -> None:
    a = bootstrap_indices(50, 200, seed=3)
    assert a.shape == (200, 50) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() <= 49
    assert np.array_equal(a, bootstrap_indices(50, 200, seed=3))
    assert not np.array_equal(a, bootstrap_indices(50, 200, seed=4))


def test_plain_resampling_varies_class_counts_stratified_keeps_them() -> None:
    labels = np.array([0] * 30 + [1] * 15 + [2] * 5)
    plain = bootstrap_indices(labels.size, 300, seed=0)
    plain_counts = np.array([np.bincount(labels[row], minlength=3) for row in plain])
    assert plain_counts[:, 2].min() < 5 < plain_counts[:, 2].max()
    stratified = bootstrap_indices(labels.size, 300, seed=0, strata=labels)
    for row in stratified:
        assert np.array_equal(np.bincount(labels[row], minlength=3), [30, 15, 5])
        # each position is refilled from its own stratum
        assert np.array_equal(labels[row], labels)
    # the draws within a stratum are random, not the identity
    assert len({tuple(row[45:]) for row in stratified}) > 100


def test_bootstrap_indices_reject_bad_arguments() -> None:
    with pytest.raises(DataError):
        bootstrap_indices(0)
    with pytest.raises(ConfigError):
        bootstrap_indices(10, 0)
    with pytest.raises(DataError, match="one entry per sample"):
        bootstrap_indices(10, 5, strata=np.zeros(9))


def test_resample_counts_match_bincount_per_row() -> None:
    indices = bootstrap_indices(37, 25, seed=1)
    counts = resample_counts(indices, 37)
    assert counts.shape == (25, 37)
    for row, drawn in zip(counts, indices):
        assert np.array_equal(row, np.bincount(drawn, minlength=37))


def point_f1_classes(y: np.ndarray, scores: np.ndarray, task_type: str, n_classes: int) -> np.ndarray:
    """Classes present in the labels or the predictions of the full sample: macro F1's class set."""
    if task_type == "multilabel":
        return (y == 1).any(axis=0) | (scores > 0.5).any(axis=0)
    return np.isin(np.arange(n_classes), y) | np.isin(np.arange(n_classes), scores.argmax(axis=1))


def test_macro_f1_keeps_the_point_estimates_class_set_in_replicates() -> None:
    """A replicate that draws no sample of a class (present and predicted in the full test set)
    has no macro F1, rather than a mean over the other classes."""
    y, scores, classes = make_task("multiclass", n=60, seed=1, rare=1)
    rare = len(classes) - 1
    scores[y != rare, rare] = 0.0  # only the rare sample predicts the rare class
    scores[y == rare] = np.eye(len(classes))[rare]
    indices = bootstrap_indices(len(y), 200, seed=0)
    ours = bootstrap_metrics(y, scores, "multiclass", classes, indices, metrics=["f1_macro", "f1[tumor]"])
    drew_rare = (y[indices] == rare).any(axis=1)
    assert 0 < (~drew_rare).sum() < 200
    assert np.isnan(ours["f1_macro"][~drew_rare]).all() and np.isnan(ours["f1[tumor]"][~drew_rare]).all()
    for r in np.flatnonzero(drew_rare):
        rows = indices[r]
        expected = f1_score(y[rows], scores[rows].argmax(1), labels=range(len(classes)), average="macro")
        assert ours["f1_macro"][r] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("task_type", ["binary", "multiclass", "multilabel"])
def test_bootstrap_replicates_equal_sklearn_loop(task_type: str) -> None:
    """Tied scores and a rare class (3 positives), so some replicates miss it: those must be
    NaN exactly where scikit-learn refuses the AUC, and equal to it everywhere else."""
    y, scores, classes = make_task(task_type, n=120, seed=5, rare=3)
    indices = bootstrap_indices(len(y), 60, seed=11)
    ours = bootstrap_metrics(y, scores, task_type, classes, indices)
    assert set(ours) == set(metric_names(task_type, classes))
    rare = f"auc[{classes[-1]}]"
    assert 0 < np.isnan(ours[rare]).sum() < 60
    f1_classes = point_f1_classes(y, scores, task_type, len(classes))
    for r, rows in enumerate(indices):
        reference = sklearn_metrics(y[rows], scores[rows], task_type, classes, f1_classes)
        for name, value in reference.items():
            if np.isnan(value):
                assert np.isnan(ours[name][r]), (r, name)
            else:
                assert ours[name][r] == pytest.approx(value, abs=TOL), (r, name)


def test_bootstrap_blocks_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    y, scores, classes = make_task("multiclass", n=90, seed=2)
    indices = bootstrap_indices(len(y), 50, seed=0)
    whole = bootstrap_metrics(y, scores, "multiclass", classes, indices)
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 7 * len(y))  # 8 blocks, the last one short
    blocked = bootstrap_metrics(y, scores, "multiclass", classes, indices)
    for name in whole:
        np.testing.assert_array_equal(whole[name], blocked[name])


def test_bootstrap_metrics_subset_and_resample_size() -> None:
    """``metrics`` limits the output; replicates may draw a different number of rows than n."""
    y, scores, classes = make_task("binary", n=80, seed=4)
    indices = np.random.default_rng(0).integers(0, 80, size=(20, 40))
    ours = bootstrap_metrics(y, scores, "binary", classes, indices, metrics=["auc", "accuracy"])
    assert list(ours) == ["auc", "accuracy"]
    for r, rows in enumerate(indices):
        assert ours["auc"][r] == pytest.approx(roc_auc_score(y[rows], scores[rows, 1]), abs=TOL)


def test_bootstrap_rejects_out_of_range_indices() -> None:
    y, scores, classes = make_task("binary", n=10)
    with pytest.raises(DataError, match=r"0\.\.9"):
        bootstrap_metrics(y, scores, "binary", classes, np.array([[0, 10]]))
    with pytest.raises(DataError, match="2-D integer"):
        bootstrap_metrics(y, scores, "binary", classes, np.array([0.0, 1.0]))


def test_summarise_percentile_ci_sd_and_dropped_replicates() -> None:
    values = np.random.default_rng(0).normal(0.8, 0.02, 500)
    values[[3, 70]] = np.nan
    summary = summarise(0.81, values)
    finite = values[np.isfinite(values)]
    assert summary["value"] == 0.81
    assert summary["n_dropped"] == 2
    assert summary["sd"] == pytest.approx(np.std(finite, ddof=1), abs=TOL)
    assert summary["ci_low"] == pytest.approx(np.percentile(finite, 2.5), abs=TOL)
    assert summary["ci_high"] == pytest.approx(np.percentile(finite, 97.5), abs=TOL)
    narrower = summarise(0.81, values, level=0.5)
    assert summary["ci_low"] < narrower["ci_low"] < narrower["ci_high"] < summary["ci_high"]
    empty = summarise(0.5, np.full(10, np.nan))
    assert empty["n_dropped"] == 10 and np.isnan(empty["sd"]) and np.isnan(empty["ci_low"])


def test_bootstrap_ci_covers_point_estimate_on_realistic_data() -> None:
    y, scores, classes = make_task("multiclass", n=300, seed=8)
    indices = bootstrap_indices(len(y), 200, seed=0)
    point = compute_metrics(y, scores, "multiclass", classes)
    replicates = bootstrap_metrics(y, scores, "multiclass", classes, indices)
    for name in point:
        summary = summarise(point[name], replicates[name])
        assert summary["ci_low"] < point[name] < summary["ci_high"], name
        assert 0 < summary["sd"] < 0.1


# ------------------------------------------------------------------ groups


def test_per_group_metrics_equal_metrics_of_each_subset() -> None:
    y, scores, classes = make_task("multiclass", n=200, seed=9)
    organs = np.array(["colon", "lung", "breast"])[np.random.default_rng(0).integers(0, 3, len(y))]
    organs[(organs == "lung") & (y == 3)] = "colon"  # no "tumor" sample in lung: undefined AUC there
    rows = per_group_metrics(y, scores, organs, "multiclass", classes)
    assert [r["group"] for r in rows[::len(metric_names("multiclass", classes))]] == ["breast", "colon", "lung"]
    for row in rows:
        members = organs == row["group"]
        assert row["n"] == members.sum()
        expected = compute_metrics(y[members], scores[members], "multiclass", classes, undefined="nan")[row["metric"]]
        if np.isnan(expected):
            assert row["group"] == "lung" and np.isnan(row["value"])
        else:
            assert row["value"] == expected


def test_per_group_metrics_with_bootstrap_and_missing_group() -> None:
    y, scores, classes = make_task("binary", n=120, seed=3)
    groups = np.where(np.arange(120) < 60, "siteA", "siteB")
    rows = per_group_metrics(y, scores, groups, "binary", classes, metrics=["auc"], n_replicates=100, seed=1)
    assert [r["group"] for r in rows] == ["siteA", "siteB"]
    for row in rows:
        assert row["ci_low"] < row["value"] < row["ci_high"] and row["sd"] > 0
    missing = groups.astype(object)
    missing[5] = None
    with pytest.raises(DataError, match="sample 5 has no group"):
        per_group_metrics(y, scores, missing, "binary", classes)
