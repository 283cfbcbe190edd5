"""Radiology task T7: PadChest chest radiograph findings (multi-label), as the study ran it.

The study's numbers (Han et al., PadChest): 94,658 frontal radiographs, 27.9 % labelled by
radiologists; 86,715 training and 7,943 test radiographs from 59,975 and 7,272 patients; 54
findings with more than 50 positives in the test cohort. The study does not publish its split.
Read against the label CSV (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz``), these
rules reproduce those numbers; each is an option of :func:`load_padchest`:

* frontal projections only: ``Projection`` in ``PA``, ``AP``, ``AP_horizontal`` (110,633 rows;
  their 67,247 patients are exactly the study's 59,975 + 7,272; ``L`` laterals, ``COSTAL`` rib
  views and ``UNK`` / ``EXCLUDE`` projections are left out);
* rows without a ``Labels`` entry are excluded (79 frontal rows);
* a patient with any radiologist-labelled (``MethodLabel == "Physician"``) frontal image keeps
  only those; the patient's automatically labelled (``RNN_model``) images are excluded. This
  leaves 94,672 images of 67,216 patients, 27.92 % radiologist-labelled (study: 94,658, 27.9 %);
* test = 30 % of the radiologist-labelled patients (7,272 of 24,239), drawn by patient,
  stratified over the findings and seeded; their radiologist-labelled images are the test set.
  Train = every other image (radiologist labels of the remaining patients and automatic labels
  of the patients never labelled by a radiologist);
* classes = findings with more than 50 positive test images.

Measured on the real CSV (``medprobe data configs/paper/t7.yaml --no-check-files``, seed 0):
see the README's task table. Images labelled ``exclude`` by PadChest are kept by default, since
the study's counts include them (dropping them gives 93,886 images); ``drop_exclude_flag=True``
leaves them out.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.data.splits import group_stratified_split
from medprobe.errors import DataError
from medprobe.data.paper.sample_table import (
    absolute,
    check_fraction,
    drop_missing,
    exclusion,
    finish,
    locate,
    require_columns,
    selected,
)

PADCHEST_COLUMNS = ["ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "MethodLabel", "Labels"]
#: The frontal projections of PadChest's ``Projection`` column (``AP_horizontal``: supine AP).
FRONTAL_PROJECTIONS = ("PA", "AP", "AP_horizontal")
#: Label term with which PadChest flags an image as unusable (see ``drop_exclude_flag``).
PADCHEST_EXCLUDE_TERM = "exclude"
RADIOLOGIST, AUTOMATIC = "Physician", "RNN_model"



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


def _read_padchest_csv(path: str | Path) -> pd.DataFrame:
    """Only the needed columns of the (large) label CSV, as strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"PadChest label CSV not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str, usecols=lambda c: str(c).strip() in PADCHEST_COLUMNS)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"PadChest label CSV {path} cannot be read as CSV: {error}") from error
    table = require_columns(table, PADCHEST_COLUMNS, f"PadChest label CSV {path}")
    # Plain object columns: the rules below walk 160k rows, and iterating Arrow-backed strings
    # is several times slower.
    return table.astype(object)


def _finding_matrix(terms: Sequence[list[str]]) -> np.ndarray:
    """``(n, K)`` 0/1 matrix over every term present (for stratified draws)."""
    vocabulary = {t: k for k, t in enumerate(sorted({t for row in terms for t in row}))}
    matrix = np.zeros((len(terms), max(len(vocabulary), 1)), dtype=np.int8)
    for r, row in enumerate(terms):
        matrix[r, [vocabulary[t] for t in row]] = 1
    return matrix


def load_padchest(
    image_dir: str | Path,
    labels_csv: str | Path,
    *,
    min_test_positives: int = 50,
    projections: Sequence[str] | None = FRONTAL_PROJECTIONS,
    test_fraction: float = 0.3,
    val_fraction: float = 0.1,
    seed: int = 0,
    ignored_terms: Sequence[str] = (),
    drop_exclude_flag: bool = False,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T7: PadChest chest radiograph findings, multi-label, split as the study did (see the module).

    ``labels_csv``: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)`` (it ships in
    the ``torchxrayvision`` wheel, :func:`padchest_csv_path`). Images
    ``<image_dir>/<ImageDir>/<ImageID>`` (as unpacked from the zip parts) or
    ``<image_dir>/<ImageID>``; 16-bit PNGs. Rules, in order, each excluded row listed with its
    reason in ``Dataset.excluded``:

    1. ``Labels`` parsed by :func:`parse_padchest_labels`; an empty cell (NaN) is excluded.
    2. ``projections`` (default the frontal ones, :data:`FRONTAL_PROJECTIONS`; ``None`` keeps
       all) keeps those values of ``Projection``.
    3. ``drop_exclude_flag``: images labelled ``exclude`` are excluded (default kept, as the
       study's counts show). ``ignored_terms`` are removed from the labels (default none).
    4. Automatic (``RNN_model``) images of patients with a radiologist-labelled image are
       excluded, so each patient has one kind of label and the test set is radiologist-labelled.
    5. Test: ``test_fraction`` of the radiologist-labelled patients (default 30 %), whole
       patients, stratified over the findings, seeded by ``seed``; their images are the test set.
       Every other image is train.
    6. Missing image files are excluded (``check_files``).
    7. Classes: findings with more than ``min_test_positives`` positive test images, most frequent
       first; other terms are dropped from the labels (an image may end with no class: negative
       for all). Val: ``val_fraction`` of train by ``PatientID``, stratified over the classes
       (the study's "training" count is train + val).

    Group: ``PatientID``; extra columns ``study_id``, ``projection``, ``method_label``.
    """
    check_fraction(val_fraction, "val_fraction")
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    folder = absolute(image_dir)
    csv = _read_padchest_csv(labels_csv)
    methods = csv["MethodLabel"].fillna("<empty>").str.strip()
    unknown_methods = sorted(set(methods) - {RADIOLOGIST, AUTOMATIC})
    if unknown_methods:
        raise DataError(f"{labels_csv}: MethodLabel must be {RADIOLOGIST!r} or {AUTOMATIC!r}; "
                        f"found {unknown_methods}")
    excluded: list[dict] = []
    image_ids = csv["ImageID"].str.strip()
    patients = csv["PatientID"].str.strip()
    projection_values = csv["Projection"].fillna("").str.strip()
    wanted = None if projections is None else set(projections)
    keep, findings = _rows_with_findings(csv["Labels"], image_ids, projection_values, wanted, set(ignored_terms),
                                         drop_exclude_flag, excluded)

    by_radiologist = (methods == RADIOLOGIST).to_numpy()
    keep &= ~_superseded_automatic(patients, image_ids, keep, by_radiologist, excluded)

    is_test, selection = _draw_test_patients(labels_csv, patients.to_numpy(), findings, keep, by_radiologist,
                                             test_fraction, seed)
    rows = np.flatnonzero(keep)
    table = pd.DataFrame({
        "sample_id": image_ids.to_numpy()[rows],
        "split": np.where(is_test[rows], "test", "train").astype(object),
        "group": patients.to_numpy()[rows],
        "source": _image_sources(folder, csv["ImageDir"], image_ids, rows, check_files),
        "study_id": csv["StudyID"].to_numpy()[rows],
        "projection": projection_values.to_numpy()[rows],
        "method_label": methods.to_numpy()[rows],
        "terms": [findings[i] for i in rows],
    })
    table = drop_missing(table, excluded, folder)

    table, classes, n_findings = _findings_as_classes(table, labels_csv, min_test_positives)
    _carve_validation(table, len(classes), val_fraction, seed)
    description = (f"PadChest ({'projections ' + '/'.join(sorted(wanted)) if wanted else 'all projections'}): "
                   f"test = radiologist-labelled images of {test_fraction:.0%} of the radiologist-labelled "
                   f"patients (stratified, seed {seed}); train/val = all other images (val "
                   f"{val_fraction:.0%} by patient); {len(classes)} findings with > {min_test_positives} "
                   "test positives")
    selection.append(selected(f"findings with > {min_test_positives} test positives (the classes)",
                              len(classes), n_findings, "findings"))
    return finish("padchest", table, classes, "multilabel", folder, description, excluded, max_size,
                  selection=selection)


def _rows_with_findings(
    labels: pd.Series,
    image_ids: pd.Series,
    projection_values: pd.Series,
    wanted: set[str] | None,
    ignored: set[str],
    drop_exclude_flag: bool,
    excluded: list[dict],
) -> tuple[np.ndarray, list[list[str]]]:
    """Rules 1-3 of :func:`load_padchest`: which rows are kept (each other row added to
    ``excluded`` with its reason) and the findings of every kept row (``[]`` for the others)."""
    parsed_cache: dict[Any, list[str] | None] = {}
    terms = [parsed_cache[v] if v in parsed_cache else parsed_cache.setdefault(v, parse_padchest_labels(v))
             for v in labels]
    keep = np.zeros(len(labels), dtype=bool)
    findings: list[list[str]] = [[] for _ in range(len(labels))]
    for i, (image_id, row_terms, projection) in enumerate(zip(image_ids, terms, projection_values)):
        if wanted is not None and projection not in wanted:
            excluded.append(exclusion(image_id, "", f"projection not in {sorted(wanted)}", projection=projection))
        elif row_terms is None:
            excluded.append(exclusion(image_id, "", "no Labels entry"))
        elif drop_exclude_flag and PADCHEST_EXCLUDE_TERM in row_terms:
            excluded.append(exclusion(image_id, "", "labelled 'exclude' by PadChest (drop_exclude_flag)"))
        else:
            findings[i] = [t for t in row_terms if t not in ignored]
            keep[i] = True
    return keep, findings


def _superseded_automatic(patients: pd.Series, image_ids: pd.Series, keep: np.ndarray, by_radiologist: np.ndarray,
                          excluded: list[dict]) -> np.ndarray:
    """Rule 4 of :func:`load_padchest`: kept automatic-label rows of patients who also have a
    radiologist-labelled row (each added to ``excluded``)."""
    radiologist_patients = np.unique(patients[keep & by_radiologist])
    superseded = keep & ~by_radiologist & patients.isin(set(radiologist_patients)).to_numpy()
    for image_id in image_ids[superseded]:
        excluded.append(exclusion(image_id, "", "automatic labels of a patient with radiologist labels"))
    return superseded


def _draw_test_patients(
    labels_csv: str | Path,
    patients: np.ndarray,
    findings: list[list[str]],
    keep: np.ndarray,
    by_radiologist: np.ndarray,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, list[dict]]:
    """Rule 5 of :func:`load_padchest`: ``(is_test per CSV row, the selection counts)``.

    The draw is over patients, not images: the study's test holds 30 % of the radiologist-labelled
    patients (7,272 of 24,239). Each patient is one row labelled with every finding on any of
    its images, so the shares are met per finding in patients and the test set is never
    skewed towards patients with one image.
    """
    candidates = np.flatnonzero(keep & by_radiologist)
    patient_ids, patient_of_row = np.unique(patients[candidates], return_inverse=True)
    if len(patient_ids) < 2:
        raise DataError(f"{labels_csv}: fewer than 2 radiologist-labelled patients left; cannot draw a test set")
    per_patient: list[set[str]] = [set() for _ in patient_ids]
    for i, k in zip(candidates, patient_of_row):
        per_patient[k].update(findings[i])
    drawn = group_stratified_split(_finding_matrix([sorted(s) for s in per_patient]), None,
                                   {"train": 1 - test_fraction, "test": test_fraction}, seed)
    is_test = np.zeros(len(patients), dtype=bool)
    is_test[candidates[drawn[patient_of_row] == "test"]] = True
    selection = [
        selected("radiologist-labelled (Physician) images among those kept", len(candidates), int(keep.sum())),
        selected(f"test: radiologist-labelled patients drawn ({test_fraction:.0%}, stratified, seed {seed})",
                 int((drawn == "test").sum()), len(patient_ids), "patients"),
    ]
    return is_test, selection


def _image_sources(folder: Path, image_dirs: pd.Series, image_ids: pd.Series, rows: np.ndarray,
                   check_files: bool) -> list[str | None]:
    """Image paths of ``rows`` relative to ``folder``: found on disk (``None`` if missing), or
    without ``check_files`` ``<ImageDir>/<ImageID>`` where that folder exists, else ``<ImageID>``."""
    directories = image_dirs.fillna("").str.strip().to_numpy()[rows]
    names = image_ids.to_numpy()[rows]
    if check_files:
        return locate(folder, list(names), folder, True)
    nested = {d: (folder / d).is_dir() for d in set(directories)}
    return [f"{d}/{n}" if nested[d] else n for d, n in zip(directories, names)]


def _findings_as_classes(table: pd.DataFrame, labels_csv: str | Path,
                         min_test_positives: int) -> tuple[pd.DataFrame, list[str], int]:
    """Rule 7 of :func:`load_padchest`: the findings with more than ``min_test_positives``
    positive test images become the classes (most frequent first), the ``terms`` column becomes
    ``label`` (class positions); returns the table, the classes and the number of findings seen
    in the test set."""
    test_counts = pd.Series(
        [t for row_terms in table.loc[table["split"] == "test", "terms"] for t in row_terms], dtype=object
    ).value_counts()
    kept = test_counts[test_counts > min_test_positives]
    classes = sorted(kept.index, key=lambda t: (-kept[t], t))
    if not classes:
        raise DataError(f"{labels_csv}: no finding has more than {min_test_positives} positive test images")
    position = {term: k for k, term in enumerate(classes)}
    table["label"] = [tuple(sorted(position[t] for t in row_terms if t in position)) for row_terms in table["terms"]]
    return table.drop(columns="terms"), classes, len(test_counts)


def _carve_validation(table: pd.DataFrame, n_classes: int, val_fraction: float, seed: int) -> None:
    """Rule 7's validation split, in place: ``val_fraction`` of the train rows by patient,
    stratified over the classes."""
    pool = (table["split"] == "train").to_numpy()
    if pool.any() and val_fraction > 0:
        matrix = np.zeros((int(pool.sum()), n_classes), dtype=np.int8)
        for r, label in enumerate(table.loc[pool, "label"]):
            matrix[r, list(label)] = 1
        table.loc[pool, "split"] = group_stratified_split(
            matrix, table.loc[pool, "group"].to_numpy(),
            {"train": 1 - val_fraction, "val": val_fraction}, seed,
        )
