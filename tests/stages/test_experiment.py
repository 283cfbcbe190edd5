"""End to end: run file -> cache -> probes -> statistics -> outputs, checked independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from typer.testing import CliRunner

from medprobe.cli import app
from medprobe.config import parse_config
from medprobe.errors import CacheError, ConfigError
from medprobe.experiment import run_experiment
from medprobe.stats import bootstrap_indices


def _write_medmnist(path: Path, n: dict[str, int], n_classes: int = 2, seed: int = 0) -> None:
    """A MedMNIST-format file whose classes differ in brightness (a learnable, imperfect signal)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in n.items():
        labels = rng.integers(0, n_classes, size=count)
        base = rng.random((count, 28, 28)) * 160
        images = np.clip(base + labels[:, None, None] * 25 + rng.normal(0, 30, (count, 28, 28)), 0, 255)
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _config(tmp_path: Path, **overrides) -> dict:
    data_dir = tmp_path / "data"
    _write_medmnist(data_dir / "medmnist" / "pneumoniamnist.npz", {"train": 160, "val": 60, "test": 80})
    config = {
        "name": "toy-run",
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "data": {"adapter": "medmnist", "root": str(data_dir), "options": {"flag": "pneumoniamnist"}},
        "backbones": [
            {"name": "pixels", "options": {"size": 8}},
            {"name": "pixels", "label": "pixels-16", "options": {"size": 16}},
        ],
        "probe": {"train_fractions": [0.25, 1.0], "seeds": [0, 1], "Cs": [0.01, 0.1, 1.0]},
        "stats": {"n_bootstrap": 100, "reference": "pixels"},
    }
    config.update(overrides)
    return config


@pytest.fixture
def finished_run(tmp_path) -> Path:
    config = parse_config(_config(tmp_path))
    report = run_experiment(config, show_progress=False)
    return report.parent


def test_results_match_independent_recomputation(finished_run):
    rows = pd.DataFrame(json.loads((finished_run / "results.json").read_text()))
    predictions = pd.read_parquet(finished_run / "predictions.parquet")
    summary = json.loads((finished_run / "run.json").read_text())
    assert summary["classes"] == ["normal", "pneumonia"]
    keys = ["backbone", "layer", "train_fraction", "seed"]
    for key, part in predictions.groupby(keys):
        scores = part[["score[normal]", "score[pneumonia]"]].to_numpy()
        y = part["y_true"].to_numpy()
        mine = rows.set_index(keys + ["metric"]).loc[key]
        assert mine.loc["auc", "value"] == pytest.approx(roc_auc_score(y, scores[:, 1]), abs=1e-12)
        assert mine.loc["f1_macro", "value"] == pytest.approx(f1_score(y, scores.argmax(1), average="macro"), abs=1e-12)
        assert mine.loc["accuracy", "value"] == pytest.approx(accuracy_score(y, scores.argmax(1)), abs=1e-12)
        # CI: percentile interval over the same bootstrap replicates, recomputed with sklearn
        indices = bootstrap_indices(len(y), 100, seed=0)
        replicates = [roc_auc_score(y[i], scores[i, 1]) for i in indices if 0 < y[i].sum() < len(i)]
        low, high = np.percentile(replicates, [2.5, 97.5])
        assert mine.loc["auc", "ci_low"] == pytest.approx(low, abs=1e-12)
        assert mine.loc["auc", "ci_high"] == pytest.approx(high, abs=1e-12)
        assert mine.loc["auc", "n_test"] == 80 == len(part)


def test_layer_and_c_are_chosen_on_validation(finished_run):
    rows = pd.DataFrame(json.loads((finished_run / "results.json").read_text()))
    auc = rows[rows["metric"] == "auc"]
    for _, group in auc.groupby(["backbone", "train_fraction", "seed"]):
        assert group["selected"].sum() == 1
        assert group.loc[group["selected"], "val_score"].iloc[0] == group["val_score"].max()
    # subsampled fractions have both seeds, the full fraction one
    assert sorted(auc[auc.backbone == "pixels"].groupby("train_fraction")["seed"].nunique().tolist()) == [1, 2]


def test_outputs_comparisons_and_report(finished_run):
    comparisons = json.loads((finished_run / "comparisons.json").read_text())
    tests = {(c["backbone_a"], c["backbone_b"], c["test"]) for c in comparisons}
    assert ("pixels-16", "pixels", "paired_bootstrap") in tests and ("pixels-16", "pixels", "delong") in tests
    for comparison in comparisons:
        assert 0 <= comparison["p_value"] <= 1
    summary = json.loads((finished_run / "run.json").read_text())
    assert [b["label"] for b in summary["backbones"]] == ["pixels", "pixels-16"]
    assert summary["data"]["n_samples"] == {"train": 160, "val": 60, "test": 80}
    assert {row["train_fraction"] for row in summary["label_efficiency"]} == {0.25, 1.0}
    html = (finished_run / "report.html").read_text()
    assert "toy-run" in html and "pixels-16" in html


def test_same_run_file_gives_identical_results(tmp_path):
    first = parse_config(_config(tmp_path / "a"))
    second = parse_config({**_config(tmp_path / "a"), "output_dir": str(tmp_path / "b" / "out")})
    run_experiment(first, show_progress=False)
    run_experiment(second, show_progress=False)  # second run: features from the cache
    assert (tmp_path / "a" / "out" / "results.json").read_bytes() == (tmp_path / "b" / "out" / "results.json").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "out" / "predictions.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "out" / "predictions.parquet"))


def test_existing_results_are_not_overwritten(finished_run, tmp_path):
    config = parse_config(_config(tmp_path))
    with pytest.raises(ConfigError, match="--overwrite"):
        run_experiment(config, show_progress=False)
    run_experiment(config, overwrite=True, show_progress=False)


def test_cached_only_refuses_to_extract(tmp_path):
    config = parse_config(_config(tmp_path))
    with pytest.raises(CacheError, match="medprobe extract"):
        run_experiment(config, show_progress=False, cached_only=True)


def test_bad_images_are_skipped_and_reported(tmp_path):
    root = tmp_path / "images"
    rows = []
    rng = np.random.default_rng(0)
    for i in range(60):
        label = ["normal", "abnormal"][i % 2]
        path = root / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((12, 12)) * 120 + 100 * (i % 2)).astype(np.uint8)).save(path)
        rows.append({"path": path.name, "label": label, "split": "train" if i < 36 else "val" if i < 46 else "test"})
    (root / "img03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    config = {
        "name": "skip-run", "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "data": {"adapter": "manifest", "root": str(root), "options": {"path": "manifest.csv"}},
        "backbones": [{"name": "pixels", "options": {"size": 8}}],
        "stats": {"n_bootstrap": 50},
    }
    with pytest.raises(Exception, match="img03.png"):
        run_experiment(parse_config(config), show_progress=False)
    config["data"]["on_error"] = "skip"
    report = run_experiment(parse_config(config), show_progress=False, overwrite=True)
    summary = json.loads((report.parent / "run.json").read_text())
    assert [s["sample_id"] for s in summary["skipped"]] == ["img03.png"]
    assert "Truncated" in summary["skipped"][0]["error"]
    assert summary["data"]["n_samples"]["train"] == 36  # the table keeps it; the probes never see it
    assert "img03.png" in report.read_text()


def test_cli_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {adapter: medmnist}\nbackbones: [{name: pixels, layer: 3}]\n")
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert "backbones.0.layer" in result.output and "Traceback" not in result.output
    missing = tmp_path / "missing.yaml"
    missing.write_text(json.dumps({"data": {"adapter": "medmnist", "root": str(tmp_path / "nowhere")},
                                   "backbones": [{"name": "pixels"}], "output_dir": str(tmp_path / "o")}))
    result = CliRunner().invoke(app, ["run", str(missing)])
    assert result.exit_code == 2
    assert "nowhere" in result.output and "Traceback" not in result.output


def test_real_pneumoniamnist_with_pixels(shared_data_dir, tmp_path):
    """The real data: a pixel probe on PneumoniaMNIST lands in the published range (AUC ~0.9)."""
    config = parse_config({
        "name": "real", "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "data": {"adapter": "medmnist", "root": str(shared_data_dir),
                 "options": {"flag": "pneumoniamnist", "max_train": 800}},
        "backbones": [{"name": "pixels"}], "stats": {"n_bootstrap": 200},
    })
    report = run_experiment(config, show_progress=False)
    rows = json.loads((report.parent / "results.json").read_text())
    auc = next(r for r in rows if r["metric"] == "auc")
    assert auc["n_test"] == 624
    assert 0.8 < auc["value"] < 0.99 and auc["ci_low"] < auc["value"] < auc["ci_high"]


def test_cli_turns_unexpected_errors_into_one_message(tmp_path, monkeypatch):
    import medprobe.experiment as experiment

    def broken(*args, **kwargs):
        raise ValueError("something deep broke")

    monkeypatch.setattr(experiment, "run_experiment", broken)
    run_file = tmp_path / "run.yaml"
    run_file.write_text("data: {adapter: medmnist}\nbackbones: [{name: pixels}]\n")
    result = CliRunner().invoke(app, ["run", str(run_file)])
    assert result.exit_code == 1
    assert "ValueError: something deep broke" in result.output and "MEDPROBE_DEBUG" in result.output


def test_class_missing_from_test_is_a_clear_error(tmp_path):
    data_dir = tmp_path / "data"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in {"train": 40, "val": 20, "test": 20}.items():
        arrays[f"{split}_images"] = (rng.random((count, 28, 28)) * 255).astype(np.uint8)
        labels = rng.integers(0, 2, size=count) if split != "test" else np.ones(count, int)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    (data_dir / "medmnist").mkdir(parents=True)
    np.savez(data_dir / "medmnist" / "pneumoniamnist.npz", **arrays)
    config = parse_config({"output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
                           "data": {"adapter": "medmnist", "root": str(data_dir)},
                           "backbones": [{"name": "pixels"}]})
    with pytest.raises(Exception, match=r"no samples in the test split: \['normal'\]"):
        run_experiment(config, show_progress=False)
