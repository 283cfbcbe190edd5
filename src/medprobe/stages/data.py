"""Data stage: load the data set a run file names, make sure it can be probed, and map it onto cached rows.

``load_data`` carves a validation split when the data has none (so C and the layer are never
chosen on test) and refuses a test split that lacks a class (its AUC would be silently undefined).
``align_features`` / ``train_subset`` turn the cache's sample order into the row positions each
split and each train fraction uses; the probe stage fits on them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from medprobe.config import DataConfig
from medprobe.data.dataset import Dataset
from medprobe.data.loaders import load_dataset
from medprobe.data.splits import CARVED_VALIDATION_OPTION, carve_validation, subsample_train, uniform_subsample
from medprobe.errors import DataError
from medprobe.progress import console

#: skipped images listed one by one on the console (all of them are in run.json and the report)
SKIPPED_SHOWN = 20


@dataclass(frozen=True)
class Splits:
    """Row positions (into the aligned feature matrix) and labels of each split."""

    ids: list[str]
    index: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    groups: np.ndarray
    skipped: list[dict[str, str]] = field(default_factory=list)

    def test_ids(self) -> list[str]:
        """Sample ids of the test split, in the order of its rows (and of every test score)."""
        return [self.ids[i] for i in self.index["test"]]


def load_data(data: DataConfig, *, val_fraction: float, seed: int) -> Dataset:
    """The run's data set, with a validation split and a test split that has every class."""
    dataset = ensure_validation_split(load_dataset(data), val_fraction, seed)
    report_excluded(dataset.excluded)
    check_test_split(dataset)
    return dataset


def ensure_validation_split(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """Carve a validation split from train (grouped by patient) when the data set has none, so
    that C and the layer are never chosen on test."""
    if dataset.has_split("val"):
        return dataset
    table = dataset.samples.copy()
    table["split"] = carve_validation(
        table["split"].to_numpy(), dataset.labels(table), table["group"].to_numpy(), fraction=fraction, seed=seed
    )
    # every other field (selection rules too) kept
    return dataclasses.replace(dataset, samples=table, validation_option=CARVED_VALIDATION_OPTION)


def check_test_split(dataset: Dataset) -> None:
    """Every class needs test positives (and negatives), or its AUC/F1 would be silently undefined."""
    test = dataset.split("test")
    labels = dataset.labels(test)
    dataset.split("train")
    if dataset.task_type == "multilabel":
        positives = labels.sum(axis=0)
        lacking = [c for c, p in zip(dataset.classes, positives) if p == 0 or p == len(labels)]
        what = "findings with no positive (or no negative) test samples"
    else:
        counts = np.bincount(labels, minlength=len(dataset.classes))
        lacking = [c for c, n in zip(dataset.classes, counts) if n == 0]
        what = "classes with no samples in the test split"
    if lacking:
        raise DataError(
            f"dataset {dataset.name!r}: {what}: {lacking}; their AUC would be undefined. "
            "Change the split or drop the class."
        )


def align_features(dataset: Dataset, ids: list[str], skipped: list[dict[str, str]]) -> Splits:
    """Map the cache's sample order to splits; samples whose image was skipped leave every split."""
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    table = dataset.samples[dataset.samples["sample_id"].astype(str).isin(position)]
    index, labels = {}, {}
    for split in ("train", "val", "test"):
        rows = table[table["split"] == split]
        if rows.empty:
            raise DataError(f"dataset {dataset.name!r}: split {split!r} is empty after skipping unreadable images")
        index[split] = np.array([position[str(s)] for s in rows["sample_id"]], dtype=np.int64)
        labels[split] = dataset.labels(rows)
    groups = np.empty(len(ids), dtype=object)
    groups[[position[str(s)] for s in table["sample_id"]]] = table["group"].to_numpy()
    return Splits(ids, index, labels, groups, skipped)


def train_subset(splits: Splits, fraction: float, seed: int, split: str = "train",
                 sampling: str = "medprobe") -> np.ndarray:
    """Indices into the train split (or ``split``, e.g. val with ``probe.val_follows_fraction``)
    of the samples used at this label fraction (stratified by class, grouped by patient; with
    ``sampling="study"`` the study's uniform draw, :func:`~medprobe.data.splits.uniform_subsample`)."""
    n_train = len(splits.index[split])
    if fraction >= 1.0:
        return np.arange(n_train)
    if sampling == "study":
        return uniform_subsample(n_train, fraction, seed)
    train_groups = splits.groups[splits.index[split]]
    return np.asarray(subsample_train(np.arange(n_train), splits.labels[split], train_groups, fraction, seed))


def check_train_classes(dataset: Dataset, y_train: np.ndarray, where: str) -> None:
    """A probe needs two classes in its training subset; say which class, fit and split it lacks
    (a small train fraction can leave only one class of a rare label)."""
    if dataset.task_type == "multilabel" or len(y_train) == 0:
        return
    present = np.unique(y_train)
    if len(present) < 2:
        names = [dataset.classes[int(k)] for k in present]
        raise DataError(f"{where}: the training split subset of {len(y_train)} image(s) has only class "
                        f"{names[0]!r} of {dataset.classes}; a probe needs at least 2 classes -- use a larger "
                        "train fraction or more labelled images of the other class(es)")


def report_excluded(excluded: list[dict]) -> None:
    """Say on the console which rows the adapter left out (an image a manifest lists but that is
    not there, an unlabelled row, ...), counted by reason, the first ones by name: a row dropped in
    silence would shrink a split without anyone noticing until the report."""
    if not excluded:
        return
    reasons = Counter(str(row.get("reason", "no reason given")) for row in excluded)
    lines = [f"  {row.get('source') or row.get('sample_id')}: {row.get('reason', 'no reason given')}"
             for row in excluded[:SKIPPED_SHOWN]]
    more = f"\n  ... and {len(excluded) - SKIPPED_SHOWN} more" if len(excluded) > SKIPPED_SHOWN else ""
    console.print(f"warning: the data adapter left out {len(excluded)} row(s) or file(s) ("
                  + ", ".join(f"{reason}: {n}" for reason, n in reasons.items())
                  + "); all are listed in run.json, the report and `medprobe data RUN.yaml`:\n"
                  + "\n".join(lines) + more, highlight=False, markup=False, style="yellow")


def report_skipped(skipped: list[dict[str, str]], on_error: str) -> None:
    """Say on the console which unreadable images ``on_error: skip`` left out (progress bars
    count them as done, so without this a skip would pass unnoticed)."""
    if not skipped:
        return
    lines = [f"  {entry.get('sample_id')} ({entry.get('source')}): {entry.get('error')}"
             for entry in skipped[:SKIPPED_SHOWN]]
    more = f"\n  ... and {len(skipped) - SKIPPED_SHOWN} more" if len(skipped) > SKIPPED_SHOWN else ""
    console.print(f"warning: skipped {len(skipped)} unreadable image(s) (data.on_error: {on_error}); they are "
                  "left out of every split and listed in run.json and the report:\n" + "\n".join(lines) + more,
                  highlight=False, markup=False, style="yellow")


__all__ = ["Splits", "align_features", "check_test_split", "check_train_classes", "ensure_validation_split",
           "load_data", "report_excluded", "report_skipped", "train_subset"]
