"""What every generic adapter shares: the data root, splits for sources without their own, readers.

:func:`assign_splits` carves splits when a source has none of its own: it takes train/val/test
fractions as a 3-tuple and delegates to :func:`medprobe.data.splits.group_stratified_split`, the
project's one split rule (groups stay whole, each split gets its fraction of every class). The
readers return ``preprocess(read_image(...))`` and attach the sample id to any
:class:`ImageReadError`, so the feature extractor can report (or skip) exactly the sample that failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import SPLITS, TaskType
from medprobe.data.images import preprocess, read_image
from medprobe.data.splits import group_stratified_split
from medprobe.errors import ConfigError, DataError, ImageReadError

DATA_DIR_ENV = "MEDPROBE_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/medprobe/data")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)

# Folder / manifest spellings of the three split names.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit`` (the run file's ``data.root``), else ``$MEDPROBE_DATA_DIR``,
    else ``~/.cache/medprobe/data``. Not created: adapters say what is missing and where."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


# ----------------------------------------------------------------------------------- splits
def assign_splits(
    labels: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
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


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


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


def task_type_for(n_classes: int, multilabel: bool, where: str) -> TaskType:
    if multilabel:
        return "multilabel"
    if n_classes < 2:
        raise DataError(f"{where}: found {n_classes} class(es); a classification task needs at least 2")
    return "binary" if n_classes == 2 else "multiclass"


# ---------------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class FileImageReader:
    """Reads ``row['source']`` (relative to ``root`` unless absolute) and preprocesses it.

    A class rather than a closure so datasets stay picklable for multi-process extraction.
    """

    root: Path
    max_size: int

    def __call__(self, row: pd.Series) -> np.ndarray:
        source = Path(str(row["source"]))
        path = source if source.is_absolute() else self.root / source
        try:
            return preprocess(read_image(path), self.max_size)
        except ImageReadError as error:
            error.sample_id = str(row["sample_id"])
            raise


@dataclass(frozen=True, eq=False)
class ArrayImageReader:
    """Reads images held in memory: ``arrays[split][index]`` for the row's sample id."""

    arrays: dict[str, np.ndarray] = field(repr=False)
    positions: dict[str, tuple[str, int]] = field(repr=False)
    max_size: int

    def __call__(self, row: pd.Series) -> np.ndarray:
        sample_id = str(row["sample_id"])
        split, index = self.positions[sample_id]
        try:
            return preprocess(read_image(self.arrays[split][index]), self.max_size)
        except ImageReadError as error:
            error.sample_id = sample_id
            error.path = str(row["source"])
            raise
