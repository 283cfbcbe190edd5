"""The README's examples run as written: the Python quickstart, and the "Your own data" files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medprobe.config import parse_config
from medprobe.data.adapters import load_manifest
from medprobe.run_checks import check_options

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_own_data_run_files_are_valid():
    files = blocks(section("Your own data"), "yaml")
    assert len(files) == 2
    for text in files:
        config = parse_config(yaml.safe_load(text), "README")
        check_options(config)  # adapter and backbone options are names their factories accept
    assert {parse_config(yaml.safe_load(t)).data.adapter for t in files} == {"image_folder", "manifest"}


def test_own_data_manifest_example_loads(tmp_path):
    (csv,) = blocks(section("Your own data"), "csv")
    (tmp_path / "manifest.csv").write_text(csv)
    (tmp_path / "images").mkdir()
    for line in csv.splitlines()[1:]:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / line.split(",")[0])
    data = load_manifest(tmp_path / "manifest.csv")
    assert data.classes == ["benign", "malignant"]
    assert data.samples["group"].tolist() == ["P001", "P001", "P002", "P003", "P004", "P005"]
    assert data.samples["split"].tolist() == ["train", "train", "train", "val", "test", "test"]


@pytest.mark.slow
def test_python_quickstart_runs_as_written(tmp_path, shared_data_dir):
    """Cold cache (HOME is a fresh folder), so the ViT-S really runs on ~1,650 images."""
    (code,) = blocks(section("Quickstart"), "python")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "src"),
                                 "MEDPROBE_DATA_DIR": str(shared_data_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    auc = re.search(r"'auc': (?:np\.float64\()?([0-9.]+)", result.stdout)
    assert auc is not None and 0.8 < float(auc.group(1)) <= 1.0, result.stdout
