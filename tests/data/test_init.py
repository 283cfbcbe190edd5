"""``medprobe init DATA``: a starter run file for a folder or a manifest, never overwriting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medprobe.cli import app
from medprobe.config import load_config
from medprobe.data.loaders import load_dataset
from medprobe.data.starter import write_starter
from medprobe.errors import ConfigError
from medprobe.run_checks import check_options

from test_cli import image_tree


def test_folder_with_split_folders(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        image_tree(tmp_path / "derm" / split, per_class=n, classes=("nevus", "melanoma", "bcc"))
    starter = write_starter(tmp_path / "derm", tmp_path / "derm.yaml")
    assert starter.adapter == "image_folder" and starter.classes == ["bcc", "melanoma", "nevus"]
    assert starter.counts == {s: {c: n for c in starter.classes} for s, n in (("train", 6), ("val", 2), ("test", 3))}
    assert starter.split_source == "split folders" and starter.patient_column is None
    config = load_config(tmp_path / "derm.yaml")
    check_options(config)
    dataset = load_dataset(config.data)
    assert dataset.classes == starter.classes and len(dataset.samples) == 3 * 11


def test_flat_folder_from_the_cli_prints_what_it_found(tmp_path, monkeypatch):
    image_tree(tmp_path / "xray", per_class=10, classes=("normal", "pneumonia"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["init", str(tmp_path / "xray")])
    assert result.exit_code == 0, result.output
    assert "image_folder: 2 classes (binary): normal, pneumonia" in result.output
    assert "carved train/val/test 70/10/20%" in result.output and "patient column: none" in result.output
    assert (tmp_path / "xray.yaml").is_file() and "wrote" in result.output
    config = load_config(tmp_path / "xray.yaml")
    assert config.data.options == {"root": str(tmp_path / "xray"), "fractions": [0.7, 0.1, 0.2]}
    assert config.name == "xray" and config.output_dir == str(tmp_path / "runs" / "xray")
    assert config.probe.train_fractions == [0.1, 1.0] and config.probe.seeds == [0, 1, 2]
    text = (tmp_path / "xray.yaml").read_text()
    assert "# images per split and class" in text and "#   pneumonia" in text  # split sizes written out
    assert "warning: only 2 validation image(s)" in result.stdout and "data.options.fractions" in result.stdout
    # a second init never replaces the file
    before = (tmp_path / "xray.yaml").read_text()
    again = CliRunner().invoke(app, ["init", str(tmp_path / "xray")])
    assert again.exit_code == 2 and "already exists; nothing was written" in again.output
    assert (tmp_path / "xray.yaml").read_text() == before


def test_manifest_with_patient_and_split_columns(tmp_path):
    images = tmp_path / "study" / "images"
    images.mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(1)
    for i in range(30):
        label = ["benign", "malignant"][i % 2]
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(images / f"{i}.png")
        rows.append({"path": f"images/{i}.png", "label": label, "patient_id": f"P{i // 2}"})
    table = pd.DataFrame(rows)
    table["split"] = (["train"] * 18 + ["val"] * 4 + ["test"] * 8)
    table.to_csv(tmp_path / "study" / "manifest.csv", index=False)
    starter = write_starter(tmp_path / "study" / "manifest.csv", tmp_path / "run.yaml", name="study")
    assert starter.adapter == "manifest" and starter.patient_column == "patient_id"
    assert starter.classes == ["benign", "malignant"] and starter.split_source == "the manifest's split column"
    assert {s: sum(c.values()) for s, c in starter.counts.items()} == {"train": 18, "val": 4, "test": 8}
    assert "patient column: patient_id" in starter.summary()
    dataset = load_dataset(load_config(tmp_path / "run.yaml").data)
    assert dataset.samples["group"].tolist() == table["patient_id"].tolist()


def test_manifest_with_other_column_names_and_no_splits(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    pd.DataFrame({"image": [f"img/{i}.png" for i in range(20)], "diagnosis": ["a", "b"] * 10,
                  "subject_id": [f"S{i // 4}" for i in range(20)]}).to_csv(tmp_path / "m.csv", index=False)
    starter = write_starter(tmp_path / "m.csv", tmp_path / "m.yaml")
    assert starter.options == {"path": str(tmp_path / "m.csv"), "path_column": "image",
                               "label_column": "diagnosis", "group_column": "subject_id",
                               "fractions": [0.7, 0.1, 0.2]}
    assert "by patient" in starter.split_source
    dataset = load_dataset(load_config(tmp_path / "m.yaml").data)
    for patient, part in dataset.samples.groupby("group"):  # carved splits keep each patient whole
        assert part["split"].nunique() == 1, patient


def test_manifest_without_a_label_column_says_what_it_has(tmp_path):
    pd.DataFrame({"path": ["a.png"], "finding": ["x"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(Exception, match=r"no label column found among \['path', 'finding'\]"):
        write_starter(tmp_path / "m.csv", tmp_path / "m.yaml")
    assert not (tmp_path / "m.yaml").exists()


def test_existing_file_is_never_replaced(tmp_path):
    image_tree(tmp_path / "x", per_class=10)
    (tmp_path / "x.yaml").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        write_starter(tmp_path / "x", tmp_path / "x.yaml")
    assert (tmp_path / "x.yaml").read_text() == "mine"


def test_manifest_run_is_named_after_its_folder_and_outputs_land_beside_the_run_file(tmp_path, monkeypatch):
    study = tmp_path / "skin_study"
    (study / "img").mkdir(parents=True)
    for i in range(20):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(study / "img" / f"{i}.png")
    pd.DataFrame({"path": [f"img/{i}.png" for i in range(20)], "label": ["a", "b"] * 10}).to_csv(
        study / "manifest.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    starter = write_starter(study / "manifest.csv", tmp_path / "configs" / "skin.yaml")
    config = load_config(starter.path)
    assert config.name == "skin_study" and config.output_dir == str(tmp_path / "configs" / "runs" / "skin_study")
