"""Saved probes, `medprobe predict`, `load_probe`, `medprobe export --onnx` and operating points
(issue 24), on a small real run: 200 PneumoniaMNIST images (100 train, 50 val, 50 test), raw
pixels and the ViT-S ONNX backbone, two train fractions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import medprobe
from medprobe.cli import app
from medprobe.config import parse_config
from medprobe.experiment import run_experiment
from medprobe.stats.operating_points import OperatingPointRule, choose_threshold, measures_at, rules_for
from medprobe.stats.resampling import bootstrap_indices

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _small_medmnist(folder: Path) -> None:
    """A balanced 100/50/50 subset of the real PneumoniaMNIST file (uint8 images: PNG round-trips exactly)."""
    source = np.load(SHARED_DATA / "medmnist" / "pneumoniamnist.npz")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 100, "val": 50, "test": 50}.items():
        labels = source[f"{split}_labels"][:, 0]
        rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 2, replace=False) for c in (0, 1)]))
        for kind in ("images", "labels"):
            arrays[f"{split}_{kind}"] = source[f"{split}_{kind}"][rows]
    (folder / "medmnist").mkdir(parents=True)
    np.savez(folder / "medmnist" / "pneumoniamnist.npz", **arrays)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The run, its run file, and the test images written out as PNG files."""
    if not (SHARED_DATA / "medmnist" / "pneumoniamnist.npz").exists():
        pytest.skip("PneumoniaMNIST file not found (set MEDPROBE_DATA_DIR)")
    root = tmp_path_factory.mktemp("deploy")
    _small_medmnist(root / "data")
    spec = {"name": "deploy", "output_dir": str(root / "run"), "cache_dir": str(root / "cache"),
            "data": {"adapter": "medmnist", "root": str(root / "data"), "options": {"flag": "pneumoniamnist"}},
            "backbones": [{"name": "pixels"}, {"name": "dinov2-s-onnx", "layers": ["layer.2", "layer.5"]}],
            "probe": {"train_fractions": [0.5, 1.0], "Cs": [0.01, 0.1, 1.0]},
            "stats": {"n_bootstrap": 100, "operating_points": {"specificity": [0.9]}}}
    (root / "run.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(parse_config(spec), show_progress=False)
    images = np.load(root / "data" / "medmnist" / "pneumoniamnist.npz")["test_images"]
    (root / "png").mkdir()
    for number, image in enumerate(images):
        Image.fromarray(image).save(root / "png" / f"{number:05d}.png")
    return root


def _run_scores(run: Path, entry: dict) -> np.ndarray:
    frame = pd.read_parquet(run / "predictions.parquet")
    rows = frame[(frame.backbone == entry["backbone_row"]) & (frame.train_fraction == entry["train_fraction"])
                 & (frame.seed == entry["seed"])]
    assert rows.layer.unique().tolist() == [entry["layer"]]
    return rows[["score[normal]", "score[pneumonia]"]].to_numpy()


def test_selected_probes_are_saved_safely(demo):
    folder = demo / "run" / "probes"
    index = json.loads((folder / "index.json").read_text())
    assert sorted((e["backbone_row"], e["train_fraction"]) for e in index) == [
        ("dinov2-s-onnx", 0.5), ("dinov2-s-onnx", 1.0), ("pixels", 0.5), ("pixels", 1.0)]
    record = json.loads((folder / index[0]["json_file"]).read_text())
    for key in ("classes", "task_type", "backbone", "layer", "stack", "pooling", "prompt", "preprocessing",
                "cache_fingerprint", "C", "val_score", "n_train", "seed", "medprobe_version", "weights_sha256",
                "operating_points"):
        assert key in record, key
    assert record["classes"] == ["normal", "pneumonia"] and record["feature_dtype"] == "float16"
    assert {p.suffix for p in folder.iterdir()} == {".json", ".safetensors"}  # nothing pickled
    assert not list(demo.glob("run.medprobe-*"))  # written inside the staged folder, swapped in whole


def test_predict_on_png_files_reproduces_the_run(demo):
    """Every selected probe, through load_probe; one of them through the CLI as well."""
    for entry in json.loads((demo / "run" / "probes" / "index.json").read_text()):
        probe = medprobe.load_probe(demo / "run", entry["backbone_row"], entry["train_fraction"], entry["seed"])
        scores = probe.predict_proba(sorted((demo / "png").glob("*.png")))
        np.testing.assert_array_equal(scores, _run_scores(demo / "run", entry))
    out = demo / "cli.csv"
    result = runner.invoke(app, ["predict", str(demo / "run"), str(demo / "png"), "--backbone", "dinov2-s-onnx",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    entry = {"backbone_row": "dinov2-s-onnx", "train_fraction": 1.0, "seed": 0,
             "layer": table.layer.iloc[0]}
    np.testing.assert_allclose(table[["score[normal]", "score[pneumonia]"]].to_numpy(),
                               _run_scores(demo / "run", entry), rtol=0, atol=1e-15)  # CSV's decimal round trip
    assert set(table.operating_point) == {"youden"} and set(table.decision) <= {"normal", "pneumonia"}
    assert (table.fingerprint_mismatch.isna() | (table.fingerprint_mismatch == "")).all()


def test_predict_on_the_run_files_test_split_reproduces_the_run(demo):
    out = demo / "data.parquet"
    result = runner.invoke(app, ["predict", str(demo / "run"), "--data", str(demo / "run.yaml"), "--split", "test",
                                 "--backbone", "dinov2-s-onnx", "--fraction", "0.5", "--threshold", "sens90",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    entry = {"backbone_row": "dinov2-s-onnx", "train_fraction": 0.5, "seed": 0, "layer": table.layer.iloc[0]}
    np.testing.assert_array_equal(table[["score[normal]", "score[pneumonia]"]].to_numpy(),
                                  _run_scores(demo / "run", entry))
    threshold = table.threshold.iloc[0]
    assert (table.decision == np.where(table["score[pneumonia]"] >= threshold, "pneumonia", "normal")).all()
    assert set(table.label) == {"normal", "pneumonia"}


def test_onnx_export_matches_predict(demo):
    import onnxruntime as ort

    from medprobe.data.images import preprocess, read_image
    from medprobe.models.imaging import resize_batch

    out = demo / "probe.onnx"
    result = runner.invoke(app, ["export", str(demo / "run"), "--onnx", str(out), "--backbone", "dinov2-s-onnx"])
    assert result.exit_code == 0, result.output
    paths = sorted((demo / "png").glob("*.png"))[:6]
    expected = medprobe.load_probe(demo / "run", "dinov2-s-onnx").predict_proba(paths)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": resize_batch([preprocess(read_image(p)) for p in paths], 224)})[0]
    assert np.abs(got - expected).max() <= 1e-5
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == ["normal", "pneumonia"]
    refused = runner.invoke(app, ["export", str(demo / "run"), "--onnx", str(demo / "px.onnx"), "--backbone", "pixels"])
    assert refused.exit_code == 2 and "needs an ONNX backbone" in refused.output


def test_mismatched_backbone_is_refused_unless_allowed(demo):
    args = ["predict", str(demo / "run"), str(demo / "png" / "00000.png"), "--backbone", "dinov2-s-onnx",
            "--option", "pooling=mean", "-q"]
    refused = runner.invoke(app, [*args, "--out", str(demo / "mismatch.csv")])
    assert refused.exit_code == 2
    assert "backbone.pooling: the probe's 'cls', now 'mean'" in refused.output
    allowed = runner.invoke(app, [*args, "--out", str(demo / "mismatch.csv"), "--allow-mismatch"])
    assert allowed.exit_code == 0, allowed.output
    assert "pooling" in pd.read_csv(demo / "mismatch.csv").fingerprint_mismatch.iloc[0]


def test_damaged_or_missing_probe_file_is_a_clear_error(demo, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo / "run", run)
    weights = next((run / "probes").glob("pixels__*__f1__*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the weights
    weights.write_bytes(bytes(data))
    result = runner.invoke(app, ["predict", str(run), str(demo / "png"), "--backbone", "pixels",
                                 "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "does not match the SHA-256" in result.output and weights.name in result.output
    weights.unlink()
    result = runner.invoke(app, ["predict", str(run), str(demo / "png"), "--backbone", "pixels",
                                 "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "missing" in result.output


def test_unreadable_images_stop_or_are_skipped_and_listed(demo, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    images = [str(demo / "png" / "00000.png"), str(bad)]
    stop = runner.invoke(app, ["predict", str(demo / "run"), *images, "--backbone", "pixels",
                               "--out", str(tmp_path / "a.csv")])
    assert stop.exit_code == 2 and "broken.png" in stop.output
    skip = runner.invoke(app, ["predict", str(demo / "run"), *images, "--backbone", "pixels", "--on-error", "skip",
                               "--out", str(tmp_path / "b.csv")])
    assert skip.exit_code == 0 and "skipped" in skip.output and "broken.png" in skip.output
    assert len(pd.read_csv(tmp_path / "b.csv")) == 1


def test_operating_points_in_their_file_and_the_report(demo):
    content = json.loads((demo / "run" / "operating_points.json").read_text())
    assert content["operating_points"] == ["youden", "sens90", "sens95", "spec90"]
    assert len(content["rows"]) == 4 * 4  # 4 selected probes x 4 rules
    for row in content["rows"]:
        assert row["val_sensitivity"] >= (row["level"] if row["rule"] == "sensitivity" else 0)
        assert row["val_specificity"] >= (row["level"] if row["rule"] == "specificity" else 0)
        for measure in ("sensitivity", "specificity", "ppv", "npv"):
            summary = row["test"][measure]
            assert summary["ci_low"] <= summary["value"] <= summary["ci_high"]
    saved = json.loads(next((demo / "run" / "probes").glob("pixels__*__f1__*.json")).read_text())
    row = next(r for r in content["rows"] if r["backbone"] == "pixels" and r["train_fraction"] == 1.0
               and r["operating_point"] == "sens90")
    assert saved["operating_points"]["pneumonia"]["sens90"] == row["threshold"]
    html = (demo / "run" / "report.html").read_text()
    assert 'id="operating-points"' in html and "test sensitivity [95% CI]" in html


def test_readme_example_runs_as_written(demo, tmp_path):
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Using a probe")
    (code,) = re.findall(r"```python\n(.*?)```", readme[start:readme.index("\n## ", start + 1)], flags=re.S)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(demo / "run")
    for number, name in enumerate(("chest1.png", "chest2.png")):
        (tmp_path / name).write_bytes((demo / "png" / f"{number:05d}.png").read_bytes())
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("layer.") and "pneumonia" in result.stdout


def test_save_all_keeps_every_layer(demo, tmp_path):
    spec = yaml.safe_load((demo / "run.yaml").read_text())
    spec.update(output_dir=str(tmp_path / "all"), backbones=[{"name": "pixels", "label": "px",
                                                              "options": {"size": 8}, "layers": "all"}])
    spec["probe"]["save"] = "all"
    run_experiment(parse_config(spec), show_progress=False)
    index = json.loads((tmp_path / "all" / "probes" / "index.json").read_text())
    assert len(index) == 2 and all(e["selected"] for e in index)  # pixels has one layer: 2 fractions


# ------------------------------------------------------------------ operating points from arrays
def test_thresholds_follow_their_rules_on_validation():
    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.4
    scores = np.clip(rng.normal(0.5 + 0.2 * positive, 0.2), 0, 1)
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(positive, scores)
    assert choose_threshold(OperatingPointRule("youden"), positive, scores) == thresholds[np.argmax(tpr - fpr)]
    for level in (0.9, 0.95):
        chosen = choose_threshold(OperatingPointRule("sensitivity", level), positive, scores)
        assert (scores[positive] >= chosen).mean() >= level
        higher = np.unique(scores[scores > chosen])
        assert higher.size == 0 or (scores[positive] >= higher.min()).mean() < level  # the most specific one
        chosen = choose_threshold(OperatingPointRule("specificity", level), positive, scores)
        assert (scores[~positive] < chosen).mean() >= level
    assert [rule.name for rule in rules_for([0.9], [0.975])] == ["youden", "sens90", "spec97.5"]


def test_test_measures_use_the_runs_replicates():
    rng = np.random.default_rng(2)
    positive = rng.random(80) < 0.5
    scores = rng.random(80)
    replicates = bootstrap_indices(80, 50, seed=3)
    measures = measures_at(positive, scores, 0.5, replicates)
    called = scores >= 0.5
    assert measures["sensitivity"]["value"] == called[positive].mean()
    assert measures["npv"]["value"] == (~positive[~called]).mean()
    by_hand = [called[r][positive[r]].mean() for r in replicates]
    assert measures["sensitivity"]["sd"] == pytest.approx(np.std(by_hand, ddof=1), rel=1e-12)
