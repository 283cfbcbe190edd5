"""``medprobe compare`` and ``medprobe study`` on small real runs (NumPy-only ``pixels`` backbone,
real PneumoniaMNIST file): paired tests across run folders equal those of one run file holding
both backbones, runs with different test sets are never paired, bad folders are clear errors,
and a study resumes after SIGKILL without redoing a finished run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medprobe.cli import app
from medprobe.compare import build_comparison, compare_runs, load_run, load_runs
from medprobe.compare.pairing import SharedTestSet, group_comparisons, task_columns
from medprobe.compare.runs import RunFolder, task_of
from medprobe.config import parse_config
from medprobe.errors import ConfigError, DataError
from medprobe.experiment import run_experiment
from medprobe.stats import bootstrap_indices, bootstrap_metrics, compute_metrics, paired_difference
from medprobe.study import run_study

DATA = Path(os.environ.get("MEDPROBE_DATA_DIR", "")) / "medmnist" / "pneumoniamnist.npz"
pytestmark = pytest.mark.skipif(not DATA.is_file(), reason="needs $MEDPROBE_DATA_DIR/medmnist/pneumoniamnist.npz")
PIXELS = {"name": "pixels"}
PIXELS_14 = {"name": "pixels", "label": "pixels-14", "options": {"size": 14}}
TOL = 1e-12


def run_file(name: str, backbones: list[dict], n_bootstrap: int = 150, **extra) -> dict:
    return {"name": name, "seed": 0, "data": {"adapter": "medmnist",
                                              "options": {"flag": "pneumoniamnist", "max_train": 200}},
            "backbones": backbones, "probe": {"train_fractions": [0.5, 1.0], "seeds": [0, 1], "Cs": [0.01, 0.1, 1.0]},
            "stats": {"n_bootstrap": n_bootstrap, "reference": backbones[0].get("label") or backbones[0]["name"]},
            **extra}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run A (pixels), run B (pixels at 14 px), and one run file holding both."""
    root = tmp_path_factory.mktemp("runs")
    files = {"a": run_file("a", [PIXELS]), "b": run_file("b", [PIXELS_14]),
             "ab": run_file("ab", [PIXELS, PIXELS_14]), "c": run_file("c", [PIXELS], n_bootstrap=100)}
    for name, data in files.items():
        run_experiment(parse_config({**data, "cache_dir": str(root / "cache")}), root / name, show_progress=False)
    return {name: root / name for name in files}


def key(row: dict) -> tuple:
    return (row["train_fraction"], row["seed"], row["backbone_a"], row["backbone_b"], row["metric"], row["test"])


@pytest.mark.parametrize("reference", [None, "pixels"])
def test_paired_tests_equal_a_single_run_file(runs: dict[str, Path], tmp_path: Path, reference: str | None) -> None:
    compare_runs([runs["a"], runs["b"]], tmp_path, reference=reference)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    ours = {key(r): r for r in comparison["comparisons"]}
    single = {key(r): r for r in json.loads((runs["ab"] / "comparisons.json").read_text())}
    assert set(ours) == set(single) and len(single) == 6  # 3 (fraction, seed) x paired bootstrap + DeLong
    for k, row in single.items():
        for field in ("diff", "ci_low", "ci_high", "p_value", "p_holm", "p_bh"):
            assert ours[k][field] == pytest.approx(row[field], abs=TOL, rel=0), (k, field)
        assert ours[k]["run_a"] == "b" and ours[k]["run_b"] == "a"
        assert ours[k]["p_holm_tasks"] == pytest.approx(row["p_value"], abs=TOL)  # one task: a family of one
    assert {r["bootstrap_unit"] for r in comparison["comparisons"]} == {"image"}


def test_table_cells_ranks_and_provenance(runs: dict[str, Path], tmp_path: Path) -> None:
    report = compare_runs([runs["a"], runs["b"]], tmp_path)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert comparison["columns"] == ["pixels", "pixels-14"]
    assert [t["task"] for t in comparison["tasks"]] == ["pneumoniamnist"]
    combined = json.loads((runs["ab"] / "results.json").read_text())
    for cell in comparison["cells"]:
        row = next(r for r in combined if r["backbone"] == cell["column"] and r["selected"] and r["metric"] == "auc"
                   and r["train_fraction"] == 1.0)
        assert (cell["value"], cell["ci_low"], cell["ci_high"]) == (row["value"], row["ci_low"], row["ci_high"])
        folder = Path(cell["run_dir"])
        assert cell["run_fingerprint"] == hashlib.sha256((folder / "run.json").read_bytes()).hexdigest()[:16]
        assert cell["medprobe_version"] and cell["cache_key"]
    assert sorted(c["rank"] for c in comparison["cells"]) == [1.0, 2.0]
    assert [m["n_tasks"] for m in comparison["mean_ranks"]] == [1, 1]
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert list(table["value"]) == [c["value"] for c in comparison["cells"]]
    assert comparison["warnings"] == []
    html = report.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert html.count('src="data:image/svg+xml;base64,') == len(list((tmp_path / "figures").glob("*.svg"))) == 2
    assert "label_efficiency" in {p.stem for p in (tmp_path / "figures").glob("*.svg")}
    assert "'other'" in comparison["discipline_note"] and {r["discipline"] for r in comparison["label_efficiency"]} == {"other"}
    with pytest.raises(ConfigError, match="already holds a comparison"):
        compare_runs([runs["a"]], tmp_path)


def test_a_chosen_fraction_and_shared_backbone_names(runs: dict[str, Path], tmp_path: Path) -> None:
    """Run A and the combined run both hold "pixels": columns are qualified by run name; at
    fraction 0.5 the cell is the run's own seed."""
    comparison = build_comparison(load_runs([runs["a"], runs["ab"]]), fraction=0.5)
    assert comparison["columns"] == ["pixels [a]", "pixels [ab]", "pixels-14"]
    assert {c["seed"] for c in comparison["cells"]} == {0}
    same = [r for r in comparison["comparisons"] if {r["backbone_a"], r["backbone_b"]} == {"pixels [a]", "pixels [ab]"}]
    assert same and all(r["diff"] == 0 for r in same)  # the same probe, fitted twice


def copy_run(source: Path, target: Path, name: str) -> Path:
    shutil.copytree(source, target)
    summary = json.loads((target / "run.json").read_text())
    summary["name"] = name
    (target / "run.json").write_text(json.dumps(summary))
    return target


def test_runs_with_different_test_sets_are_never_paired(runs: dict[str, Path], tmp_path: Path) -> None:
    fewer = copy_run(runs["b"], tmp_path / "fewer", "b-fewer")
    frame = pd.read_parquet(fewer / "predictions.parquet")
    frame[~frame["sample_id"].isin(sorted(set(frame["sample_id"]))[:10])].to_parquet(fewer / "predictions.parquet")
    relabelled = copy_run(runs["b"], tmp_path / "relabelled", "b-relabelled")
    frame = pd.read_parquet(relabelled / "predictions.parquet")
    frame.loc[frame["sample_id"] == frame["sample_id"].iloc[0], "y_true"] ^= 1
    frame.to_parquet(relabelled / "predictions.parquet")
    report = compare_runs([runs["a"], fewer, relabelled], tmp_path / "out")
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert comparison["comparisons"] == []
    assert comparison["columns"] == ["pixels", "pixels-14 [b-fewer]", "pixels-14 [b-relabelled]"]
    unpaired = comparison["tasks"][0]["unpaired"]
    assert len(unpaired) == 3 and comparison["tasks"][0]["test_sets"] == [["a"], ["b-fewer"], ["b-relabelled"]]
    assert "624 vs 614 test samples, 10 sample id(s) in only one" in unpaired[0]
    assert "same 624 sample ids, but 1 label(s) differ" in unpaired[1] and "b-fewer" in unpaired[2]
    assert "never paired" in report.read_text()


def test_different_statistics_settings_are_warned(runs: dict[str, Path]) -> None:
    comparison = build_comparison(load_runs([runs["a"], runs["c"]]))
    assert any("bootstrap replicate counts" in w and "150 in a" in w and "100 in c" in w for w in comparison["warnings"])


def edit_summary(folder: Path, **changes) -> Path:
    summary = json.loads((folder / "run.json").read_text())
    for name, value in changes.items():
        target = summary
        *path, last = name.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    (folder / "run.json").write_text(json.dumps(summary))
    return folder


def test_bad_input_is_a_clear_error_naming_the_folder(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_run(tmp_path / "absent")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text("{}")
    with pytest.raises(DataError, match=r"half: not a finished medprobe run \(missing results.json"):
        load_run(tmp_path / "half")
    staging = copy_run(runs["a"], tmp_path / "x.medprobe-incomplete-abc", "x")
    with pytest.raises(DataError, match="staging folder"):
        load_run(staging)
    for version in ("0.0.9", "0.9.0", "2.0.0", None):
        old = edit_summary(copy_run(runs["a"], tmp_path / f"v{version}", "v"), versions__medprobe=version)
        with pytest.raises(DataError, match=f"{old}: .*(cannot compare|which medprobe version)"):
            load_run(old)
    unfinished = edit_summary(copy_run(runs["a"], tmp_path / "unfinished", "u"), finished=None)
    with pytest.raises(DataError, match="unfinished: run.json does not record a finished run"):
        load_run(unfinished)
    with pytest.raises(ConfigError, match=f"runs named 'a': {runs['a']} and {runs['a']}"):
        load_runs([runs["a"], runs["a"]])
    mixed = edit_summary(copy_run(runs["b"], tmp_path / "mixed", "mixed"), task_type="multiclass")
    with pytest.raises(DataError, match=f"{mixed}: task 'pneumoniamnist' mixes task types"):
        load_runs([runs["a"], mixed])
    metric = edit_summary(copy_run(runs["b"], tmp_path / "metric", "metric"), task_metric="f1_macro")
    with pytest.raises(DataError, match="mixes headline metric"):
        load_runs([runs["a"], metric])


def test_cli_prints_one_line_naming_the_folder(runs: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "error:" in result.output and "nowhere" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["compare", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "compare.html").is_file()


def test_discipline_comes_from_the_paper_task_table() -> None:
    assert task_of({"data": {"adapter": "padchest", "name": "padchest"}})[::2] == ("t7", "radiology")
    assert task_of({"data": {"adapter": "kather", "name": "x"}})[::2] == ("t1", "pathology")
    assert task_of({"data": {"adapter": "medmnist", "name": "pneumoniamnist"}})[::2] == ("pneumoniamnist", "other")


def synthetic_run(name: str, tmp_path: Path, scores: dict[str, np.ndarray], labels: np.ndarray,
                  classes: list[str]) -> RunFolder:
    """An in-memory multi-class run (no multi-class data set on this machine): per-class rows."""
    ids = [f"s{i:03d}" for i in range(len(labels))]
    frames = []
    for backbone, values in scores.items():
        frame = pd.DataFrame({"sample_id": ids, "backbone": backbone, "layer": "l0", "train_fraction": 1.0, "seed": 0,
                              "y_true": labels})
        for k, c in enumerate(classes):
            frame[f"score[{c}]"] = values[:, k]
        frames.append(frame)
    summary = {"name": name, "task_type": "multiclass", "task_metric": "auc", "classes": classes, "seed": 3,
               "n_bootstrap": 120, "statistics": {"bootstrap_unit": "image"}, "probe": {"Cs": [1.0]},
               "config": {"stats": {"delong": True}}}
    results = [{"backbone": b, "metric": "auc", "selected": True, "train_fraction": 1.0, "seed": 0} for b in scores]
    run = RunFolder(tmp_path / name, summary, results, "f" * 16, "0.1.0", "toy", "toy", "other")
    run.__dict__["predictions"] = pd.concat(frames, ignore_index=True)
    return run


def test_multiclass_pairs_per_class_rows_on_shared_replicates(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    classes = ["x", "y", "z"]
    labels = np.arange(90) % 3
    raw = {b: rng.dirichlet(np.ones(3), size=90) + 0.6 * np.eye(3)[labels] * s for b, s in (("m1", 1.0), ("m2", 0.5))}
    scores = {b: v / v.sum(axis=1, keepdims=True) for b, v in raw.items()}
    one, two = synthetic_run("one", tmp_path, {"m1": scores["m1"]}, labels, classes), \
        synthetic_run("two", tmp_path, {"m2": scores["m2"]}, labels, classes)
    group = SharedTestSet([one, two], np.array([f"s{i:03d}" for i in range(90)]), labels)
    group.columns = task_columns(group.runs)
    rows = group_comparisons("toy", group, None)
    indices = bootstrap_indices(90, 120, seed=3)
    metrics = ["auc", "auc[x]", "auc[y]", "auc[z]"]
    a, b = ((compute_metrics(labels, scores[m], "multiclass", classes, metrics=metrics),
             bootstrap_metrics(labels, scores[m], "multiclass", classes, indices, metrics=metrics)) for m in ("m2", "m1"))
    for metric in metrics:
        row = next(r for r in rows if r["metric"] == metric and r["test"] == "paired_bootstrap")
        expected = paired_difference(a[0][metric], b[0][metric], a[1][metric], b[1][metric])
        assert row["p_value"] == pytest.approx(expected["p_value"], abs=TOL)
        assert row["diff"] == pytest.approx(expected["diff"], abs=TOL)
    per_class = [r for r in rows if r["test"] == "paired_bootstrap" and r["metric"].startswith("auc[")]
    assert [r["n_family"] for r in per_class] == [3, 3, 3]
    assert len([r for r in rows if r["test"] == "delong"]) == 3


def write_run_files(folder: Path, cache: Path, names: tuple[str, ...] = ("s1", "s2")) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, name in enumerate(names):
        data = run_file(name, [PIXELS if number == 0 else PIXELS_14], cache_dir=str(cache))
        path = folder / f"{number}-{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        files.append(path)
    return files


def test_study_reuses_finished_runs_and_keeps_going(tmp_path: Path) -> None:
    files = write_run_files(tmp_path / "files", tmp_path / "cache")
    outcome = run_study([tmp_path / "files"], tmp_path / "cmp", runs_dir=tmp_path / "r", show_progress=False)
    assert [p.name for p in outcome.finished] == ["s1", "s2"] and outcome.report.is_file()
    stamp = (tmp_path / "r" / "s1" / "run.json").stat().st_mtime_ns
    again = run_study(files, tmp_path / "cmp", runs_dir=tmp_path / "r", show_progress=False)
    assert again.finished == [] and [p.name for p in again.reused] == ["s1", "s2"]
    assert (tmp_path / "r" / "s1" / "run.json").stat().st_mtime_ns == stamp

    broken = tmp_path / "files" / "9-broken.yaml"
    bad = run_file("broken", [PIXELS], cache_dir=str(tmp_path / "cache"))
    bad["data"]["options"]["flag"] = "nosuchmnist"
    broken.write_text(yaml.safe_dump(bad))
    with pytest.raises(DataError, match="study run .*9-broken.yaml"):
        run_study([tmp_path / "files"], tmp_path / "cmp", runs_dir=tmp_path / "r", show_progress=False)
    kept = run_study([tmp_path / "files"], tmp_path / "cmp", runs_dir=tmp_path / "r", keep_going=True,
                     show_progress=False)
    assert [f.name for f, _ in kept.failed] == ["9-broken.yaml"] and len(kept.reused) == 2
    assert kept.report is not None

    changed = yaml.safe_load(files[0].read_text())
    changed["probe"]["Cs"] = [0.1]
    files[0].write_text(yaml.safe_dump(changed))
    with pytest.raises(ConfigError, match="finished run of another configuration"):
        run_study(files, tmp_path / "cmp", runs_dir=tmp_path / "r", show_progress=False)


def test_study_resumes_after_sigkill_between_runs(tmp_path: Path) -> None:
    """Kill ``medprobe study`` as soon as the first run folder is complete; the rerun must not redo it."""
    write_run_files(tmp_path / "files", tmp_path / "cache")
    command = [sys.executable, "-m", "medprobe.cli", "study", str(tmp_path / "files"), "--runs-dir",
               str(tmp_path / "r"), "--out", str(tmp_path / "cmp"), "--quiet"]
    env = {**os.environ, "MEDPROBE_CACHE_DIR": str(tmp_path / "cache")}
    first = tmp_path / "r" / "s1" / "run.json"
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    assert first.exists(), f"the study ended before its first run finished:\n{(tmp_path / 'first.log').read_text()}"
    assert not (tmp_path / "r" / "s2" / "run.json").exists(), "killed too late: the second run had finished"
    stamp, text = first.stat().st_mtime_ns, first.read_text()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout + result.stderr  # medprobe's console writes to stderr
    assert "s1 already finished, not redone" in said and "s2 done" in said
    assert first.stat().st_mtime_ns == stamp and first.read_text() == text
    assert (tmp_path / "r" / "s2" / "run.json").is_file() and (tmp_path / "cmp" / "compare.html").is_file()
    assert not list((tmp_path / "r").glob("*.medprobe-incomplete-*"))
