"""Grouped, stratified splits: no patient leaks, fractions hold, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medprobe.data.splits import carve_validation, group_stratified_split, subsample_train
from medprobe.errors import DataError


def random_cohort(seed: int, n: int = 600, n_classes: int = 4, max_per_group: int = 6):
    """Patients with 1..max_per_group images; labels mostly follow the patient (as in real data)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_per_group + 1, size=n)
    sizes = sizes[np.cumsum(sizes) <= n]
    groups = np.repeat([f"p{i}" for i in range(len(sizes))], sizes)
    weights = np.linspace(1, 3, n_classes)
    patient_class = rng.choice(n_classes, size=len(sizes), p=weights / weights.sum())
    labels = np.repeat(patient_class, sizes)
    flip = rng.random(len(labels)) < 0.2
    labels[flip] = rng.integers(0, n_classes, flip.sum())
    order = rng.permutation(len(labels))
    return labels[order], groups[order]


def groups_in_one_split(splits: np.ndarray, groups: np.ndarray) -> bool:
    return bool((pd.DataFrame({"s": splits, "g": groups}).groupby("g")["s"].nunique() == 1).all())


@pytest.mark.parametrize("seed", range(25))
def test_no_group_in_two_splits_random_cohorts(seed: int) -> None:
    labels, groups = random_cohort(seed, n=int(np.random.default_rng(seed).integers(60, 900)))
    splits = group_stratified_split(labels, groups, seed=seed)
    assert groups_in_one_split(splits, groups)
    assert set(splits) == {"train", "val", "test"}


@pytest.mark.parametrize("seed", range(5))
def test_fractions_and_class_shares_within_tolerance(seed: int) -> None:
    labels, groups = random_cohort(seed, n=3000)
    splits = group_stratified_split(labels, groups, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=seed)
    for name, share in {"train": 0.7, "val": 0.1, "test": 0.2}.items():
        assert abs(np.mean(splits == name) - share) < 0.02
        for k in np.unique(labels):
            in_class = labels == k
            assert abs(np.mean(splits[in_class] == name) - share) < 0.04, (name, k)


def test_singletons_when_groups_missing_and_exact_counts() -> None:
    labels = np.repeat([0, 1], [80, 20])
    splits = group_stratified_split(labels, None, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    # With one sample per group the greedy rule meets each class share exactly.
    for k, n in ((0, 80), (1, 20)):
        counts = pd.Series(splits[labels == k]).value_counts()
        assert counts.to_dict() == {"train": 0.7 * n, "test": 0.2 * n, "val": 0.1 * n}
    # None / NaN groups behave like singletons, real ids stay together.
    groups = np.array([None, np.nan] * 50, dtype=object)
    groups[:10] = "patient-a"
    splits = group_stratified_split(labels, groups, seed=1)
    assert len(set(splits[:10])) == 1
    assert len(set(splits[10:])) == 3


def test_deterministic_per_seed_and_seed_matters() -> None:
    labels, groups = random_cohort(7, n=800)
    first = group_stratified_split(labels, groups, seed=11)
    assert np.array_equal(first, group_stratified_split(labels, groups, seed=11))
    assert not np.array_equal(first, group_stratified_split(labels, groups, seed=12))


def test_every_class_present_in_every_split_when_classes_have_enough_groups() -> None:
    labels, groups = random_cohort(2, n=2000, n_classes=6)
    splits = group_stratified_split(labels, groups, seed=0)
    for name in ("train", "val", "test"):
        assert set(labels[splits == name]) == set(labels)


def test_multilabel_rare_label_spread_over_splits() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    matrix = (rng.random((n, 5)) < [0.5, 0.2, 0.05, 0.02, 0.0]).astype(int)
    groups = rng.integers(0, 700, n).astype(str)
    splits = group_stratified_split(matrix, groups, seed=4)
    assert groups_in_one_split(splits, groups)
    for k in range(4):
        positives = matrix[:, k] == 1
        share = np.mean(splits[positives] == "test")
        assert abs(share - 0.2) < 0.08, (k, share)
    assert abs(np.mean(splits == "train") - 0.7) < 0.03


def test_too_few_groups_and_bad_fractions_are_errors() -> None:
    with pytest.raises(DataError, match="cannot split 2 group"):
        group_stratified_split([0, 1, 0, 1], ["a", "a", "b", "b"])
    with pytest.raises(DataError, match="sum to 1"):
        group_stratified_split([0, 1], None, {"train": 0.5, "test": 0.6})
    with pytest.raises(DataError, match="groups"):
        group_stratified_split([0, 1, 1], ["a", "b"])


def test_allow_empty_only_matters_when_groups_are_too_few() -> None:
    labels, groups = random_cohort(4, n=400)
    np.testing.assert_array_equal(
        group_stratified_split(labels, groups, seed=3),
        group_stratified_split(labels, groups, seed=3, allow_empty=True),
    )
    tiny_labels, tiny_groups = [0, 1, 0, 1], np.array(["a", "a", "b", "b"])
    splits = group_stratified_split(tiny_labels, tiny_groups, seed=0, allow_empty=True)
    assert groups_in_one_split(splits, tiny_groups)
    assert set(splits) <= {"train", "val", "test"} and len(set(splits)) <= 2

def test_tiny_split_is_never_left_empty() -> None:
    # Three equal groups and a 2% split: by lag alone the third group goes to train or test
    # (each lags 9.4 samples vs 1.2 for val), so val must be filled from the largest split.
    labels = np.zeros(60, dtype=int)
    groups = np.repeat(["a", "b", "c"], 20)
    splits = group_stratified_split(labels, groups, {"train": 0.49, "val": 0.02, "test": 0.49}, seed=0)
    assert sorted(pd.Series(splits).value_counts().tolist()) == [20, 20, 20]
    assert groups_in_one_split(splits, groups)


def test_carve_validation_only_touches_train() -> None:
    labels, groups = random_cohort(5, n=1500)
    base = group_stratified_split(labels, groups, {"train": 0.8, "test": 0.2}, seed=0)
    carved = carve_validation(base, labels, groups, fraction=0.1, seed=0)
    assert np.array_equal(carved[base == "test"], base[base == "test"])
    assert set(carved[base == "train"]) == {"train", "val"}
    assert abs(np.mean(carved[base == "train"] == "val") - 0.1) < 0.02
    assert groups_in_one_split(carved, groups)
    with pytest.raises(DataError, match="already has a 'val'"):
        carve_validation(carved, labels, groups)


def test_carve_validation_accepts_multilabel_and_none_groups() -> None:
    rng = np.random.default_rng(1)
    matrix = (rng.random((300, 3)) < 0.3).astype(int)
    splits = np.array(["train"] * 250 + ["test"] * 50, dtype=object)
    groups = np.array([None] * 300, dtype=object)
    carved = carve_validation(splits, matrix, groups, fraction=0.2, seed=2)
    assert np.sum(carved == "val") == pytest.approx(50, abs=5)


def test_subsample_train_groups_strata_and_rounding() -> None:
    labels, groups = random_cohort(3, n=2000)
    indices = np.arange(100, 100 + len(labels))
    kept = subsample_train(indices, labels, groups, 0.25, seed=0)
    mask = np.isin(indices, kept)
    assert abs(mask.mean() - 0.25) < 0.02
    for k in np.unique(labels):
        assert abs(mask[labels == k].mean() - 0.25) < 0.05
    kept_groups, dropped_groups = set(groups[mask]), set(groups[~mask])
    assert not kept_groups & dropped_groups
    assert np.array_equal(kept, np.sort(kept))
    assert np.array_equal(kept, subsample_train(indices, labels, groups, 0.25, seed=0))
    assert not np.array_equal(kept, subsample_train(indices, labels, groups, 0.25, seed=1))
    assert np.array_equal(subsample_train(indices, labels, groups, 1.0, seed=0), indices)


def test_subsample_train_keeps_every_class_at_tiny_fractions() -> None:
    labels = np.repeat([0, 1, 2], [500, 40, 3])
    groups = np.arange(len(labels)).astype(str)
    kept = subsample_train(np.arange(len(labels)), labels, groups, 0.01, seed=5)
    assert set(labels[kept]) == {0, 1, 2}
    assert len(kept) <= round(0.01 * len(labels)) + 3


def test_subsample_train_rejects_misaligned_inputs() -> None:
    with pytest.raises(DataError, match="aligned|entries"):
        subsample_train(np.arange(3), [0, 1, 0, 1], None, 0.5, seed=0)
    with pytest.raises(DataError, match="fraction"):
        subsample_train(np.arange(4), [0, 1, 0, 1], None, 0.0, seed=0)


def test_subsample_train_multilabel_keeps_rare_labels() -> None:
    rng = np.random.default_rng(8)
    matrix = (rng.random((1000, 4)) < [0.4, 0.1, 0.01, 0.003]).astype(int)
    groups = rng.integers(0, 400, 1000)
    kept = subsample_train(np.arange(1000), matrix, groups, 0.05, seed=0)
    assert matrix[kept].any(axis=0)[matrix.any(axis=0)].all()
    assert not set(groups[kept]) & set(groups[np.setdiff1d(np.arange(1000), kept)])
    assert 0.03 < len(kept) / 1000 < 0.09
