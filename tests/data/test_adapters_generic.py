"""Generic adapters (MedMNIST, image folder, manifest) and the group-aware split rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medprobe.data.adapters import (
    MEDMNIST,
    assign_splits,
    load_image_folder,
    load_manifest,
    load_medmnist,
    resolve_data_root,
)
from medprobe.data.images import preprocess, preprocessing_fingerprint
from medprobe.data.splits import group_stratified_split
from medprobe.errors import ConfigError, DataError, ImageReadError

RNG = np.random.default_rng(1)


# ------------------------------------------------------------------------------ data root
def test_resolve_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDPROBE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("MEDPROBE_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root(None) == tmp_path / "home" / ".cache" / "medprobe" / "data"


# ------------------------------------------------------------------------------- MedMNIST
def write_medmnist(path: Path, sizes=(60, 10, 20), n_classes=2, multilabel_k=0, rgb=False) -> dict:
    """A MedMNIST-format .npz with random images and labels; returns the arrays written."""
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{split}_images"] = RNG.integers(1, 256, shape, dtype=np.uint8)
        if multilabel_k:
            arrays[f"{split}_labels"] = RNG.integers(0, 2, (n, multilabel_k), dtype=np.uint8)
        else:
            arrays[f"{split}_labels"] = (np.arange(n) % n_classes).astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_medmnist_table_and_images(tmp_path):
    arrays = write_medmnist(tmp_path / "medmnist" / "pneumoniamnist.npz")
    dataset = load_medmnist(tmp_path)
    assert dataset.task_type == "binary" and dataset.classes == ["normal", "pneumonia"]
    assert dataset.samples["split"].value_counts().to_dict() == {"train": 60, "test": 20, "val": 10}
    test = dataset.split("test")
    assert test["sample_id"].iloc[12] == "pneumoniamnist/test/00012"
    np.testing.assert_array_equal(dataset.labels(test), arrays["test_labels"][:, 0])
    row = test.iloc[12]
    image = dataset.read_image(row)
    expected = arrays["test_images"][12] / arrays["test_images"][12].max()
    assert image.shape == (28, 28, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], expected, rtol=1e-6)
    assert dataset.preprocessing == preprocessing_fingerprint(1024)
    assert dataset.samples["group"].isna().all()


def test_medmnist_file_locations_and_class_names(tmp_path):
    write_medmnist(tmp_path / "dermamnist.npz", n_classes=7, rgb=True)
    derma = load_medmnist(tmp_path, flag="dermamnist")
    assert derma.task_type == "multiclass" and derma.classes == list(MEDMNIST["dermamnist"].classes)
    assert derma.read_image(derma.samples.iloc[0]).shape == (28, 28, 3)
    direct = load_medmnist(tmp_path / "dermamnist.npz", flag="dermamnist", classes=list("abcdefg"))
    assert direct.classes == list("abcdefg")
    write_medmnist(tmp_path / "newmnist.npz", n_classes=3)
    assert load_medmnist(tmp_path, flag="newmnist").classes == ["0", "1", "2"]
    write_medmnist(tmp_path / "medmnist" / "pneumoniamnist_224.npz")
    assert load_medmnist(tmp_path, size=224).samples["sample_id"].iloc[0].startswith("pneumoniamnist_224/")
    with pytest.raises(DataError, match="3 classes but 2 names"):
        load_medmnist(tmp_path, flag="newmnist", classes=["a", "b"])


def test_medmnist_multilabel(tmp_path):
    arrays = write_medmnist(tmp_path / "chestmnist.npz", multilabel_k=14)
    chest = load_medmnist(tmp_path, flag="chestmnist")
    assert chest.task_type == "multilabel" and len(chest.classes) == 14
    np.testing.assert_array_equal(chest.labels(chest.split("val")), arrays["val_labels"])


def test_medmnist_missing_file_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        load_medmnist(tmp_path / "nowhere", flag="breastmnist")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "medmnist" / "breastmnist.npz") in message
    assert str(tmp_path / "nowhere" / "breastmnist.npz") in message
    assert "MEDPROBE_DATA_DIR" in message and "`download: true`" in message
    assert "https://zenodo.org/records/10519652/files/breastmnist.npz" in message


def test_medmnist_bad_files(tmp_path):
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match="cannot read"):
        load_medmnist(tmp_path)
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="val_images"):
        load_medmnist(tmp_path)
    arrays = write_medmnist(tmp_path / "pneumoniamnist.npz")
    arrays["val_labels"] = arrays["val_labels"][:5]
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    with pytest.raises(DataError, match="val_images has shape"):
        load_medmnist(tmp_path)


def test_medmnist_max_train_is_stratified_and_seeded(tmp_path):
    arrays = write_medmnist(tmp_path / "bloodmnist.npz", sizes=(400, 30, 40), n_classes=8, rgb=True)
    labels = RNG.choice(8, size=400, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]).astype(np.uint8)
    arrays["train_labels"] = labels[:, None]
    np.savez(tmp_path / "bloodmnist.npz", **arrays)
    first = load_medmnist(tmp_path, flag="bloodmnist", max_train=100, seed=3)
    train = first.split("train")
    assert len(train) == 100 and len(first.split("val")) == 30 and len(first.split("test")) == 40
    kept = np.bincount(first.labels(train), minlength=8)
    assert np.all(np.abs(kept - 100 * np.bincount(labels, minlength=8) / 400) <= 1)
    again = load_medmnist(tmp_path, flag="bloodmnist", max_train=100, seed=3)
    other = load_medmnist(tmp_path, flag="bloodmnist", max_train=100, seed=4)
    assert again.sample_ids == first.sample_ids and other.sample_ids != first.sample_ids
    # A kept sample still reads its own original image.
    row = train.iloc[7]
    index = int(row["sample_id"].rsplit("/", 1)[1])
    original = arrays["train_images"][index]
    np.testing.assert_allclose(first.read_image(row), original / original.max(), rtol=1e-6)
    assert len(load_medmnist(tmp_path, flag="bloodmnist", max_train=10_000).split("train")) == 400
    with pytest.raises(ConfigError):
        load_medmnist(tmp_path, flag="bloodmnist", max_train=0)


def test_real_pneumoniamnist(shared_data_dir):
    dataset = load_medmnist(shared_data_dir, flag="pneumoniamnist", max_train=500, seed=0)
    assert dataset.classes == ["normal", "pneumonia"] and dataset.task_type == "binary"
    val, test = dataset.split("val"), dataset.split("test")
    assert len(val) == 524 and len(test) == 624  # MedMNIST's official splits
    assert np.bincount(dataset.labels(test)).tolist() == [234, 390]
    raw = np.load(shared_data_dir / "medmnist" / "pneumoniamnist.npz")
    train_counts = np.bincount(raw["train_labels"][:, 0])
    kept = np.bincount(dataset.labels(dataset.split("train")))
    assert kept.sum() == 500 and np.all(np.abs(kept - 500 * train_counts / train_counts.sum()) <= 1)
    image = dataset.read_image(test.iloc[0])
    np.testing.assert_allclose(image, preprocess(raw["test_images"][0]))


# -------------------------------------------------------------------------------- splits
def test_assign_splits_balances_classes_and_sizes():
    labels = np.array([1] * 300 + [0] * 700)
    splits = assign_splits(labels, None, (0.7, 0.1, 0.2), seed=0)
    for name, share in zip(("train", "val", "test"), (0.7, 0.1, 0.2)):
        chosen = splits == name
        assert abs(chosen.sum() - 1000 * share) <= 2
        assert abs(labels[chosen].sum() - 300 * share) <= 2


def test_assign_splits_keeps_groups_whole_and_is_seeded():
    sizes = RNG.integers(1, 6, 200)
    groups = np.repeat([f"p{i}" for i in range(200)], sizes)
    labels = np.repeat(RNG.integers(0, 3, 200), sizes)  # one diagnosis per patient
    splits = assign_splits(labels, groups, seed=5)
    table = pd.DataFrame({"group": groups, "split": splits, "label": labels})
    assert (table.groupby("group")["split"].nunique() == 1).all()
    shares = table["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["val"] - 0.1) < 0.03 and abs(shares["test"] - 0.2) < 0.03
    for label in range(3):
        per_split = table[table["label"] == label]["split"].value_counts(normalize=True)
        assert abs(per_split["test"] - 0.2) < 0.05
    assert (assign_splits(labels, groups, seed=5) == splits).all()
    assert (assign_splits(labels, groups, seed=6) != splits).any()


def test_assign_splits_edge_cases():
    assert sorted(assign_splits(["a", "b", "a"], None)) == ["test", "train", "val"]
    no_val = assign_splits(np.arange(50) % 2, None, (0.8, 0.0, 0.2))
    assert "val" not in set(no_val)
    groups = [None, None, "x", "x", float("nan")]
    mixed = assign_splits([0, 1, 0, 1, 0], groups)
    assert mixed[2] == mixed[3]
    multilabel = assign_splits(RNG.integers(0, 2, (100, 4)), None)
    assert set(multilabel) == {"train", "val", "test"}
    with pytest.raises(ConfigError):
        assign_splits([0, 1], None, (0.5, 0.5, 0.5))
    with pytest.raises(DataError):
        assign_splits([0, 1], ["a"])


def test_assign_splits_is_the_shared_rule_over_non_zero_shares():
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 4, 150)
    groups = np.repeat([f"p{i}" for i in range(150)], sizes)
    labels = np.repeat(rng.choice(["benign", "malignant", "normal"], 150), sizes)
    for fractions in ((0.7, 0.1, 0.2), (0.8, 0.0, 0.2), (0.0, 0.5, 0.5)):
        splits = assign_splits(labels, groups, fractions, seed=4)
        wanted = {n: f for n, f in zip(("train", "val", "test"), fractions) if f > 0}
        np.testing.assert_array_equal(splits, group_stratified_split(labels, groups, wanted, seed=4))
        assert set(splits) == set(wanted)  # a 0 share stays empty, every other split is filled
        table = pd.DataFrame({"group": groups, "split": splits})
        assert (table.groupby("group")["split"].nunique() == 1).all()
        for name, share in wanted.items():
            assert abs(np.mean(splits == name) - share) < 0.04, (fractions, name)


def test_assign_splits_loads_sets_with_fewer_groups_than_splits():
    # Two patients cannot fill three splits: the set still loads (for inspection); groups stay whole.
    splits = assign_splits(["a", "b", "a"], ["p1", "p2", "p1"], seed=3)
    assert splits[0] == splits[2] and set(splits) <= {"train", "val", "test"}
    assert np.array_equal(splits, assign_splits(["a", "b", "a"], ["p1", "p2", "p1"], seed=3))
    with pytest.raises(ConfigError, match="three non-negative numbers"):
        assign_splits([0, 1, 0], None, (0.9, 0.1))
    with pytest.raises(ConfigError, match="non-negative"):
        assign_splits([0, 1, 0], None, (1.1, -0.1, 0.0))
    with pytest.raises(DataError, match="empty set"):
        assign_splits([], None)


# -------------------------------------------------------------------------- image folder
def write_png(path: Path, value: int = 128, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, value, dtype=np.uint8)
    pixels[0, 0] = 255
    Image.fromarray(pixels).save(path)
    return path


def test_image_folder_without_splits(tmp_path):
    for i in range(20):
        write_png(tmp_path / "tumour" / f"t{i:02d}.png")
    for i in range(30):
        write_png(tmp_path / "normal" / "sub" / f"n{i:02d}.png")
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    (tmp_path / "normal" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "README.md").write_text("readme")
    dataset = load_image_folder(tmp_path, seed=1)
    assert dataset.classes == ["normal", "tumour"] and dataset.task_type == "binary"
    assert len(dataset.samples) == 50
    assert "normal/sub/n00.png" in dataset.sample_ids
    excluded = {entry["source"] for entry in dataset.excluded}
    assert excluded == {"normal/notes.txt", "README.md"}
    counts = dataset.samples.groupby(["split", "label"]).size()
    assert counts["test", 0] == 6 and counts["test", 1] == 4 and counts["val", 1] == 2
    row = dataset.samples.iloc[0]
    np.testing.assert_allclose(dataset.read_image(row), preprocess(np.asarray(Image.open(tmp_path / row["source"]))))


def test_image_folder_with_split_folders(tmp_path):
    for split, n in (("train", 4), ("validation", 2), ("test", 3)):
        for cls in ("b", "a", "c"):
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.png")
    dataset = load_image_folder(tmp_path, classes=["c", "b", "a"])
    assert dataset.classes == ["c", "b", "a"] and dataset.task_type == "multiclass"
    assert dataset.samples["split"].value_counts().to_dict() == {"train": 12, "test": 9, "val": 6}
    row = dataset.samples[dataset.samples["sample_id"] == "test/a/0.png"].iloc[0]
    assert row["label"] == 2 and row["split"] == "test"
    with pytest.raises(DataError, match="do not match"):
        load_image_folder(tmp_path, classes=["a", "b"])


def test_image_folder_errors(tmp_path):
    write_png(tmp_path / "flat" / "a" / "1.png")
    (tmp_path / "flat" / "b").mkdir()
    (tmp_path / "flat" / "b" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="contains no image files"):
        load_image_folder(tmp_path / "flat")
    write_png(tmp_path / "mixed" / "train" / "a" / "1.png")
    write_png(tmp_path / "mixed" / "extra" / "1.png")
    with pytest.raises(DataError, match="other folders"):
        load_image_folder(tmp_path / "mixed")
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "absent")
    write_png(tmp_path / "one" / "only" / "1.png")
    with pytest.raises(DataError, match="at least 2"):
        load_image_folder(tmp_path / "one")


def test_unreadable_image_names_its_sample(tmp_path):
    for cls in ("a", "b"):
        for i in range(5):
            write_png(tmp_path / cls / f"{i}.png")
    (tmp_path / "b" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dataset = load_image_folder(tmp_path)
    row = dataset.samples[dataset.samples["sample_id"] == "b/3.png"].iloc[0]
    with pytest.raises(ImageReadError) as info:
        dataset.read_image(row)
    assert info.value.sample_id == "b/3.png" and info.value.path == str(tmp_path.resolve() / "b" / "3.png")


# ------------------------------------------------------------------------------ manifests
def make_images(root: Path, n: int) -> list[str]:
    return [write_png(root / "img" / f"{i:03d}.png", value=i).relative_to(root).as_posix() for i in range(n)]


def test_csv_manifest_with_splits_and_groups(tmp_path):
    paths = make_images(tmp_path, 6)
    table = pd.DataFrame({
        "path": paths,
        "label": ["benign", "malignant", "benign", "malignant", "benign", "benign"],
        "split": ["train", "train", "valid", "test", "test", "train"],
        "patient_id": ["p1", "p1", "p2", "p3", "p3", "p4"],
        "organ": ["lung", "lung", "skin", "skin", "lung", "skin"],
    })
    table.to_csv(tmp_path / "m.csv", index=False)
    dataset = load_manifest(tmp_path / "m.csv", extra_columns=["organ"])
    assert dataset.classes == ["benign", "malignant"] and dataset.task_type == "binary"
    assert dataset.samples["split"].tolist() == ["train", "train", "val", "test", "test", "train"]
    assert dataset.samples["group"].tolist() == ["p1", "p1", "p2", "p3", "p3", "p4"]
    assert dataset.samples["organ"].tolist() == table["organ"].tolist()
    assert dataset.sample_ids == paths and dataset.root == tmp_path.resolve()
    np.testing.assert_allclose(dataset.read_image(dataset.samples.iloc[3]),
                               preprocess(np.asarray(Image.open(tmp_path / paths[3]))))
    table.loc[5, "patient_id"] = "p3"  # p3 now in train and test
    table.to_csv(tmp_path / "leak.csv", index=False)
    with pytest.raises(DataError, match="more than one split"):
        load_manifest(tmp_path / "leak.csv")


def test_manifest_without_split_column_is_split_by_patient(tmp_path):
    paths = make_images(tmp_path, 60)
    patients = [f"p{i // 3}" for i in range(60)]
    labels = ["yes" if (i // 3) % 4 == 0 else "no" for i in range(60)]
    pd.DataFrame({"image": paths, "label": labels, "patient_id": patients}).to_csv(tmp_path / "m.csv", index=False)
    dataset = load_manifest(tmp_path / "m.csv", seed=2)
    samples = dataset.samples
    assert (samples.groupby("group")["split"].nunique() == 1).all()
    assert set(samples["split"]) == {"train", "val", "test"}
    np.testing.assert_array_equal(
        samples["split"].to_numpy(), assign_splits(dataset.labels(samples), patients, seed=2)
    )


def test_manifest_path_must_stay_inside_root(tmp_path):
    root = tmp_path / "data"
    make_images(root, 2)
    outside = write_png(tmp_path / "secret.png")
    (root / "img" / "link.png").symlink_to(outside)
    for bad in ("../secret.png", "img/../../secret.png", str(outside), "img/link.png"):
        pd.DataFrame({"path": ["img/000.png", bad], "label": ["a", "b"]}).to_csv(root / "m.csv", index=False)
        with pytest.raises(DataError) as info:
            load_manifest(root / "m.csv")
        assert "m.csv line 3" in str(info.value) and "outside the image root" in str(info.value)
    allowed = load_manifest(root / "m.csv", allow_outside_root=True)
    assert allowed.samples["source"].iloc[1] == str(outside.resolve())
    assert allowed.read_image(allowed.samples.iloc[1]).shape == (8, 8, 3)


def test_manifest_label_errors(tmp_path):
    paths = make_images(tmp_path, 3)
    pd.DataFrame({"path": paths, "label": ["a", "b", "c"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"m.csv line 4: unknown label 'c'"):
        load_manifest(tmp_path / "m.csv", classes=["a", "b"])
    pd.DataFrame({"path": paths, "label": ["a", "a|b", "b"]}).to_csv(tmp_path / "ml.csv", index=False)
    with pytest.raises(DataError, match="multilabel=True"):
        load_manifest(tmp_path / "ml.csv")
    pd.DataFrame({"file": paths, "label": ["a", "b", "a"]}).to_csv(tmp_path / "np.csv", index=False)
    with pytest.raises(DataError, match="no image path column"):
        load_manifest(tmp_path / "np.csv")
    pd.DataFrame({"path": paths, "label": ["a", "", "b"]}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DataError, match="line 3: no label"):
        load_manifest(tmp_path / "empty.csv")
    pd.DataFrame({"path": paths, "label": ["a", "b", "a"], "split": ["train", "exam", "test"]}).to_csv(
        tmp_path / "split.csv", index=False)
    with pytest.raises(DataError, match="line 3: split 'exam'"):
        load_manifest(tmp_path / "split.csv")
    pd.DataFrame({"path": paths, "label": ["a", "b", "a"], "sample_id": ["x", "y", "x"]}).to_csv(
        tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="duplicate sample ids"):
        load_manifest(tmp_path / "dup.csv")
    pd.DataFrame({"path": ["nope/1.png", "nope/2.png"], "label": ["a", "b"]}).to_csv(tmp_path / "gone.csv", index=False)
    with pytest.raises(DataError, match="none of its 2 image files exist"):
        load_manifest(tmp_path / "gone.csv")
    with pytest.raises(DataError, match="does not exist"):
        load_manifest(tmp_path / "absent.csv")


def test_multilabel_manifests(tmp_path):
    paths = make_images(tmp_path, 4)
    pd.DataFrame({"path": paths, "label": ["effusion|mass", "", "mass", "nodule| effusion"]}).to_csv(
        tmp_path / "m.csv", index=False)
    dataset = load_manifest(tmp_path / "m.csv", multilabel=True, fractions=(0.5, 0.25, 0.25))
    assert dataset.task_type == "multilabel" and dataset.classes == ["effusion", "mass", "nodule"]
    np.testing.assert_array_equal(dataset.labels(dataset.samples), [[1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 1]])
    columns = pd.DataFrame({"path": paths, "Effusion": [1, 0, 0, 1], "Mass": ["1", "0", "1", "0"],
                            "split": ["train", "train", "val", "test"]})
    columns.to_csv(tmp_path / "c.csv", index=False)
    wide = load_manifest(tmp_path / "c.csv", label_columns=["Effusion", "Mass"])
    assert wide.classes == ["Effusion", "Mass"]
    np.testing.assert_array_equal(wide.labels(wide.samples), columns[["Effusion", "Mass"]].astype(int).to_numpy())
    columns.loc[2, "Mass"] = "-1"
    columns.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="line 4: column 'Mass' has '-1'"):
        load_manifest(tmp_path / "bad.csv", label_columns=["Effusion", "Mass"])


def test_parquet_manifest_with_numeric_labels(tmp_path):
    root = tmp_path / "images"
    paths = make_images(root, 12)
    labels = [2, 10, 1] * 4
    pd.DataFrame({"path": paths, "label": labels, "sample_id": [f"s{i}" for i in range(12)]}).to_parquet(
        tmp_path / "m.parquet")
    dataset = load_manifest(tmp_path / "m.parquet", root=root)
    assert dataset.classes == ["1", "2", "10"] and dataset.task_type == "multiclass"
    assert dataset.labels(dataset.samples).tolist() == [["1", "2", "10"].index(str(v)) for v in labels]
    assert dataset.sample_ids[0] == "s0" and dataset.samples["source"].iloc[0] == "img/000.png"
    with pytest.raises(DataError, match=r"m.parquet row 2: unknown label '10'"):
        load_manifest(tmp_path / "m.parquet", root=root, classes=["1", "2"])


def test_manifest_root_relative_to_cwd_is_resolved(tmp_path, monkeypatch):
    paths = make_images(tmp_path, 2)
    pd.DataFrame({"path": paths, "label": ["a", "b"], "split": ["train", "test"]}).to_csv(
        tmp_path / "m.csv", index=False)
    monkeypatch.chdir(tmp_path)
    dataset = load_manifest("m.csv", classes=["a", "b"])
    monkeypatch.chdir("/")  # the reader must not depend on the working directory
    assert dataset.read_image(dataset.samples.iloc[0]).shape == (8, 8, 3)


# ------------------------------------------------- table-time checks (issue 10, generic adapters)
def test_manifest_missing_images_are_excluded_when_the_table_is_built(tmp_path):
    paths = make_images(tmp_path, 5)
    (tmp_path / paths[1]).unlink()
    (tmp_path / paths[3]).unlink()
    pd.DataFrame({"path": paths, "label": ["a", "a", "b", "b", "b"],
                  "split": ["train", "train", "train", "test", "test"]}).to_csv(tmp_path / "m.csv", index=False)
    dataset = load_manifest(tmp_path / "m.csv")
    assert dataset.sample_ids == [paths[0], paths[2], paths[4]]
    assert [(e["sample_id"], e["reason"], e["where"]) for e in dataset.excluded] == [
        (paths[1], "image file not found", "m.csv line 3"), (paths[3], "image file not found", "m.csv line 5")]
    unchecked = load_manifest(tmp_path / "m.csv", check_files=False)
    assert unchecked.sample_ids == paths and unchecked.excluded == []


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_na_and_none_labels_mean_no_label_in_csv_and_parquet(tmp_path, kind):
    paths = make_images(tmp_path, 8)
    labels = ["a", "NA", "b", None, "None", "a", "", "b"]
    table = pd.DataFrame({"path": paths, "label": labels, "split": ["train"] * 6 + ["test"] * 2})
    file = tmp_path / f"m.{kind}"
    table.to_csv(file, index=False) if kind == "csv" else table.to_parquet(file)
    with pytest.raises(DataError, match=r"(line 3|row 2): no label .*drop_unlabelled=True"):
        load_manifest(file)
    dataset = load_manifest(file, drop_unlabelled=True)
    assert dataset.classes == ["a", "b"]  # "NA" / "None" never become classes
    assert dataset.sample_ids == [paths[i] for i in (0, 2, 5, 7)]
    assert [e["sample_id"] for e in dataset.excluded] == [paths[i] for i in (1, 3, 4, 6)]
    assert {e["reason"] for e in dataset.excluded} == {"no label (drop_unlabelled)"}
    # Multi-label: the same cells mean "no finding" (negative for every class), in both formats.
    multi = load_manifest(file, multilabel=True)
    np.testing.assert_array_equal(multi.labels(multi.samples).sum(axis=1), [1, 0, 1, 0, 0, 1, 0, 1])


def test_new_label_in_test_is_an_error_at_load_time(tmp_path):
    paths = make_images(tmp_path, 4)
    pd.DataFrame({"path": paths, "label": ["a", "b", "a", "c"],
                  "split": ["train", "train", "test", "test"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"m.csv line 5: a new label 'c' appeared in the test split"):
        load_manifest(tmp_path / "m.csv")
    assert load_manifest(tmp_path / "m.csv", classes=["a", "b", "c"]).classes == ["a", "b", "c"]


def test_class_folder_only_under_test_is_an_error(tmp_path):
    for split in ("train", "test"):
        for cls in ("benign", "malignant"):
            write_png(tmp_path / split / cls / "1.png")
    write_png(tmp_path / "test" / "malignat" / "2.png")  # misspelt: exists only under test/
    with pytest.raises(DataError, match=r"\['test/malignat'\] have no counterpart under the train folder"):
        load_image_folder(tmp_path)


def test_named_label_columns_are_classes_even_without_train_positives(tmp_path):
    """label_columns name the findings, so a finding positive only in val/test is no typo to refuse
    (the new-label check is for classes read from label values)."""
    rows = [("a.png", 1, 0, "train"), ("b.png", 0, 0, "train"), ("c.png", 0, 1, "val"), ("d.png", 1, 1, "test")]
    for name, *_ in rows:
        write_png(tmp_path / name)
    pd.DataFrame(rows, columns=["path", "Effusion", "Mass", "split"]).to_csv(tmp_path / "m.csv", index=False)
    data = load_manifest(tmp_path / "m.csv", label_columns=["Effusion", "Mass"])
    assert data.classes == ["Effusion", "Mass"] and data.task_type == "multilabel"
    pd.DataFrame([("a.png", "benign", "train"), ("c.png", "malignnat", "val")],
                 columns=["path", "label", "split"]).to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(DataError, match="new label 'malignnat' appeared in the val split"):
        load_manifest(tmp_path / "typo.csv")
