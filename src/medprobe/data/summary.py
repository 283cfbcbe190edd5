"""What a data set holds, before any image is read: the table behind ``medprobe data``.

A user checks a split here before spending GPU hours on it: per split the number of images and
patients, the positives per class, and every row an adapter left out with the rule that dropped
it. Everything comes from the :class:`~medprobe.data.dataset.Dataset` table alone, so with
``data.check_files: false`` it works from the label files, with no image on disk.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from medprobe.data.dataset import SPLITS, Dataset


def _positives(dataset: Dataset, labels: np.ndarray) -> dict[str, int]:
    """Images per class: multi-label rows count once for each class they carry."""
    if dataset.task_type == "multilabel":
        counts = labels.sum(axis=0) if len(labels) else np.zeros(len(dataset.classes), dtype=np.int64)
    else:
        counts = np.bincount(labels, minlength=len(dataset.classes))
    return {name: int(n) for name, n in zip(dataset.classes, counts)}


def _split_summary(dataset: Dataset, names: Sequence[str]) -> dict[str, Any]:
    rows = dataset.samples[dataset.samples["split"].isin(names)]
    groups = rows["group"].dropna()
    return {
        "images": int(len(rows)),
        # Without patient ids (a None group) every image counts as its own patient elsewhere in
        # medprobe; here they are reported apart, so "patients" is never inflated by them.
        "patients": int(groups.nunique()),
        "images_without_patient_id": int(len(rows) - len(groups)),
        "positives": _positives(dataset, dataset.labels(rows)),
    }


def summarize_dataset(dataset: Dataset) -> dict[str, Any]:
    """A JSON-ready summary: splits, ``train+val`` (what a study usually calls its training set),
    ``all``, the selection rules with their counts, and the exclusions counted by reason and
    listed one by one."""
    splits = {name: _split_summary(dataset, (name,)) for name in SPLITS if dataset.has_split(name)}
    reasons = Counter(str(row.get("reason", "no reason given")) for row in dataset.excluded)
    return {
        "name": dataset.name,
        "description": dataset.description,
        "task_type": dataset.task_type,
        "classes": list(dataset.classes),
        "splits": splits,
        "train+val": _split_summary(dataset, ("train", "val")),
        "all": _split_summary(dataset, SPLITS),
        "selection": [dict(rule) for rule in dataset.selection],
        "excluded": {
            "count": len(dataset.excluded),
            "by_reason": dict(reasons.most_common()),
            "rows": [dict(row) for row in dataset.excluded],
        },
    }

