"""The sample table every stage after ``data`` consumes.

A :class:`Dataset` is a plain table of samples plus a way to read each sample's image. It is
deliberately small: adapters for each on-disk format build one, the feature extractor iterates it,
and the probes only ever see ``(sample_ids, labels)`` arrays taken from it.

Table columns (``Dataset.samples``, a pandas DataFrame):

``sample_id``  unique string id; the key that joins features, labels and predictions.
``split``      ``"train"``, ``"val"`` or ``"test"``.
``label``      single-label tasks: the integer class index into ``classes``;
               multi-label tasks: a tuple of integer class indices (possibly empty).
``group``      patient (or other grouping) id, or ``None``; splits never share a group.
``source``     where the image comes from (a path relative to ``root``, or an adapter's key).

Extra columns (e.g. ``organ``) are allowed and carried into per-group results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import pandas as pd

from medprobe.errors import DataError

TaskType = Literal["binary", "multiclass", "multilabel"]
SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("sample_id", "split", "label", "group", "source")

# An image reader takes one row of the sample table and returns the image as a float32 array
# (H, W, 3) in [0, 1], already preprocessed (see ``medprobe.data.images.preprocess``).
ImageReader = Callable[[pd.Series], np.ndarray]


@dataclass
class Dataset:
    """Labelled images with splits; see the module docstring for the table layout."""

    name: str
    samples: pd.DataFrame
    classes: list[str]
    task_type: TaskType
    read_image: ImageReader
    root: Path | None = None
    description: str = ""
    # Samples dropped while building the table (e.g. PanNuke images that are neither benign nor
    # malignant); kept so reports can say what was left out and why.
    excluded: list[dict] = field(default_factory=list)
    # How ``read_image`` preprocesses (e.g. ``{"max_size": 1024, "version": ...}``); hashed into the
    # feature cache key so a change of preprocessing never reuses stale features.
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # Rules that choose images rather than drop them (e.g. "test = 30 % of the radiologist-labelled
    # patients"), each ``{"rule": text, "selected": n, "of": m, "unit": "images"|"patients"}``, so
    # ``medprobe data`` reports their counts next to the exclusions.
    selection: list[dict] = field(default_factory=list)
    # The run-file option that sets the validation split's size ("data.options.fractions" when the
    # adapter carved the splits, "probe.val_fraction" when the run carved val from train), or "" when
    # the data brings its own val split; warnings about a small validation split name it.
    validation_option: str = ""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Fail loudly on anything that would make later results silently wrong."""
        missing = [c for c in REQUIRED_COLUMNS if c not in self.samples.columns]
        if missing:
            raise DataError(f"dataset {self.name!r}: sample table lacks columns {missing}")
        ids = self.samples["sample_id"].astype(str)
        duplicated = ids[ids.duplicated()].unique().tolist()
        if duplicated:
            raise DataError(
                f"dataset {self.name!r}: duplicate sample ids {duplicated[:5]}"
                + (f" and {len(duplicated) - 5} more" if len(duplicated) > 5 else "")
            )
        bad_splits = sorted(set(self.samples["split"]) - set(SPLITS))
        if bad_splits:
            raise DataError(f"dataset {self.name!r}: unknown split names {bad_splits}; use {SPLITS}")
        if self.task_type not in ("binary", "multiclass", "multilabel"):
            raise DataError(f"dataset {self.name!r}: unknown task type {self.task_type!r}")
        if self.task_type == "binary" and len(self.classes) != 2:
            raise DataError(
                f"dataset {self.name!r}: a binary task needs exactly 2 classes, got {self.classes}"
            )
        if self.task_type == "multiclass" and len(self.classes) < 3:
            raise DataError(
                f"dataset {self.name!r}: a multiclass task needs >= 3 classes, got {self.classes}"
            )
        n_classes = len(self.classes)
        for sample_id, label in zip(ids, self.samples["label"]):
            indices = label if self.task_type == "multilabel" else (label,)
            for index in indices:
                if not isinstance(index, (int, np.integer)) or not 0 <= index < n_classes:
                    raise DataError(
                        f"dataset {self.name!r}: sample {sample_id!r} has label {label!r}, "
                        f"which is not an index into the {n_classes} classes {self.classes}"
                    )
        groups = self.samples.dropna(subset=["group"])
        if len(groups):
            splits_per_group = groups.groupby("group")["split"].nunique()
            leaking = splits_per_group[splits_per_group > 1].index.tolist()
            if leaking:
                raise DataError(
                    f"dataset {self.name!r}: groups (patients) appear in more than one split: "
                    f"{leaking[:5]}; split by group to avoid leakage"
                )

    # ---------------------------------------------------------------- accessors
    @property
    def sample_ids(self) -> list[str]:
        return self.samples["sample_id"].astype(str).tolist()

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split; an empty split is an error, never an empty result."""
        rows = self.samples[self.samples["split"] == name]
        if rows.empty:
            raise DataError(f"dataset {self.name!r}: split {name!r} is empty")
        return rows

    def has_split(self, name: str) -> bool:
        return bool((self.samples["split"] == name).any())

    def labels(self, rows: pd.DataFrame) -> np.ndarray:
        """Labels of the given rows: ``(n,)`` int class indices, or ``(n, K)`` 0/1 for multi-label."""
        if self.task_type == "multilabel":
            matrix = np.zeros((len(rows), len(self.classes)), dtype=np.int64)
            labels = rows["label"].tolist()
            lengths = np.fromiter((len(label) for label in labels), dtype=np.int64, count=len(labels))
            flat = np.fromiter((k for label in labels for k in label), dtype=np.int64, count=int(lengths.sum()))
            matrix[np.repeat(np.arange(len(labels)), lengths), flat] = 1
            return matrix
        return rows["label"].to_numpy(dtype=np.int64)

    def iter_images(self, rows: pd.DataFrame | None = None) -> Iterator[tuple[str, np.ndarray]]:
        rows = self.samples if rows is None else rows
        for _, row in rows.iterrows():
            yield str(row["sample_id"]), self.read_image(row)

    def subset(self, mask: np.ndarray | pd.Series, name: str | None = None) -> "Dataset":
        """A new dataset with the selected rows (same classes and reader)."""
        return Dataset(
            name=name or self.name,
            samples=self.samples[np.asarray(mask)].reset_index(drop=True),
            classes=list(self.classes),
            task_type=self.task_type,
            read_image=self.read_image,
            root=self.root,
            description=self.description,
            excluded=list(self.excluded),
            preprocessing=dict(self.preprocessing),
            selection=list(self.selection),
        )


def task_type_for(n_classes: int, multilabel: bool, where: str) -> TaskType:
    """The task type of a source with ``n_classes`` classes; ``where`` names it in the error."""
    if multilabel:
        return "multilabel"
    if n_classes < 2:
        raise DataError(f"{where}: found {n_classes} class(es); a classification task needs at least 2")
    return "binary" if n_classes == 2 else "multiclass"
