"""`medprobe data` and the summary behind it, on small data sets with counts known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from typer.testing import CliRunner

from medprobe.cli import app
from medprobe.data.dataset import Dataset
from medprobe.data.summary import summarize_dataset


def never_read(row: pd.Series) -> np.ndarray:
    raise AssertionError("the summary must not read images")


def test_summary_counts_multilabel_and_exclusions() -> None:
    rng = np.random.default_rng(3)
    n, k = 200, 4
    matrix = rng.random((n, k)) < np.array([0.5, 0.2, 0.05, 0.0])
    patients = rng.integers(0, 60, size=n)
    split_of_patient = np.array(["train", "val", "test"])[rng.integers(0, 3, size=60)]
    samples = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(n)],
        "split": split_of_patient[patients],
        "label": [tuple(np.flatnonzero(row).tolist()) for row in matrix],
        "group": [f"P{p}" if i % 10 else None for i, p in enumerate(patients)],
        "source": [f"s{i}.png" for i in range(n)],
    })
    excluded = [{"sample_id": "x1", "reason": "too small"}, {"sample_id": "x2", "reason": "too small"},
                {"sample_id": "x3", "reason": "no label"}]
    selection = [{"rule": "test drawn", "selected": 3, "of": 9, "unit": "patients"}]
    ds = Dataset("toy", samples, ["a", "b", "c", "d"], "multilabel", never_read, excluded=excluded,
                 selection=selection)
    summary = summarize_dataset(ds)
    for split in ("train", "val", "test"):
        rows = samples["split"] == split
        got = summary["splits"][split]
        assert got["images"] == int(rows.sum())
        assert got["patients"] == len({g for g in samples.loc[rows, "group"] if pd.notna(g)})
        assert got["images_without_patient_id"] == int((rows & samples["group"].isna()).sum())
        assert got["positives"] == {c: int(matrix[rows.to_numpy(), j].sum()) for j, c in enumerate("abcd")}
    both = samples["split"].isin(["train", "val"]).to_numpy()
    assert summary["train+val"]["positives"]["b"] == int(matrix[both, 1].sum())
    assert summary["all"]["positives"]["d"] == 0
    assert summary["excluded"]["by_reason"] == {"too small": 2, "no label": 1}
    assert [row["sample_id"] for row in summary["excluded"]["rows"]] == ["x1", "x2", "x3"]
    assert summary["selection"] == selection
    json.dumps(summary)  # JSON-ready


def make_manifest_run(tmp_path: Path, check_files: bool | None) -> Path:
    rows = []
    for i in range(12):
        rows.append({"path": f"img/{i}.png", "label": "sick" if i % 3 == 0 else "well",
                     "split": ["train", "val", "test"][i % 3] if i % 4 else "train", "patient_id": f"p{i // 2}"})
    (tmp_path / "img").mkdir()
    for row in rows[:-2]:  # the last two images are missing
        Image.fromarray(np.full((4, 4), 7, dtype=np.uint8)).save(tmp_path / row["path"])
    table = pd.DataFrame(rows)
    table["split"] = ["train"] * 6 + ["val"] * 2 + ["test"] * 4
    table.to_csv(tmp_path / "manifest.csv", index=False)
    data = {"adapter": "manifest", "options": {"path": str(tmp_path / "manifest.csv")}}
    if check_files is not None:
        data["check_files"] = check_files
    run = {"name": "toy", "data": data, "backbones": [{"name": "pixels"}]}
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(run))
    return run_file


def test_data_command_json_and_table(tmp_path: Path) -> None:
    run_file = make_manifest_run(tmp_path, check_files=None)
    result = CliRunner().invoke(app, ["data", str(run_file), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["splits"]["test"]["images"] == 2  # 4 listed, 2 without an image file
    assert summary["excluded"]["by_reason"] == {"image file not found": 2}
    assert {row["sample_id"] for row in summary["excluded"]["rows"]} == {"img/10.png", "img/11.png"}
    assert summary["splits"]["train"]["positives"] == {"sick": 2, "well": 4}
    assert summary["splits"]["train"]["patients"] == 3

    unchecked = CliRunner().invoke(app, ["data", str(run_file), "--json", "--no-check-files"])
    assert json.loads(unchecked.stdout)["splits"]["test"]["images"] == 4
    table = CliRunner().invoke(app, ["data", str(run_file)])
    assert table.exit_code == 0 and "image file not found" in table.output and "patients" in table.output


def test_check_files_false_in_the_run_file_needs_no_images(tmp_path: Path) -> None:
    run_file = make_manifest_run(tmp_path, check_files=False)
    for image in (tmp_path / "img").iterdir():
        image.unlink()
    result = CliRunner().invoke(app, ["data", str(run_file), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["all"]["images"] == 12 and summary["excluded"]["count"] == 0


def test_data_command_reports_bad_input_as_one_clear_error(tmp_path: Path) -> None:
    run_file = make_manifest_run(tmp_path, check_files=None)
    for image in (tmp_path / "img").iterdir():
        image.unlink()
    result = CliRunner().invoke(app, ["data", str(run_file)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "none of its 12 image files exist" in message and "check_files: false" in message
    missing = CliRunner().invoke(app, ["data", str(tmp_path / "absent.yaml")])
    assert missing.exit_code == 2 and "run file not found" in missing.output
