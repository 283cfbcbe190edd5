"""``medprobe compare`` on runs whose data has patient ids (several images per patient): the paired
tests across two run folders, recomputed on patient-level bootstrap replicates (patient ids read
back from each run's manifest), equal those of one run file holding both backbones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medprobe.compare import compare_runs
from medprobe.config import parse_config
from medprobe.experiment import run_experiment

TOL = 1e-12
SMALL = {"name": "pixels", "options": {"size": 4}}
LARGE = {"name": "pixels", "label": "pixels-8", "options": {"size": 8}}


def write_patient_manifest(root: Path) -> Path:
    """60 patients with 3 images each (30 train, 10 val, 20 test), the label a shift in brightness."""
    rng = np.random.default_rng(0)
    records = []
    for patient in range(60):
        split = "train" if patient < 30 else "val" if patient < 40 else "test"
        label = int(rng.random() < 0.5)
        for image in range(3):
            pixels = np.clip(rng.random((12, 12)) * 160 + 40 * label + rng.normal(0, 30), 0, 255).astype(np.uint8)
            name = f"p{patient:02d}_{image}.png"
            Image.fromarray(pixels).save(root / name)
            records.append({"path": name, "label": ["benign", "malignant"][label],
                            "patient_id": f"p{patient:02d}", "split": split})
    pd.DataFrame(records).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def key(row: dict) -> tuple:
    return (row["train_fraction"], row["seed"], row["backbone_a"], row["backbone_b"], row["metric"], row["test"])


def test_patient_level_paired_tests_equal_a_single_run_file(tmp_path: Path) -> None:
    manifest = write_patient_manifest(tmp_path)
    runs = {"a": [SMALL], "b": [LARGE], "ab": [SMALL, LARGE]}
    for name, backbones in runs.items():
        config = parse_config({
            "name": name, "seed": 0, "cache_dir": str(tmp_path / "cache"),
            "data": {"adapter": "manifest", "options": {"path": str(manifest)}},
            "backbones": backbones, "probe": {"train_fractions": [0.5, 1.0], "seeds": [0], "Cs": [0.1, 1.0]},
            "stats": {"n_bootstrap": 80, "reference": backbones[0].get("label", "pixels")},
        })
        run_experiment(config, tmp_path / name, show_progress=False)
    single = {key(r): r for r in json.loads((tmp_path / "ab" / "comparisons.json").read_text())}
    assert {r["bootstrap_unit"] for r in single.values()} == {"patient"}  # the run itself resampled patients

    compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    ours = {key(r): r for r in comparison["comparisons"]}
    assert set(ours) == set(single) and len(single) == 4  # 2 fractions x (paired bootstrap + DeLong)
    for k, row in single.items():
        for field in ("diff", "ci_low", "ci_high", "p_value", "p_holm", "p_bh"):
            assert ours[k][field] == pytest.approx(row[field], abs=TOL, rel=0), (k, field)
        assert ours[k]["bootstrap_unit"] == "patient", k
    bootstrap = [r for r in comparison["comparisons"] if r["test"] == "paired_bootstrap"]
    assert bootstrap and all(r["n_units"] == 20 for r in bootstrap)  # 20 test patients, not 60 images
    assert {r["method"] for r in comparison["comparisons"] if r["test"] == "delong"} == {"obuchowski"}
