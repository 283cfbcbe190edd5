"""Radiology task T7: PadChest chest radiograph findings (multi-label)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.data.splits import group_stratified_split
from medprobe.errors import DataError
from medprobe.data.paper.common import (
    absolute,
    check_fraction,
    drop_missing,
    exclusion,
    finish,
    locate,
    read_csv,
)

PADCHEST_COLUMNS = ["ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "MethodLabel", "Labels"]
#: Label terms that mark the whole image as unusable: such images are excluded.
PADCHEST_EXCLUDE_TERMS = ("exclude",)
#: Label terms that are remarks about the study, not findings on the image: dropped from labels.
PADCHEST_IGNORED_TERMS = ("suboptimal study", "unchanged")


def parse_padchest_labels(value: Any) -> list[str] | None:
    """The terms of one ``Labels`` cell, or ``None`` when the cell is empty (NaN).

    Cells are Python list literals such as ``"['pleural effusion', ' cardiomegaly']"``; parsed
    with :func:`ast.literal_eval` (literals only, never code), terms stripped of stray whitespace,
    empty terms (``"['']"``) dropped, duplicates removed (order kept).
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise DataError(f"PadChest Labels cell is not a list literal: {text[:80]!r}") from error
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(t, str) for t in parsed):
        raise DataError(f"PadChest Labels cell is not a list of strings: {text[:80]!r}")
    return list(dict.fromkeys(t.strip() for t in parsed if t.strip()))


def padchest_csv_path() -> Path | None:
    """The PadChest label CSV shipped inside the ``torchxrayvision`` wheel, if installed.

    Found through the package metadata, without importing ``torchxrayvision`` (whose import pulls
    torchvision)."""
    from importlib import metadata

    try:
        distribution = metadata.distribution("torchxrayvision")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(
        "torchxrayvision/data/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")))
    return path if path.is_file() else None


def load_padchest(
    image_dir: str | Path,
    labels_csv: str | Path,
    *,
    min_test_positives: int = 50,
    projections: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    ignored_terms: Sequence[str] = PADCHEST_IGNORED_TERMS,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T7: PadChest chest radiograph findings, multi-label.

    ``labels_csv``: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)``. Images
    ``<image_dir>/<ImageDir>/<ImageID>`` (as unpacked from the zip parts) or
    ``<image_dir>/<ImageID>``; 16-bit PNGs. How rows become samples, in order:

    1. ``Labels`` parsed by :func:`parse_padchest_labels`; an empty cell (NaN) is excluded.
    2. An image labelled ``exclude`` is excluded (the data set's own flag for unusable images).
    3. ``projections`` (e.g. ``["PA", "AP", "AP_horizontal"]``), if given, keeps only those values
       of ``Projection``.
    4. ``ignored_terms`` (default "suboptimal study", "unchanged": remarks about the study, not
       findings) are removed from the labels; an image left with no term is excluded.
    5. Test = every image with ``MethodLabel == "Physician"`` (labelled by radiologists). Train/val
       = the ``RNN_model`` images (labels extracted from reports) of patients with no test image;
       the automatic images of patients who also have a manual image are excluded, so no patient
       is in two splits and the test set stays exactly the manual one.
    6. Missing image files are excluded (``check_files``).
    7. Classes: findings with more than ``min_test_positives`` positive test images, most frequent
       first; other terms are dropped from the labels (an image may end with no class: negative
       for all). Val: ``val_fraction`` of train by ``PatientID``, stratified over the classes.

    Group: ``PatientID``; extra columns ``study_id``, ``projection``, ``method_label``.
    """
    check_fraction(val_fraction, "val_fraction")
    folder = absolute(image_dir)
    csv = read_csv(labels_csv, "PadChest label CSV", PADCHEST_COLUMNS)
    unknown_methods = sorted(set(csv["MethodLabel"].dropna()) - {"Physician", "RNN_model"})
    if unknown_methods or csv["MethodLabel"].isna().any():
        raise DataError(f"{labels_csv}: MethodLabel must be 'Physician' or 'RNN_model'; "
                        f"found {unknown_methods or ['<empty>']}")
    excluded: list[dict] = []
    image_ids = csv["ImageID"].str.strip()

    parsed_cache: dict[Any, list[str] | None] = {}
    terms = [parsed_cache[v] if v in parsed_cache else parsed_cache.setdefault(v, parse_padchest_labels(v))
             for v in csv["Labels"]]
    ignored = set(ignored_terms)
    wanted = None if projections is None else set(projections)
    keep = np.zeros(len(csv), dtype=bool)
    findings: list[list[str]] = [[] for _ in range(len(csv))]
    for i, (image_id, row_terms, projection) in enumerate(zip(image_ids, terms, csv["Projection"])):
        if row_terms is None:
            reason = "no Labels entry"
        elif any(t in PADCHEST_EXCLUDE_TERMS for t in row_terms):
            reason = "labelled 'exclude' by PadChest"
        elif wanted is not None and projection not in wanted:
            reason = f"projection {projection!r} not in {sorted(wanted)}"
        else:
            findings[i] = [t for t in row_terms if t not in ignored]
            if findings[i]:
                keep[i] = True
                continue
            reason = f"no finding label besides ignored terms {row_terms}"
        excluded.append(exclusion(image_id, "", reason))

    is_test = (csv["MethodLabel"] == "Physician").to_numpy()
    test_patients = set(csv.loc[keep & is_test, "PatientID"])
    overlap = keep & ~is_test & csv["PatientID"].isin(test_patients).to_numpy()
    for image_id in image_ids[overlap]:
        excluded.append(exclusion(image_id, "", "automatic labels of a patient whose manual images are in test"))
    keep &= ~overlap

    rows = np.flatnonzero(keep)
    directories = csv["ImageDir"].astype(str).str.strip().to_numpy()[rows]
    names = image_ids.to_numpy()[rows]
    if check_files:
        sources = locate(folder, list(names), folder, True)
    else:
        nested = {d: (folder / d).is_dir() for d in set(directories)}
        sources = [f"{d}/{n}" if nested[d] else n for d, n in zip(directories, names)]
    table = pd.DataFrame({
        "sample_id": names,
        "split": np.where(is_test[rows], "test", "train").astype(object),
        "group": csv["PatientID"].to_numpy()[rows],
        "source": sources,
        "study_id": csv["StudyID"].to_numpy()[rows],
        "projection": csv["Projection"].to_numpy()[rows],
        "method_label": csv["MethodLabel"].to_numpy()[rows],
        "terms": [findings[i] for i in rows],
    })
    table = drop_missing(table, excluded, folder)

    test_counts = pd.Series(
        [t for row_terms in table.loc[table["split"] == "test", "terms"] for t in row_terms], dtype=object
    ).value_counts()
    kept = test_counts[test_counts > min_test_positives]
    classes = sorted(kept.index, key=lambda t: (-kept[t], t))
    if not classes:
        raise DataError(f"{labels_csv}: no finding has more than {min_test_positives} positive test images")
    position = {term: k for k, term in enumerate(classes)}
    table["label"] = [tuple(sorted(position[t] for t in row_terms if t in position)) for row_terms in table["terms"]]
    table = table.drop(columns="terms")

    pool = (table["split"] == "train").to_numpy()
    if pool.any() and val_fraction > 0:
        matrix = np.zeros((int(pool.sum()), len(classes)), dtype=np.int8)
        for r, label in enumerate(table.loc[pool, "label"]):
            matrix[r, list(label)] = 1
        table.loc[pool, "split"] = group_stratified_split(
            matrix, table.loc[pool, "group"].to_numpy(),
            {"train": 1 - val_fraction, "val": val_fraction}, seed,
        )
    description = (f"PadChest: {len(classes)} findings with > {min_test_positives} positives among the "
                   f"manually labelled test images; train/val from automatically labelled images of other "
                   f"patients (val {val_fraction:.0%} by patient, seed {seed})"
                   + (f"; projections {sorted(wanted)}" if wanted else ""))
    return finish("padchest", table, classes, "multilabel", folder, description, excluded, max_size)
