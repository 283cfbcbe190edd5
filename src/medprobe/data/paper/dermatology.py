"""Dermatology tasks: T3 ISIC 2018 (HAM10000) diagnoses, T4 SIIM-ISIC 2020 melanoma."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.errors import DataError
from medprobe.data.paper.sample_table import (
    absolute,
    check_fraction,
    common_root,
    drop_missing,
    finish,
    integers,
    locate,
    read_csv,
    selected,
    split_pool,
)

ISIC2018_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def _isic_labels(table: pd.DataFrame, where: str) -> np.ndarray:
    """Class index per row from the one-hot ground-truth columns (exactly one 1 per row)."""
    values = table[ISIC2018_CLASSES].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    valid = np.isin(values, (0.0, 1.0)).all(axis=1) & (values.sum(axis=1) == 1)
    if not valid.all():
        bad = table.loc[~valid, "image"].head(5).tolist()
        raise DataError(f"{where}: rows must be one-hot over {ISIC2018_CLASSES}; not so for {bad}")
    return values.argmax(axis=1)


def load_isic2018(
    image_dir: str | Path,
    ground_truth_csv: str | Path,
    *,
    metadata_csv: str | Path | None = None,
    val_image_dir: str | Path | None = None,
    val_csv: str | Path | None = None,
    test_image_dir: str | Path | None = None,
    test_csv: str | Path | None = None,
    official_val_to_train: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_suffix: str = ".jpg",
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T3: ISIC 2018 task 3 / HAM10000, 7 diagnoses, as the study ran it.

    The study tested on the official ISIC 2018 test set (1,512 images) and trained on the official
    training and validation images (10,015 + 193 = 10,208). ``configs/paper/t3.yaml`` does that:
    give ``test_image_dir``/``test_csv`` (``ISIC2018_Task3_Test_Input``,
    ``ISIC2018_Task3_Test_GroundTruth.csv``) and ``val_image_dir``/``val_csv``
    (``ISIC2018_Task3_Validation_Input``, ``ISIC2018_Task3_Validation_GroundTruth.csv``); with
    ``official_val_to_train`` (default) the official validation images join the training pool and
    the probe's val split (``val_fraction``) is drawn from that pool by lesion, since the study
    names no validation split of its own. ``official_val_to_train=False`` keeps the official
    validation set as val.

    ``ground_truth_csv``: ``ISIC2018_Task3_Training_GroundTruth.csv`` (``image, MEL, NV, BCC,
    AKIEC, BKL, DF, VASC``, one-hot; the validation and test files have the same columns); images
    ``<image_dir>/<image><image_suffix>``. Without an official test set, ``test_fraction`` of the
    training pool is drawn as test (by group). ``metadata_csv`` (``HAM10000_metadata.csv``:
    ``lesion_id, image_id, dx, ...``) makes the lesion the group, so several photographs of one
    lesion never span splits; its ``dx`` must agree with the ground truth. Images it does not
    cover (the official validation and test images) are their own group.
    """
    check_fraction(val_fraction, "val_fraction")
    check_fraction(test_fraction, "test_fraction")
    sources = {"train": (image_dir, ground_truth_csv)}
    for split, folder, csv in (("val", val_image_dir, val_csv), ("test", test_image_dir, test_csv)):
        if (folder is None) != (csv is None):
            raise DataError(f"ISIC 2018 official {split} set: give both {split}_image_dir and {split}_csv")
        if folder is not None:
            sources[split] = (folder, csv)
    folders = {split: absolute(folder) for split, (folder, _) in sources.items()}
    root = common_root(*folders.values())

    lesions: dict[str, str] = {}
    diagnoses: dict[str, str] = {}
    if metadata_csv is not None:
        metadata = read_csv(metadata_csv, "HAM10000 metadata", ["lesion_id", "image_id", "dx"])
        lesions = dict(zip(metadata["image_id"], metadata["lesion_id"]))
        diagnoses = dict(zip(metadata["image_id"], metadata["dx"].str.strip().str.upper()))

    pooled_val = official_val_to_train and "val" in sources
    frames, excluded = [], []
    for split, (_, csv) in sources.items():
        table = read_csv(csv, f"ISIC 2018 {split} ground truth", ["image", *ISIC2018_CLASSES])
        labels = _isic_labels(table, str(csv))
        names = table["image"].str.strip()
        disagree = [(n, diagnoses[n], ISIC2018_CLASSES[k]) for n, k in zip(names, labels)
                    if n in diagnoses and diagnoses[n] != ISIC2018_CLASSES[k]]
        if disagree:
            raise DataError(f"{metadata_csv}: dx disagrees with {csv} for {len(disagree)} image(s), "
                            f"e.g. (image, dx, ground truth) {disagree[:3]}")
        frame = pd.DataFrame({
            "sample_id": names,
            "split": "train" if split == "val" and pooled_val else split,
            "label": labels,
            "group": [lesions.get(n) for n in names],
            "source": locate(folders[split], [n + image_suffix for n in names], root, check_files),
            "official_set": split,
        })
        frames.append(drop_missing(frame, excluded, folders[split]))
    table = pd.concat(frames, ignore_index=True)

    pool = (table["split"] == "train").to_numpy()
    fractions = {"train": 1.0, "val": 0.0 if "val" in sources and not pooled_val else val_fraction,
                 "test": 0.0 if "test" in sources else test_fraction}
    fractions["train"] = 1.0 - fractions["val"] - fractions["test"]
    table.loc[pool, "split"] = split_pool(
        table.loc[pool, "label"].to_numpy(), table.loc[pool, "group"].to_numpy(), fractions, seed
    )
    table["label"] = table["label"].astype(int).tolist()
    official = [s for s in ("val", "test") if s in sources and not (s == "val" and pooled_val)]
    drawn = ", ".join(f"{s} {f:.0%}" for s, f in fractions.items() if f and s != "train") or "none"
    description = ("ISIC 2018 task 3 (HAM10000), 7 diagnoses; "
                   + ("official validation images trained on; " if pooled_val else "")
                   + (f"official {' and '.join(official)} set(s); " if official else "")
                   + f"drawn from training: {drawn} (seed {seed}); "
                   + f"groups: {'lesion_id' if lesions else 'none'}")
    counts = table["official_set"].value_counts()
    selection = [selected(f"official {part} images, used as {'train/val' if part != 'test' else 'test'}",
                          int(counts.get(part, 0)), len(table)) for part in sources]
    return finish("isic2018", table, ISIC2018_CLASSES, "multiclass", root, description, excluded, max_size,
                  selection=selection)


# ======================================================================= T4: SIIM-ISIC 2020
SIIM_CLASSES = ["benign", "malignant"]
#: The study's split of the 33,126 training images: 26,045 train / 7,081 test by patient.
STUDY_SIIM_TEST_FRACTION = round(7_081 / 33_126, 4)


def load_siim_isic2020(
    image_dir: str | Path,
    train_csv: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = STUDY_SIIM_TEST_FRACTION,
    seed: int = 0,
    image_suffix: str = ".jpg",
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T4: SIIM-ISIC Melanoma Classification 2020, benign vs malignant.

    ``train_csv``: the challenge's ``train.csv`` (``image_name, patient_id, sex, age_approx,
    anatom_site_general_challenge, diagnosis, benign_malignant, target``); images
    ``<image_dir>/<image_name><image_suffix>`` (``.jpg``; ``.dcm`` for the DICOM release). The
    challenge's test labels were never published, so the study split the 33,126 training images by
    patient into 26,045 train and 7,081 test (about 79/21). Its patient list is not published: the
    default ``test_fraction`` (0.2138 = 7,081 / 33,126) draws a test set of that size by
    ``patient_id``, stratified by ``target`` and seeded, and ``val_fraction`` (0.1 of all images)
    comes out of the study's training share. ``target`` must agree with
    ``benign_malignant``. Kept columns: sex, age_approx, anatom_site_general_challenge, diagnosis.
    """
    check_fraction(val_fraction, "val_fraction")
    check_fraction(test_fraction, "test_fraction")
    folder = absolute(image_dir)
    columns = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
               "diagnosis", "benign_malignant", "target"]
    csv = read_csv(train_csv, "SIIM-ISIC 2020 train CSV", columns)
    names = csv["image_name"].str.strip()
    labels = integers(csv["target"], (0, 1), f"{train_csv} column target", names)
    stated = csv["benign_malignant"].str.strip().str.lower()
    mismatch = stated != np.asarray(SIIM_CLASSES, dtype=object)[labels]
    if mismatch.any():
        raise DataError(f"{train_csv}: target disagrees with benign_malignant for {names[mismatch][:5].tolist()}")
    table = pd.DataFrame({
        "sample_id": names,
        "split": "train",
        "label": labels,
        "group": csv["patient_id"].str.strip(),
        "source": locate(folder, [n + image_suffix for n in names], folder, check_files),
        "sex": csv["sex"],
        "age_approx": pd.to_numeric(csv["age_approx"], errors="coerce"),
        "anatom_site_general_challenge": csv["anatom_site_general_challenge"],
        "diagnosis": csv["diagnosis"],
    })
    excluded: list[dict] = []
    table = drop_missing(table, excluded, folder)
    fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    table["split"] = split_pool(table["label"].to_numpy(), table["group"].to_numpy(), fractions, seed)
    table["label"] = table["label"].astype(int).tolist()
    description = (f"SIIM-ISIC 2020 training set split by patient (train/val/test "
                   f"{fractions['train']:.0%}/{val_fraction:.0%}/{test_fraction:.0%}, seed {seed})")
    return finish("siim_isic2020", table, SIIM_CLASSES, "binary", folder, description, excluded, max_size)
