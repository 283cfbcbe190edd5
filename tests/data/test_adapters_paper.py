"""The eight study adapters on tiny fixtures in each data set's real on-disk format.

Every fixture is built so the expected labels, splits and exclusions are known by construction;
PadChest is also checked on its real label CSV (shipped in the torchxrayvision wheel).
"""

from __future__ import annotations

import inspect
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medprobe.config import DataConfig
from medprobe.data.dataset import Dataset
from medprobe.data.loaders import load_dataset
from medprobe.data.paper import (
    ISIC2018_CLASSES,
    KATHER_CLASSES,
    PAPER_TASKS,
    count_nuclei,
    load_airogs_odir,
    load_eyepacs_aptos,
    load_isic2018,
    load_kather,
    load_knee_kl,
    load_pannuke,
    load_siim_isic2020,
    odir_eye_label,
)
from medprobe.errors import DataError


# ------------------------------------------------------------------------------ helpers
def write_rgb(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> np.ndarray:
    """A small RGB image with known pixels (values 10..200 so the maximum is never 0)."""
    pixels = np.random.default_rng(seed).integers(10, 201, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def assert_reads_as(dataset: Dataset, sample_id: str, pixels: np.ndarray | None = None) -> np.ndarray:
    row = dataset.samples.set_index("sample_id").loc[sample_id].copy()
    row["sample_id"] = sample_id
    image = dataset.read_image(row)
    assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
    if pixels is not None:
        reference = pixels.astype(np.float64)
        reference = reference / reference.max()
        if reference.ndim == 2:
            reference = np.repeat(reference[:, :, None], 3, axis=2)
        np.testing.assert_allclose(image, reference, atol=1e-6)
    return image


def no_group_leaks(dataset: Dataset) -> bool:
    grouped = dataset.samples.dropna(subset=["group"])
    return bool((grouped.groupby("group")["split"].nunique() <= 1).all())


def label_of(dataset: Dataset, sample_id: str):
    return dataset.samples.set_index("sample_id").loc[sample_id, "label"]


# ---------------------------------------------------------------------------- T1 Kather
def make_kather(tmp_path: Path, per_class_train: int = 10, per_class_test: int = 2) -> dict[str, np.ndarray]:
    pixels = {}
    for folder, n, tag in (("NCT-CRC-HE-100K", per_class_train, ""), ("CRC-VAL-HE-7K", per_class_test, "TCGA-")):
        for k, name in enumerate(KATHER_CLASSES):
            for i in range(n):
                file = tmp_path / folder / name / f"{name}-{tag}{i:04d}.tif"
                pixels[f"{folder}/{name}/{file.name}"] = write_rgb(file, seed=k * 100 + i, size=(6, 5))
    (tmp_path / "NCT-CRC-HE-100K" / "ADI" / "Thumbs.db").write_bytes(b"not an image")
    return pixels


def test_kather_classes_splits_and_reading(tmp_path: Path) -> None:
    pixels = make_kather(tmp_path)
    ds = load_kather(tmp_path / "NCT-CRC-HE-100K", tmp_path / "CRC-VAL-HE-7K", val_fraction=0.1, seed=3)
    assert ds.classes == KATHER_CLASSES and ds.task_type == "multiclass"
    assert ds.samples["split"].value_counts().to_dict() == {"train": 81, "test": 18, "val": 9}
    # 10% of each class's 10 tiles is exactly one validation tile per class.
    val = ds.split("val")
    assert sorted(val["label"]) == list(range(9))
    assert (ds.split("test")["sample_id"].str.startswith("CRC-VAL-HE-7K/")).all()
    assert label_of(ds, "CRC-VAL-HE-7K/MUS/MUS-TCGA-0001.tif") == KATHER_CLASSES.index("MUS")
    assert ds.samples["group"].isna().all()
    assert not ds.samples["source"].str.endswith("Thumbs.db").any()
    assert ds.excluded == [{"sample_id": "NCT-CRC-HE-100K/ADI/Thumbs.db",
                            "source": "NCT-CRC-HE-100K/ADI/Thumbs.db", "reason": "not an image file"}]
    assert_reads_as(ds, "NCT-CRC-HE-100K/TUM/TUM-0003.tif", pixels["NCT-CRC-HE-100K/TUM/TUM-0003.tif"])
    again = load_kather(tmp_path / "NCT-CRC-HE-100K", tmp_path / "CRC-VAL-HE-7K", val_fraction=0.1, seed=3)
    assert again.samples["split"].equals(ds.samples["split"])


def test_kather_rejects_wrong_class_folders(tmp_path: Path) -> None:
    make_kather(tmp_path, per_class_train=1, per_class_test=1)
    (tmp_path / "NCT-CRC-HE-100K" / "ADIPOSE").mkdir()
    with pytest.raises(DataError, match="unexpected \\['ADIPOSE'\\]"):
        load_kather(tmp_path / "NCT-CRC-HE-100K", tmp_path / "CRC-VAL-HE-7K")
    (tmp_path / "NCT-CRC-HE-100K" / "ADIPOSE").rmdir()
    for file in (tmp_path / "CRC-VAL-HE-7K" / "NORM").iterdir():
        file.unlink()
    (tmp_path / "CRC-VAL-HE-7K" / "NORM").rmdir()
    with pytest.raises(DataError, match="missing \\['NORM'\\]"):
        load_kather(tmp_path / "NCT-CRC-HE-100K", tmp_path / "CRC-VAL-HE-7K")


# --------------------------------------------------------------------------- T2 PanNuke
def draw_nuclei(mask: np.ndarray, channel: int, n: int, rng: np.random.Generator, first_id: int) -> None:
    """``n`` nuclei of 1-3 pixels each, with instance ids first_id.. (spread over the patch)."""
    free = np.flatnonzero(mask[:, :, :5].sum(axis=2).ravel() == 0)
    cells = rng.choice(free, size=3 * n, replace=False).reshape(n, 3)
    for k, cell in enumerate(cells):
        for pixel in cell[: rng.integers(1, 4)]:
            y, x = divmod(int(pixel), mask.shape[1])
            mask[y, x, channel] = first_id + k


# (neoplastic, other nuclei by channel 1-4) -> expected label: 1 malignant, 0 benign, None excluded
PANNUKE_CASES = [
    ((12, (3, 0, 0, 0)), 1),   # 12 of 15 neoplastic
    ((0, (0, 5, 0, 0)), 0),    # no neoplastic nucleus
    ((0, (0, 0, 0, 0)), 0),    # no nucleus at all
    ((10, (30, 0, 0, 0)), None),  # 10 of 40 = 25%
    ((5, (0, 0, 0, 0)), None),   # too few
    ((10, (0, 0, 0, 20)), None),  # exactly 10 neoplastic (33%): not *more than* 10
    ((11, (0, 0, 0, 20)), 1),   # 11 of 31 = 35%: both limits just met
    ((12, (0, 28, 0, 0)), None),  # exactly 30%: not above
    ((1, (0, 0, 2, 0)), None),
]


def make_pannuke_fold(folder: Path, fold: int, published_layout: bool, size: int = 24, repeat: int = 1) -> np.ndarray:
    """Patch ``i`` is case ``i % len(PANNUKE_CASES)``; tissue ``Organ<fold><i % 3>``."""
    rng = np.random.default_rng(fold)
    n = len(PANNUKE_CASES) * repeat
    images = rng.uniform(20, 240, size=(n, size, size, 3))  # PanNuke stores float64 pixels
    masks = np.zeros((n, size, size, 6))
    for i, ((neoplastic, others), _) in enumerate(PANNUKE_CASES * repeat):
        draw_nuclei(masks[i], 0, neoplastic, rng, first_id=1)
        next_id = neoplastic + 1
        for channel, count in enumerate(others, start=1):
            # Ids restart per channel in part: the same id value in two channels is two nuclei.
            draw_nuclei(masks[i], channel, count, rng, first_id=1 if channel == 1 else next_id)
            next_id += count
        masks[i, :, :, 5] = (masks[i, :, :, :5].sum(axis=2) == 0)
    types = np.array([f"Organ{fold}{i % 3}" for i in range(n)])
    if published_layout:
        image_dir = folder / f"Fold {fold}" / "images" / f"fold{fold}"
        mask_dir = folder / f"Fold {fold}" / "masks" / f"fold{fold}"
    else:
        image_dir = mask_dir = folder / f"fold{fold}"
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    np.save(image_dir / "images.npy", images)
    np.save(image_dir / "types.npy", types)
    np.save(mask_dir / "masks.npy", masks)
    return images


def test_count_nuclei_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    masks = np.where(rng.random((21, 9, 7, 6)) < 0.3, rng.integers(1, 40, (21, 9, 7, 6)), 0).astype(np.float64)
    expected = np.array([[len(set(masks[i, :, :, c].ravel()) - {0}) for c in range(5)] for i in range(21)])
    np.testing.assert_array_equal(count_nuclei(masks, chunk=4), expected)


def test_pannuke_labels_exclusions_folds_and_layouts(tmp_path: Path) -> None:
    images = {fold: make_pannuke_fold(tmp_path, fold, published_layout=fold != 3) for fold in (1, 2, 3)}
    ds = load_pannuke(tmp_path, val_fraction=0.0)
    assert ds.classes == ["benign", "malignant"] and ds.task_type == "binary"
    kept = [i for i, (_, label) in enumerate(PANNUKE_CASES) if label is not None]
    assert len(ds.samples) == 3 * len(kept)
    assert len(ds.excluded) == 3 * (len(PANNUKE_CASES) - len(kept))
    samples = ds.samples.set_index("sample_id")
    for fold in (1, 2, 3):
        for i, (counts, label) in enumerate(PANNUKE_CASES):
            sample_id = f"fold{fold}/{i:05d}"
            if label is None:
                assert sample_id not in samples.index
            else:
                row = samples.loc[sample_id]
                assert row["label"] == label
                assert row["n_neoplastic"] == counts[0] and row["n_nuclei"] == counts[0] + sum(counts[1])
                assert row["organ"] == f"Organ{fold}{i % 3}"
    details = {e["sample_id"]: (e["n_neoplastic"], e["n_nuclei"]) for e in ds.excluded}
    assert details["fold1/00003"] == (10, 40) and details["fold2/00005"] == (10, 30)  # exactly 10: not malignant
    assert len({e["reason"] for e in ds.excluded}) == 1  # one rule, counted as one reason
    assert set(ds.samples["split"]) == {"train", "test"}
    n_malignant = 3 * sum(label == 1 for _, label in PANNUKE_CASES)
    assert [(r["selected"], r["of"]) for r in ds.selection] == [
        (n_malignant, 3 * len(PANNUKE_CASES)), (len(ds.samples) - n_malignant, 3 * len(PANNUKE_CASES))]
    assert ds.samples["group"].isna().all() and "organ" in ds.samples.columns
    image = assert_reads_as(ds, "fold3/00006", images[3][6])
    assert image.shape == (24, 24, 3)
    # Readers travel to worker processes: the memory maps are reopened there.
    reader = pickle.loads(pickle.dumps(ds.read_image))
    row = ds.samples.iloc[0]
    np.testing.assert_array_equal(reader(row), ds.read_image(row))

    by_fold = load_pannuke(tmp_path, test_fraction=None, test_folds=[3], val_fraction=0.0)
    assert set(by_fold.split("test")["fold"]) == {3} and set(by_fold.split("train")["fold"]) == {1, 2}


def test_pannuke_study_split_is_80_20_stratified_and_seeded(tmp_path: Path) -> None:
    for fold in (1, 2, 3):
        make_pannuke_fold(tmp_path, fold, published_layout=True, size=16, repeat=5)
    ds = load_pannuke(tmp_path, val_fraction=0.0, seed=0)
    samples = ds.samples
    assert len(samples) == 3 * 5 * sum(label is not None for _, label in PANNUKE_CASES)
    test = samples["split"] == "test"
    assert int(test.sum()) == round(0.2 * len(samples))
    # every label x tissue stratum keeps its 20 % share in test
    shares = samples.assign(test=test).groupby(["label", "organ"])["test"].mean()
    assert (shares.between(0.1, 0.3)).all(), shares
    assert load_pannuke(tmp_path, val_fraction=0.0, seed=0).samples.equals(samples)
    other = load_pannuke(tmp_path, val_fraction=0.0, seed=1)
    assert set(other.split("test")["sample_id"]) != set(ds.split("test")["sample_id"])
    with_val = load_pannuke(tmp_path, val_fraction=0.1, seed=0)
    assert set(with_val.split("test")["sample_id"]) == set(ds.split("test")["sample_id"])
    assert 0 < len(with_val.split("val")) <= 0.2 * int((~test).sum())  # strata of ~3 patches round down


def test_pannuke_errors(tmp_path: Path) -> None:
    make_pannuke_fold(tmp_path, 1, published_layout=True)
    with pytest.raises(DataError, match="PanNuke fold 2 not found"):
        load_pannuke(tmp_path)
    with pytest.raises(DataError, match="not both or neither"):
        load_pannuke(tmp_path, test_folds=(1,))
    make_pannuke_fold(tmp_path, 2, published_layout=False)
    make_pannuke_fold(tmp_path, 3, published_layout=False)
    np.save(tmp_path / "fold3" / "types.npy", np.array(["Breast"] * len(PANNUKE_CASES), dtype=object))
    with pytest.raises(DataError, match="never unpickles"):
        load_pannuke(tmp_path)


# --------------------------------------------------------------------------- T3 ISIC 2018
def one_hot_csv(path: Path, names: list[str], labels: list[int]) -> None:
    table = pd.DataFrame(np.eye(7)[labels], columns=ISIC2018_CLASSES)
    table.insert(0, "image", names)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)


def make_isic(tmp_path: Path, n_lesions: int = 70) -> tuple[list[str], list[int], dict[str, str]]:
    rng = np.random.default_rng(0)
    names, labels, lesions = [], [], {}
    for lesion in range(n_lesions):
        label = lesion % 7
        for _ in range(int(rng.integers(1, 4))):
            name = f"ISIC_{24306 + len(names):07d}"
            names.append(name)
            labels.append(label)
            lesions[name] = f"HAM_{lesion:07d}"
            write_rgb(tmp_path / "ISIC2018_Task3_Training_Input" / f"{name}.jpg", seed=len(names), size=(8, 6))
    one_hot_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv", names, labels)
    dx = {k: c.lower() for k, c in enumerate(ISIC2018_CLASSES)}
    pd.DataFrame({
        "lesion_id": [lesions[n] for n in names], "image_id": names, "dx": [dx[k] for k in labels],
        "dx_type": "histo", "age": 50.0, "sex": "male", "localization": "back",
    }).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    return names, labels, lesions


def test_isic2018_lesion_groups_and_drawn_splits(tmp_path: Path) -> None:
    names, labels, lesions = make_isic(tmp_path)
    ds = load_isic2018(tmp_path / "ISIC2018_Task3_Training_Input", tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv",
                       metadata_csv=tmp_path / "HAM10000_metadata.csv", seed=1)
    assert ds.classes == ISIC2018_CLASSES and ds.task_type == "multiclass"
    assert len(ds.samples) == len(names)
    assert ds.samples.set_index("sample_id").loc[names[5], "group"] == lesions[names[5]]
    assert no_group_leaks(ds)
    shares = ds.samples["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.06 and abs(shares["val"] - 0.1) < 0.06
    for split in ("train", "val", "test"):
        assert set(ds.split(split)["label"]) == set(range(7))
    assert label_of(ds, names[10]) == labels[10]
    assert_reads_as(ds, names[0])


def test_isic2018_official_splits_missing_images_and_checks(tmp_path: Path) -> None:
    names, labels, _ = make_isic(tmp_path, n_lesions=14)
    (tmp_path / "ISIC2018_Task3_Training_Input" / f"{names[0]}.jpg").unlink()
    val_names = [f"ISIC_{34321 + i:07d}" for i in range(7)]
    for i, name in enumerate(val_names):
        write_rgb(tmp_path / "ISIC2018_Task3_Validation_Input" / f"{name}.jpg", seed=500 + i)
    one_hot_csv(tmp_path / "ISIC2018_Task3_Validation_GroundTruth.csv", val_names, list(range(7)))
    ds = load_isic2018(
        tmp_path / "ISIC2018_Task3_Training_Input", tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv",
        val_image_dir=tmp_path / "ISIC2018_Task3_Validation_Input",
        val_csv=tmp_path / "ISIC2018_Task3_Validation_GroundTruth.csv", official_val_to_train=False,
    )
    assert sorted(ds.split("val")["sample_id"]) == val_names
    assert label_of(ds, val_names[3]) == 3
    assert set(ds.samples["split"]) == {"train", "val", "test"}
    assert names[0] not in set(ds.samples["sample_id"])
    assert ds.excluded[0]["sample_id"] == names[0] and "not found" in ds.excluded[0]["reason"]
    assert ds.root == tmp_path.resolve()
    assert ds.samples.set_index("sample_id").loc[val_names[0], "source"].startswith("ISIC2018_Task3_Validation_Input/")

    bad_dx = pd.read_csv(tmp_path / "HAM10000_metadata.csv")
    bad_dx.loc[1, "dx"] = "df" if bad_dx.loc[1, "dx"] != "df" else "nv"
    bad_dx.to_csv(tmp_path / "bad_metadata.csv", index=False)
    with pytest.raises(DataError, match="dx disagrees"):
        load_isic2018(tmp_path / "ISIC2018_Task3_Training_Input", tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv",
                      metadata_csv=tmp_path / "bad_metadata.csv")
    table = pd.read_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv")
    table.loc[2, "MEL"] = 1.0
    table.loc[2, "NV"] = 1.0
    table.to_csv(tmp_path / "two_hot.csv", index=False)
    with pytest.raises(DataError, match="one-hot"):
        load_isic2018(tmp_path / "ISIC2018_Task3_Training_Input", tmp_path / "two_hot.csv")
    with pytest.raises(DataError, match="none of the"):
        load_isic2018(tmp_path / "ISIC2018_Task3_Validation_Input",
                      tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv")


def test_isic2018_official_test_and_train_plus_validation_as_the_study(tmp_path: Path) -> None:
    names, labels, lesions = make_isic(tmp_path, n_lesions=35)
    sets = {}
    for part, first, n in (("Validation", 34321, 14), ("Test", 34524, 21)):
        sets[part] = [f"ISIC_{first + i:07d}" for i in range(n)]
        for i, name in enumerate(sets[part]):
            write_rgb(tmp_path / f"ISIC2018_Task3_{part}_Input" / f"{name}.jpg", seed=900 + i)
        one_hot_csv(tmp_path / f"ISIC2018_Task3_{part}_GroundTruth.csv", sets[part], [i % 7 for i in range(n)])
    ds = load_isic2018(
        tmp_path / "ISIC2018_Task3_Training_Input", tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv",
        metadata_csv=tmp_path / "HAM10000_metadata.csv",
        val_image_dir=tmp_path / "ISIC2018_Task3_Validation_Input",
        val_csv=tmp_path / "ISIC2018_Task3_Validation_GroundTruth.csv",
        test_image_dir=tmp_path / "ISIC2018_Task3_Test_Input", test_csv=tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv",
    )
    assert sorted(ds.split("test")["sample_id"]) == sets["Test"]  # the official test list, exactly
    train_val = ds.samples[ds.samples["split"] != "test"]
    assert set(train_val["sample_id"]) == set(names) | set(sets["Validation"])  # trained on train + validation
    assert set(train_val["official_set"]) == {"train", "val"} and set(train_val["split"]) == {"train", "val"}
    assert abs((train_val["split"] == "val").mean() - 0.1) < 0.05 and no_group_leaks(ds)
    assert label_of(ds, sets["Test"][4]) == 4


# ----------------------------------------------------------------------- T4 SIIM-ISIC 2020
def test_siim_isic2020_patient_split_and_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = []
    for patient in range(60):
        malignant_patient = patient % 4 == 0
        for k in range(int(rng.integers(1, 5))):
            target = int(malignant_patient and k == 0)
            name = f"ISIC_{len(rows):07d}"
            rows.append({"image_name": name, "patient_id": f"IP_{patient:07d}", "sex": "female",
                         "age_approx": "45.0", "anatom_site_general_challenge": "torso",
                         "diagnosis": "melanoma" if target else "nevus",
                         "benign_malignant": "malignant" if target else "benign", "target": str(target)})
            write_rgb(tmp_path / "train" / f"{name}.jpg", seed=len(rows), size=(7, 7))
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    ds = load_siim_isic2020(tmp_path / "train", tmp_path / "train.csv", seed=0)
    assert ds.classes == ["benign", "malignant"] and ds.task_type == "binary"
    assert len(ds.samples) == len(rows) and no_group_leaks(ds)
    assert ds.samples["group"].str.startswith("IP_").all()
    for split in ("train", "val", "test"):
        assert ds.labels(ds.split(split)).sum() >= 1  # 15 malignant patients reach every split
    assert abs(ds.samples["split"].eq("test").mean() - 7_081 / 33_126) < 0.07  # the study's 79/21
    assert label_of(ds, "ISIC_0000000") == 1
    assert {"sex", "age_approx", "anatom_site_general_challenge", "diagnosis"} <= set(ds.samples.columns)
    assert_reads_as(ds, "ISIC_0000003")

    broken = pd.DataFrame(rows)
    broken.loc[0, "benign_malignant"] = "benign"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(DataError, match="disagrees with benign_malignant"):
        load_siim_isic2020(tmp_path / "train", tmp_path / "broken.csv")


# --------------------------------------------------------------------- T5 EyePACS / APTOS
def test_eyepacs_aptos_external_test_and_eye_pairs(tmp_path: Path) -> None:
    eyepacs = []
    for patient in range(1, 41):
        for eye in ("left", "right"):
            name = f"{patient * 3}_{eye}"
            eyepacs.append({"image": name, "level": (patient + (eye == "right")) % 5})
            write_rgb(tmp_path / "eyepacs" / "train" / f"{name}.jpeg", seed=patient, size=(9, 8))
    pd.DataFrame(eyepacs).to_csv(tmp_path / "eyepacs" / "trainLabels.csv", index=False)
    aptos = [{"id_code": f"{i:04x}c1434d8d7", "diagnosis": i % 5} for i in range(10)]
    for row in aptos:
        write_rgb(tmp_path / "aptos" / "train_images" / f"{row['id_code']}.png", seed=7, size=(11, 9))
    pd.DataFrame(aptos).to_csv(tmp_path / "aptos" / "train.csv", index=False)

    ds = load_eyepacs_aptos(tmp_path / "eyepacs" / "train", tmp_path / "eyepacs" / "trainLabels.csv",
                            tmp_path / "aptos" / "train_images", tmp_path / "aptos" / "train.csv",
                            val_fraction=0.2, seed=0)
    assert ds.classes[0] == "no DR" and len(ds.classes) == 5 and ds.task_type == "multiclass"
    assert (ds.split("test")["cohort"] == "APTOS-2019").all() and len(ds.split("test")) == 10
    assert set(ds.samples.loc[ds.samples["cohort"] == "EyePACS", "split"]) == {"train", "val"}
    assert ds.samples.set_index("sample_id").loc["eyepacs/3_left", "group"] == "eyepacs:3"
    assert no_group_leaks(ds) and ds.samples.groupby("group").size().eq(2).all()
    assert len(ds.split("val")) == 16  # 20% of 80 eyes = 8 patients
    assert label_of(ds, "eyepacs/6_right") == 3 and label_of(ds, "aptos/0003c1434d8d7") == 3
    assert_reads_as(ds, "aptos/0002c1434d8d7")

    pd.DataFrame([{"image": "17", "level": 0}]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="_left"):
        load_eyepacs_aptos(tmp_path / "eyepacs" / "train", tmp_path / "bad.csv",
                           tmp_path / "aptos" / "train_images", tmp_path / "aptos" / "train.csv")


def test_eyepacs_train_and_test_solution_pooled_as_the_study(tmp_path: Path) -> None:
    """Kaggle's trainLabels.csv + retinopathy_solution.csv (image, level, Usage) pooled, by patient."""
    def write_part(folder: str, patients: range) -> list[dict]:
        rows = []
        for patient in patients:
            for eye in ("left", "right"):
                rows.append({"image": f"{patient}_{eye}", "level": patient % 5})
                write_rgb(tmp_path / "eyepacs" / folder / f"{patient}_{eye}.jpeg", seed=patient, size=(6, 6))
        return rows
    train_rows = write_part("train", range(2, 122, 2))  # Kaggle numbers patients once across both parts
    test_rows = write_part("test", range(1, 81, 2))
    for i, row in enumerate(test_rows):
        row["Usage"] = "Public" if i % 3 == 0 else "Private"
    pd.DataFrame(train_rows).to_csv(tmp_path / "eyepacs" / "trainLabels.csv", index=False)
    pd.DataFrame(test_rows).to_csv(tmp_path / "eyepacs" / "retinopathy_solution.csv", index=False)
    aptos = [{"id_code": f"{i:04x}c1434d8d7", "diagnosis": i % 5} for i in range(10)]
    for row in aptos:
        write_rgb(tmp_path / "aptos" / "train_images" / f"{row['id_code']}.png", seed=7, size=(11, 9))
    pd.DataFrame(aptos).to_csv(tmp_path / "aptos" / "train.csv", index=False)
    (tmp_path / "eyepacs" / "test" / "5_left.jpeg").unlink()

    ds = load_eyepacs_aptos(tmp_path / "eyepacs" / "train", tmp_path / "eyepacs" / "trainLabels.csv",
                            tmp_path / "aptos" / "train_images", tmp_path / "aptos" / "train.csv",
                            eyepacs_test_dir=tmp_path / "eyepacs" / "test",
                            eyepacs_test_csv=tmp_path / "eyepacs" / "retinopathy_solution.csv", seed=0)
    eyepacs = ds.samples[ds.samples["cohort"] == "EyePACS"]
    assert len(eyepacs) == len(train_rows) + len(test_rows) - 1  # both Kaggle parts, one image missing
    assert [(e["sample_id"], e["reason"]) for e in ds.excluded] == [("eyepacs/5_left", "image file not found")]
    assert eyepacs["kaggle_part"].value_counts().to_dict() == {"train": 120, "test/Private": 52, "test/Public": 27}
    assert set(eyepacs["split"]) == {"train", "val"} and (ds.split("test")["cohort"] == "APTOS-2019").all()
    assert no_group_leaks(ds)
    assert eyepacs.groupby("group").size().max() == 2  # the two eyes of a patient stay together
    share = (eyepacs["split"] == "val").mean()
    assert abs(share - 15_078 / 88_702) < 0.05  # the study's 73,622 / 15,078 division
    assert ds.samples.set_index("sample_id").loc["eyepacs/3_left", "source"] == "eyepacs/test/3_left.jpeg"
    twice = pd.DataFrame(train_rows[:2]).assign(Usage="Public")
    twice.to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(DataError, match="listed in both label files"):
        load_eyepacs_aptos(tmp_path / "eyepacs" / "train", tmp_path / "eyepacs" / "trainLabels.csv",
                           tmp_path / "aptos" / "train_images", tmp_path / "aptos" / "train.csv",
                           eyepacs_test_dir=tmp_path / "eyepacs" / "train", eyepacs_test_csv=tmp_path / "twice.csv")
    pd.DataFrame(test_rows).drop(columns="Usage").to_csv(tmp_path / "no_usage.csv", index=False)
    with pytest.raises(DataError, match="Usage"):
        load_eyepacs_aptos(tmp_path / "eyepacs" / "train", tmp_path / "eyepacs" / "trainLabels.csv",
                           tmp_path / "aptos" / "train_images", tmp_path / "aptos" / "train.csv",
                           eyepacs_test_dir=tmp_path / "eyepacs" / "test", eyepacs_test_csv=tmp_path / "no_usage.csv")


# ------------------------------------------------------------------------ T6 AIROGS / ODIR
ODIR_KEYWORDS = [  # (left, right) keywords -> labels per eye: all eyes (study), glaucoma-or-normal only
    (("normal fundus", "glaucoma"), (0, 1), (0, 1)),
    (("suspected glaucoma，cataract", "normal fundus，lens dust"), (1, 0), (1, 0)),
    (("moderate non proliferative retinopathy", "normal fundus"), (0, 0), (None, 0)),
    (("cataract", "Glaucoma"), (0, 1), (None, 1)),
    (("normal fundus", "normal fundus"), (0, 0), (0, 0)),
]
ODIR_XLSX = "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"


def make_airogs_odir(tmp_path: Path) -> None:
    """AIROGS parts and ODIR-5K as published: the .xlsx annotation sheet and ``Training Images``."""
    airogs = []
    for i in range(40):
        challenge_id = f"TRAIN{i:06d}"
        airogs.append({"challenge_id": challenge_id, "class": "RG" if i % 5 == 0 else "NRG"})
        write_rgb(tmp_path / "airogs" / str(i % 2) / f"{challenge_id}.jpg", seed=i, size=(10, 10))
    pd.DataFrame(airogs).to_csv(tmp_path / "airogs" / "train_labels.csv", index=False)
    rows = []
    for patient, ((left, right), _, _) in enumerate(ODIR_KEYWORDS):
        rows.append({"ID": patient, "Patient Age": 60, "Patient Sex": "Male",
                     "Left-Fundus": f"{patient}_left.jpg", "Right-Fundus": f"{patient}_right.jpg",
                     "Left-Diagnostic Keywords": left, "Right-Diagnostic Keywords": right,
                     **{c: 0 for c in "NDGCAHMO"}})
        for side in ("left", "right"):
            write_rgb(tmp_path / "ODIR-5K" / "Training Images" / f"{patient}_{side}.jpg", seed=patient, size=(12, 12))
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "ODIR-5K" / "annotations_export.csv", index=False)
    pytest.importorskip("openpyxl")
    table.to_excel(tmp_path / "ODIR-5K" / ODIR_XLSX, index=False)


@pytest.mark.parametrize("annotations", [ODIR_XLSX, "annotations_export.csv"])
def test_airogs_odir_all_eyes_as_the_study(tmp_path: Path, annotations: str) -> None:
    make_airogs_odir(tmp_path)
    ds = load_airogs_odir(tmp_path / "airogs", tmp_path / "airogs" / "train_labels.csv",
                          tmp_path / "ODIR-5K" / "Training Images", tmp_path / "ODIR-5K" / annotations,
                          val_fraction=0.25, seed=0)
    assert ds.classes == ["no glaucoma", "glaucoma"] and ds.task_type == "binary"
    airogs = ds.samples[ds.samples["cohort"] == "AIROGS"]
    assert len(airogs) == 40 and set(airogs["split"]) == {"train", "val"}
    assert airogs.groupby("split")["label"].sum().to_dict() == {"train": 6, "val": 2}  # 8 RG, 25% in val
    assert airogs.set_index("sample_id").loc["airogs/TRAIN000003", "source"] == "airogs/1/TRAIN000003.jpg"
    test = ds.split("test").set_index("sample_id")
    assert len(test) == 2 * len(ODIR_KEYWORDS) and ds.excluded == []  # every eye of every patient
    for patient, (_, expected, _) in enumerate(ODIR_KEYWORDS):
        for side, label in zip(("left", "right"), expected):
            assert test.loc[f"odir/{patient}_{side}.jpg", "label"] == label
            assert test.loc[f"odir/{patient}_{side}.jpg", "group"] == f"odir:{patient}"
    assert_reads_as(ds, "odir/1_left.jpg")
    assert_reads_as(ds, "airogs/TRAIN000010")

    narrow = load_airogs_odir(tmp_path / "airogs", tmp_path / "airogs" / "train_labels.csv",
                              tmp_path / "ODIR-5K" / "Training Images", tmp_path / "ODIR-5K" / annotations,
                              all_odir_eyes=False, check_files=False)
    narrow_test = narrow.split("test").set_index("sample_id")
    for patient, (_, _, expected) in enumerate(ODIR_KEYWORDS):
        for side, label in zip(("left", "right"), expected):
            sample_id = f"odir/{patient}_{side}.jpg"
            assert (sample_id not in narrow_test.index) if label is None else narrow_test.loc[sample_id, "label"] == label
    assert sorted(e["sample_id"] for e in narrow.excluded) == ["odir/2_left.jpg", "odir/3_left.jpg"]


def test_odir_xlsx_without_openpyxl_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    make_airogs_odir(tmp_path)
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # as if not installed
    with pytest.raises(DataError, match="openpyxl.*export the sheet to CSV"):
        load_airogs_odir(tmp_path / "airogs", tmp_path / "airogs" / "train_labels.csv",
                         tmp_path / "ODIR-5K" / "Training Images", tmp_path / "ODIR-5K" / ODIR_XLSX)


def test_odir_keyword_rule() -> None:
    assert odir_eye_label("normal fundus") == 0
    assert odir_eye_label("glaucoma, mild nonproliferative retinopathy") == 1
    assert odir_eye_label("lens dust") == 0 and odir_eye_label("lens dust", all_eyes=False) is None
    assert odir_eye_label(float("nan")) is None and odir_eye_label("  ") is None


# ----------------------------------------------------------------------------- T8 knee KL
def make_knees(tmp_path: Path) -> dict[str, int]:
    """OAI kxr_sq_bu00/01.txt and a MOST reading file in their published text layouts, plus one
    image per graded knee named by the default pattern; returns the expected grade per sample id."""
    rng = np.random.default_rng(8)
    expected: dict[str, int] = {}
    for visit in ("00", "01"):
        lines = [f"ID|SIDE|READPRJ|V{visit}XRKL|VERSION"]
        for patient in range(9000001, 9000061):
            for side_code, side in (("1", "R"), ("2", "L")):
                grade = int(rng.integers(0, 5))
                cell = "." if (patient == 9000001 and side == "R" and visit == "00") else str(grade)
                lines.append(f"{patient}|{side_code}: {'Right' if side == 'R' else 'Left'}|15|{cell}|3.1")
                if cell != ".":
                    expected[f"OAI/{patient}_V{visit}_{side}"] = grade
        lines.append("9000002|1|37|4|3.1")  # a second reading project for one knee: not a new image
        (tmp_path / f"kxr_sq_bu{visit}.txt").write_text("\n".join(lines) + "\n")
    most = ["MOSTID|V0XLKL|V0XRKL|V2XLKL|V2XRKL"]
    for patient in range(1, 31):
        cells = [str(int(rng.integers(0, 5))) for _ in range(4)]
        if patient == 3:
            cells[3] = ""
        most.append(f"MB{patient:04d}|" + "|".join(cells))
        for (visit, side), cell in zip((("0", "L"), ("0", "R"), ("2", "L"), ("2", "R")), cells):
            if cell:
                expected[f"MOST/MB{patient:04d}_V{visit}_{side}"] = int(cell)
    (tmp_path / "most_xray_kl.txt").write_text("\n".join(most) + "\n")
    for sample_id in expected:
        file = tmp_path / "knees" / f"{sample_id}.png"
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 6), 40 + len(sample_id), dtype=np.uint8)).save(file)
    return expected


def test_knee_kl_published_files_per_cohort_test_sets(tmp_path: Path) -> None:
    expected = make_knees(tmp_path)
    (tmp_path / "knees" / "MOST" / "MB0005_V0_L.png").unlink()
    ds = load_knee_kl(tmp_path / "knees", oai_kl_dir=tmp_path, oai_visits=["00", "01"],
                      most_kl_file=tmp_path / "most_xray_kl.txt", seed=0)
    assert ds.classes == ["KL0", "KL1", "KL2", "KL3", "KL4"] and ds.task_type == "multiclass"
    samples = ds.samples.set_index("sample_id")
    assert set(samples.index) == set(expected) - {"MOST/MB0005_V0_L"}
    assert all(samples.loc[s, "label"] == g for s, g in expected.items() if s in samples.index)
    reasons = sorted((e["sample_id"], e["reason"]) for e in ds.excluded)
    assert reasons == [("MOST/MB0003_V2_R", "no KL grade"), ("MOST/MB0005_V0_L", "image file not found"),
                       ("OAI/9000001_V00_R", "no KL grade"),
                       ("OAI/9000002_V00_R", "another reading of the same knee and visit"),
                       ("OAI/9000002_V01_R", "another reading of the same knee and visit")]
    # A test set from each cohort, by patient; both visits of a patient stay together.
    test = ds.split("test")
    assert set(test["cohort"]) == {"OAI", "MOST"} and no_group_leaks(ds)
    for cohort, n_patients in (("OAI", 60), ("MOST", 30)):
        patients = test.loc[test["cohort"] == cohort, "group"].nunique()
        assert abs(patients / n_patients - 0.14) < 0.08, (cohort, patients)
    assert {"OAI:9000007", "MOST:MB0007"} <= set(ds.samples["group"])
    image = assert_reads_as(ds, "OAI/9000007_V01_L")
    assert np.allclose(image, 1.0)  # a constant image normalised to its maximum
    assert load_knee_kl(tmp_path / "knees", oai_kl_dir=tmp_path, check_files=False).samples["cohort"].unique().tolist() == ["OAI"]

    bad = (tmp_path / "kxr_sq_bu00.txt").read_text().replace("|15|3|", "|15|8|", 1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "KXR_SQ_BU00.TXT").write_text(bad)
    with pytest.raises(DataError, match="must be 0-4"):
        load_knee_kl(tmp_path / "knees", oai_kl_dir=tmp_path / "bad", check_files=False)
    with pytest.raises(DataError, match="visit '03' not found"):
        load_knee_kl(tmp_path / "knees", oai_kl_dir=tmp_path, oai_visits=["03"])
    with pytest.raises(DataError, match="oai_kl_dir and/or most_kl_file"):
        load_knee_kl(tmp_path / "knees")
    with pytest.raises(DataError, match="none of the .* knee images"):
        load_knee_kl(tmp_path / "knees", most_kl_file=tmp_path / "most_xray_kl.txt", image_pattern="{patient}.dcm")


# ------------------------------------------------------------------------------ registry
def test_registry_matches_the_study() -> None:
    assert sorted(PAPER_TASKS) == [f"t{i}" for i in range(1, 9)]
    metrics = {tid: task.metric for tid, task in PAPER_TASKS.items()}
    assert metrics == {"t1": "f1_macro", "t2": "f1_macro", **{f"t{i}": "auc" for i in range(3, 9)}}
    assert PAPER_TASKS["t1"].prompt == "What can you see on this histological image?"
    assert PAPER_TASKS["t7"].prompt == "What can you see on this radiological image?"
    assert len({task.adapter_name for task in PAPER_TASKS.values()}) == 8
    for task in PAPER_TASKS.values():
        # The run-file loader passes data.max_image_size to adapters that take max_size.
        assert "max_size" in inspect.signature(task.loader).parameters


def test_run_file_reaches_a_paper_adapter(tmp_path: Path) -> None:
    make_knees(tmp_path)
    config = DataConfig(adapter="knee_kl", root=str(tmp_path),
                        options={"image_dir": "knees", "most_kl_file": "most_xray_kl.txt"}, max_image_size=4)
    ds = load_dataset(config)
    assert ds.name == "knee_kl" and ds.preprocessing["max_size"] == 4
    assert assert_reads_as(ds, "MOST/MB0007_V2_L").shape == (4, 3, 3)


def test_every_paper_run_file_names_options_its_adapter_takes() -> None:
    from medprobe.config import load_config
    from medprobe.data.loaders import adapter_names

    repo = Path(__file__).resolve().parents[2]
    loaders = {task.adapter_name: task.loader for task in PAPER_TASKS.values()}
    for task_id, task in PAPER_TASKS.items():
        config = load_config(repo / "configs" / "paper" / f"{task_id}.yaml")
        assert config.data.adapter == task.adapter_name and task.adapter_name in adapter_names()
        accepted = set(inspect.signature(loaders[task.adapter_name]).parameters)
        assert set(config.data.options) <= accepted, (task_id, set(config.data.options) - accepted)
