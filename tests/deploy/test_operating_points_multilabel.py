"""Operating points of a multi-label run, end to end (issue 24): a manifest with three findings and
two images per patient, the NumPy-only ``pixels`` backbone. Each finding's thresholds are chosen
on the validation split and reported on the test split with patient-level CIs; one finding's
numbers are recomputed here from their definitions, and ``medprobe predict`` applies the
per-finding thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medprobe.cli import app
from medprobe.config import parse_config
from medprobe.experiment import run_experiment
from medprobe.stats.resampling import cluster_bootstrap_indices

FINDINGS = ["effusion", "mass", "nodule"]
N_BOOTSTRAP = 200
runner = CliRunner()


def write_multilabel_manifest(root: Path) -> Path:
    """80 patients x 2 images (40 train, 20 val, 20 test patients); finding k brightens quadrant k,
    with enough noise that the validation curve has a real trade-off."""
    rng = np.random.default_rng(4)
    records = []
    for patient in range(80):
        split = "train" if patient < 40 else "val" if patient < 60 else "test"
        for image in range(2):
            present = rng.random(len(FINDINGS)) < 0.45
            pixels = rng.normal(110, 35, (16, 16))
            for k in np.flatnonzero(present):
                pixels[8 * (k // 2):8 * (k // 2) + 8, 8 * (k % 2):8 * (k % 2) + 8] += 8
            name = f"p{patient:02d}_{image}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name)
            records.append({"path": name, "label": "|".join(np.asarray(FINDINGS)[present]),
                            "patient_id": f"p{patient:02d}", "split": split})
    pd.DataFrame(records).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multilabel")
    manifest = write_multilabel_manifest(root)
    spec = {"name": "findings", "seed": 0, "output_dir": str(root / "run"), "cache_dir": str(root / "cache"),
            "data": {"adapter": "manifest", "options": {"path": str(manifest), "multilabel": True}},
            "backbones": [{"name": "pixels", "options": {"size": 8}}],
            "probe": {"train_fractions": [1.0], "Cs": [0.01, 0.1, 1.0]},
            "stats": {"n_bootstrap": N_BOOTSTRAP, "operating_points": {"specificity": [0.8]}}}
    (root / "run.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(parse_config(spec), show_progress=False)
    return root


def predict(run: Path, split: str, threshold: str) -> pd.DataFrame:
    out = run / f"{split}-{threshold}.csv"
    result = runner.invoke(app, ["predict", str(run / "run"), "--data", str(run / "run.yaml"), "--split", split,
                                 "--threshold", threshold, "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out, keep_default_na=False)


def youden_by_hand(positive: np.ndarray, scores: np.ndarray) -> float:
    """The threshold t (a distinct score) maximising P(s >= t | pos) + P(s < t | neg) - 1,
    the highest t among equal optima."""
    best, chosen = -np.inf, None
    for t in sorted(set(scores.tolist()), reverse=True):
        j = (scores[positive] >= t).mean() + (scores[~positive] < t).mean() - 1
        if j > best:
            best, chosen = j, t
    return chosen


def measures_by_hand(positive: np.ndarray, called: np.ndarray, weights: np.ndarray | None = None) -> dict:
    w = np.ones(len(positive)) if weights is None else weights
    tp, fn = w[positive & called].sum(), w[positive & ~called].sum()
    fp, tn = w[~positive & called].sum(), w[~positive & ~called].sum()
    return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn)}


def test_per_finding_thresholds_from_validation_reported_on_test(run: Path) -> None:
    content = json.loads((run / "run" / "operating_points.json").read_text())
    rows = content["rows"]
    assert content["operating_points"] == ["youden", "sens90", "sens95", "spec80"]
    assert {(r["finding"], r["operating_point"]) for r in rows} == {
        (f, p) for f in FINDINGS for p in content["operating_points"]}
    assert {r["bootstrap_unit"] for r in rows} == {"patient"} and {r["n_units"] for r in rows} == {20}
    youden = {r["finding"]: r["threshold"] for r in rows if r["operating_point"] == "youden"}
    assert len(set(youden.values())) == len(FINDINGS)  # one threshold per finding, not one for the task

    # one finding, from the definitions: Youden's threshold on validation scores ...
    finding = "mass"
    row = next(r for r in rows if r["finding"] == finding and r["operating_point"] == "youden")
    val = predict(run, "val", "youden")
    manifest = pd.read_csv(run / "manifest.csv", keep_default_na=False).set_index("path")
    val_positive = np.array([finding in manifest.loc[s, "label"].split("|") for s in val["sample_id"]])
    val_scores = val[f"score[{finding}]"].to_numpy()
    assert row["threshold"] == youden_by_hand(val_positive, val_scores)
    assert row["val_sensitivity"] == (val_scores[val_positive] >= row["threshold"]).mean()

    # ... applied to the test scores of predictions.parquet, with CIs on the same patient replicates
    test = pd.read_parquet(run / "run" / "predictions.parquet")
    positive = test[f"true[{finding}]"].to_numpy().astype(bool)
    called = test[f"score[{finding}]"].to_numpy() >= row["threshold"]
    expected = measures_by_hand(positive, called)
    patients = manifest.loc[test["sample_id"], "patient_id"].to_numpy()
    replicates = cluster_bootstrap_indices(patients, N_BOOTSTRAP, seed=0)
    counts = replicates.counts()
    by_replicate = [measures_by_hand(positive, called, counts[r].astype(float)) for r in range(N_BOOTSTRAP)]
    for measure, value in expected.items():
        summary = row["test"][measure]
        assert summary["value"] == pytest.approx(value, abs=1e-12), measure
        low, high = np.nanpercentile([m[measure] for m in by_replicate], [2.5, 97.5])
        assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((low, high), abs=1e-12), measure
        assert summary["ci_low"] <= summary["value"] <= summary["ci_high"]


@pytest.mark.parametrize("operating_point", ["youden", "sens90", "spec80"])
def test_predict_applies_each_findings_threshold(run: Path, operating_point: str) -> None:
    rows = json.loads((run / "run" / "operating_points.json").read_text())["rows"]
    chosen = {r["finding"]: r["threshold"] for r in rows if r["operating_point"] == operating_point}
    table = predict(run, "test", operating_point)
    scores = pd.read_parquet(run / "run" / "predictions.parquet")
    assert table["sample_id"].tolist() == scores["sample_id"].tolist()
    assert set(table["operating_point"]) == {operating_point}
    for finding, threshold in chosen.items():
        assert set(table[f"threshold[{finding}]"]) == {threshold}
        np.testing.assert_allclose(table[f"score[{finding}]"], scores[f"score[{finding}]"], rtol=0, atol=1e-15)
        decided = table[f"decision[{finding}]"].astype(str).isin(["1", "True", "true"]).to_numpy()
        np.testing.assert_array_equal(decided, scores[f"score[{finding}]"].to_numpy() >= threshold)
