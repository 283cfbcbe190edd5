"""Patient-level (grouped), class-stratified splits.

Why a custom splitter: the study's results hinge on no patient (or lesion) appearing in both the
data a probe is fitted on and the data it is scored on, while every class keeps roughly its share
in each split. ``sklearn``'s ``StratifiedGroupKFold`` only gives equal folds and no multi-label
support, so the splits here use one greedy assignment that handles all three label kinds:

* single-label: ``labels`` is a 1-D array of class ids (any hashable values);
* multi-label: ``labels`` is a 2-D 0/1 indicator matrix ``(n_samples, n_classes)``;
* ``groups`` holds a patient id per sample; ``None`` (or NaN) means "a group of its own".

The greedy assignment (after Sechidis et al.'s iterative stratification, at group level):
groups are visited rarest-label first (a group's rarity is that of its rarest class; ties: larger
groups first, then a seeded random order). Each group goes to the split whose count of that rarest
class lags furthest behind its target ``fraction * class total``; ties go to the split lagging
most in sample count, then to a seeded random pick. Visiting rare classes first places them while
every split still has room for them; the common classes that follow even out the sample counts.
Result: whole groups only, class shares close to the requested fractions whenever the classes
have enough groups, and the same output for the same seed.

Adapters of sources without splits of their own call :func:`assign_splits` (train/val/test
fractions as a 3-tuple), a thin adapter over :func:`group_stratified_split`, the project's one
split rule; :func:`stratified_subsample` keeps a class-proportional subset of a large split.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import SPLITS
from medprobe.errors import ConfigError, DataError

# Folder / manifest spellings of the three split names.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}
#: the same shares as the (train, val, test) tuple that :func:`assign_splits` and the adapters take
DEFAULT_TRAIN_VAL_TEST: tuple[float, ...] = tuple(DEFAULT_FRACTIONS[split] for split in SPLITS)
#: the run-file option that sizes splits an adapter carves (image folders and manifests without splits)
CARVED_SPLITS_OPTION = "data.options.fractions (the [train, val, test] shares of the carve)"
#: the run-file option that sizes a validation split the run carves from train
CARVED_VALIDATION_OPTION = "probe.val_fraction (the share of train carved for validation)"


# --------------------------------------------------------------------------- helpers
def _label_matrix(labels: Sequence | np.ndarray) -> np.ndarray:
    """Labels as an ``(n, K)`` 0/1 matrix: one-hot for single-label input, as given for 2-D input."""
    array = np.asarray(labels)
    if array.ndim == 2:
        if array.size and not np.isin(array, (0, 1)).all():
            raise DataError("multi-label `labels` must be a 0/1 indicator matrix (n_samples, n_classes)")
        return array.astype(np.int64)
    if array.ndim != 1:
        raise DataError(f"`labels` must be 1-D class ids or a 2-D 0/1 matrix, got shape {array.shape}")
    _, codes = np.unique(array.astype(str) if array.dtype == object else array, return_inverse=True)
    matrix = np.zeros((len(array), int(codes.max()) + 1 if len(array) else 0), dtype=np.int64)
    matrix[np.arange(len(array)), codes] = 1
    return matrix


def _group_codes(groups: Sequence | np.ndarray | None, n: int) -> np.ndarray:
    """Integer group code per sample; missing groups (None/NaN) become singleton groups."""
    if groups is None:
        return np.arange(n)
    values = pd.Series(np.asarray(groups, dtype=object))
    if len(values) != n:
        raise DataError(f"`groups` has {len(values)} entries but `labels` has {n}")
    missing = values.isna().to_numpy()
    codes = np.empty(n, dtype=np.int64)
    known_codes, _ = pd.factorize(values[~missing].astype(str))
    codes[~missing] = known_codes
    n_known = int(known_codes.max()) + 1 if len(known_codes) else 0
    codes[missing] = n_known + np.arange(int(missing.sum()))
    return codes


def _check_fractions(fractions: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    names = list(fractions)
    values = np.array([float(fractions[name]) for name in names])
    if not names or (values <= 0).any() or not np.isclose(values.sum(), 1.0, atol=1e-6):
        raise DataError(f"split fractions must be positive and sum to 1, got {dict(fractions)}")
    return names, values


def _assign_groups(
    matrix: np.ndarray, group_codes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Split index per group (see the module docstring for the rule)."""
    n_groups = int(group_codes.max()) + 1
    n_splits, n_classes = len(fractions), matrix.shape[1]
    counts = np.zeros((n_groups, n_classes), dtype=np.int64)
    np.add.at(counts, group_codes, matrix)
    sizes = np.bincount(group_codes, minlength=n_groups)

    totals = counts.sum(axis=0)
    # A group's rarest class, or -1 for a group without any positive label (multi-label "none").
    rarity = np.where(counts > 0, totals[None, :], np.iinfo(np.int64).max)
    rarest = rarity.argmin(axis=1) if n_classes else np.zeros(n_groups, dtype=np.int64)
    has_label = counts.any(axis=1)
    rarest[~has_label] = -1
    rarest_total = np.where(has_label, totals[np.maximum(rarest, 0)], np.iinfo(np.int64).max)
    order = np.lexsort((rng.random(n_groups), -sizes, rarest_total))

    target_classes = fractions[:, None] * totals[None, :]
    target_sizes = fractions * len(group_codes)
    placed_classes = np.zeros((n_splits, n_classes), dtype=np.float64)
    placed_sizes = np.zeros(n_splits, dtype=np.float64)
    assignment = np.empty(n_groups, dtype=np.int64)
    tie_breaks = rng.random((n_groups, n_splits))
    for g in order:
        size_lag = target_sizes - placed_sizes
        k = rarest[g]
        class_lag = target_classes[:, k] - placed_classes[:, k] if k >= 0 else np.zeros(n_splits)
        split = np.lexsort((tie_breaks[g], size_lag, class_lag))[-1]
        assignment[g] = split
        placed_classes[split] += counts[g]
        placed_sizes[split] += sizes[g]

    if n_groups >= n_splits:
        _fill_empty_splits(assignment, sizes, n_splits, rng)
    return assignment


def _fill_empty_splits(assignment: np.ndarray, sizes: np.ndarray, n_splits: int, rng: np.random.Generator) -> None:
    """Give every split at least one group: a greedy pass can leave a tiny split empty when the
    data has few groups, and an empty split would fail every later stage. Needs at least as many
    groups as splits: then, while a split is empty, some other split holds two or more groups
    and can give up its smallest one."""
    for split in range(n_splits):
        if (assignment == split).any():
            continue
        groups_per_split = np.bincount(assignment, minlength=n_splits)
        donor = int(groups_per_split.argmax())
        candidates = np.flatnonzero(assignment == donor)
        smallest = candidates[sizes[candidates] == sizes[candidates].min()]
        assignment[rng.choice(smallest)] = split


# --------------------------------------------------------------------------- public API
def group_stratified_split(
    labels: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    *,
    allow_empty: bool = False,
) -> np.ndarray:
    """Split name per sample: no group in two splits, class shares close to ``fractions``.

    ``fractions`` maps split names to positive shares summing to 1 (default train/val/test =
    0.7/0.1/0.2). Shares are met per class in sample counts as closely as whole groups allow,
    and every split gets at least one group. Fewer groups than splits raise :class:`DataError`
    unless ``allow_empty``: then each group still goes where the greedy rule puts it and the
    splits no group reaches stay empty (for loading tiny data sets, e.g. to inspect them; the
    stage that needs a missing split reports it).
    """
    names, shares = _check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    matrix = _label_matrix(labels)
    n = len(matrix)
    codes = _group_codes(groups, n)
    if n == 0:
        return np.array([], dtype=object)
    n_groups = int(codes.max()) + 1
    if n_groups < len(names) and not allow_empty:
        raise DataError(f"cannot split {n_groups} group(s) into {len(names)} splits {names}")
    assignment = _assign_groups(matrix, codes, shares, np.random.default_rng(seed))
    return np.array(names, dtype=object)[assignment[codes]]


def carve_validation(
    split_array: Sequence | np.ndarray,
    labels: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    fraction: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Move about ``fraction`` of the train samples (whole groups, stratified) into ``"val"``.

    For data sets published without a validation split: the probe's C and layer must be chosen
    on data that is neither train nor test. Other splits are returned unchanged.
    """
    splits = np.asarray(split_array, dtype=object).copy()
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    if (splits == "val").any():
        raise DataError("the split array already has a 'val' split; refusing to carve another")
    train = np.flatnonzero(splits == "train")
    if len(train) == 0:
        raise DataError("no 'train' samples to carve a validation split from")
    matrix = _label_matrix(labels)
    if len(matrix) != len(splits):
        raise DataError(f"`labels` has {len(matrix)} entries but the split array has {len(splits)}")
    train_groups = None if groups is None else np.asarray(groups, dtype=object)[train]
    if groups is not None and len(np.asarray(groups, dtype=object)) != len(splits):
        raise DataError("`groups` and the split array differ in length")
    splits[train] = group_stratified_split(
        matrix[train], train_groups, {"train": 1.0 - fraction, "val": fraction}, seed
    )
    return splits


def subsample_train(
    indices: Sequence[int] | np.ndarray,
    labels: Sequence | np.ndarray,
    groups: Sequence | np.ndarray | None,
    fraction: float,
    seed: int,
) -> np.ndarray:
    """The subset of ``indices`` kept at a given label fraction (label-efficiency experiments).

    ``labels`` and ``groups`` are aligned with ``indices`` (one entry per index). Whole groups
    are kept, stratified by class. Rounding: each class aims at ``fraction * (its count)``
    samples, met as closely as whole groups allow (the greedy lag rule rounds to the nearest
    group); then every class that ended up with no sample gets one of its groups added (the
    smallest, seeded), so tiny fractions may keep slightly more than ``fraction``. A fraction of
    1 keeps everything. Returns the kept indices in their original order.
    """
    index_array = np.asarray(indices)
    matrix = _label_matrix(labels)
    if len(matrix) != len(index_array):
        raise DataError(f"`labels` has {len(matrix)} entries but `indices` has {len(index_array)}")
    if not 0 < fraction <= 1:
        raise DataError(f"train fraction must be in (0, 1], got {fraction}")
    if fraction == 1 or len(index_array) == 0:
        return index_array.copy()
    codes = _group_codes(groups, len(index_array))
    if int(codes.max()) + 1 < 2:
        return index_array.copy()
    rng = np.random.default_rng(seed)
    assignment = _assign_groups(matrix, codes, np.array([fraction, 1.0 - fraction]), rng)
    kept = assignment[codes] == 0
    for k in np.flatnonzero(matrix.any(axis=0) & ~matrix[kept].any(axis=0)):
        with_class = np.unique(codes[matrix[:, k] == 1])
        sizes = np.bincount(codes, minlength=int(codes.max()) + 1)[with_class]
        chosen = rng.choice(with_class[sizes == sizes.min()])
        kept |= codes == chosen
    return index_array[kept]


def uniform_subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    """The study's label-efficiency draw (``clip_ex.py --subsample``): ``int(fraction * n)`` of
    ``n`` positions, uniformly without replacement, from NumPy's legacy generator seeded with
    ``seed`` (the study's ``np.random.seed(1)``; ``RandomState(seed)`` is the same stream) -- no
    stratification, no patient grouping, so a small fraction may lose a rare class or split a
    patient. The positions keep the draw's order, as the study indexed its features with them."""
    if not 0 < fraction <= 1:
        raise DataError(f"train fraction must be in (0, 1], got {fraction}")
    return np.random.RandomState(seed).choice(n, int(fraction * n), replace=False)


def assign_splits(
    labels: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    fractions: Sequence[float] = DEFAULT_TRAIN_VAL_TEST,
    seed: int = 0,
) -> np.ndarray:
    """Split names (``"train"``/``"val"``/``"test"``) per sample: group-aware and stratified.

    ``labels``: ``(n,)`` class labels (any hashable values) or an ``(n, K)`` 0/1 multi-label
    matrix. ``groups``: ``(n,)`` patient ids, or ``None``; a missing id (None/NaN) makes that sample
    its own group. ``fractions``: train/val/test shares summing to 1 (a 0 share leaves that split
    empty).

    A thin adapter over :func:`medprobe.data.splits.group_stratified_split`, so data sets split
    here and splits carved anywhere else follow one rule. Only the non-zero shares are passed on,
    because that rule gives every split it is asked for at least one group; a 0 share thus leaves
    its split empty. A data set with fewer groups than splits still loads (some splits stay
    empty) so that tiny sets can be inspected; the stage that needs a missing split says so.
    Deterministic for a seed.
    """
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ConfigError(f"split fractions must be three non-negative numbers (train, val, test) "
                          f"summing to 1, got {fractions!r}")
    if len(labels) == 0:
        raise DataError("cannot split an empty set of samples")
    wanted = {name: float(share) for name, share in zip(SPLITS, shares) if share > 0}
    return group_stratified_split(labels, groups, wanted, seed, allow_empty=True)


def stratified_subsample(labels: np.ndarray, n_keep: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n_keep`` samples with the class proportions of ``labels``.

    Quotas by largest remainder, at least one per class where possible; multi-label ``(n, K)``
    labels are subsampled uniformly (their label combinations are too many to stratify).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    if n_keep >= n:
        return np.arange(n)
    if labels.ndim == 2:
        return np.sort(rng.choice(n, size=n_keep, replace=False))
    classes, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    exact = n_keep * counts / n
    quotas = np.floor(exact).astype(np.int64)
    leftover = n_keep - quotas.sum()
    quotas[np.argsort(-(exact - quotas), kind="stable")[:leftover]] += 1
    for c in np.flatnonzero(quotas == 0):
        if n_keep >= len(classes):
            quotas[c] = 1
            quotas[np.argmax(quotas)] -= 1
    chosen = [rng.choice(np.flatnonzero(codes == c), size=q, replace=False) for c, q in enumerate(quotas)]
    return np.sort(np.concatenate(chosen))
