"""The statistics of a run (:func:`medprobe.stats.probe_statistics` and the row builders under
it) on test sets with several images per patient, checked against references computed here with
scikit-learn, ``medprobe.stats`` building blocks and formulas.

Probe outcomes are built from synthetic test scores and the statistics are called on arrays: no
run file, data set or feature extraction; two end-to-end runs check the stage around them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medprobe.config import StatsConfig, parse_config
from medprobe.experiment import run_experiment
from medprobe.stats import (
    REPLICATE_T_TEST_WARNING,
    EvaluationSet,
    GroupColumn,
    ProbeOutcome,
    ProbeStatistics,
    benjamini_hochberg,
    bootstrap_indices,
    cluster_bootstrap_indices,
    cluster_codes,
    delong_test,
    holm,
    probe_statistics,
)

N_BOOT = 200


def clustered_test_set(task_type: str = "binary", n_patients: int = 40, seed: int = 0,
                       with_patients: bool = True) -> dict:
    """A test split of 3 images per patient: labels ``y``, ``patients`` (None entries without
    patient ids), a per-patient ``sex``, ``classes`` and ``task_type``."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i:02d}" for i in range(n_patients)], 3)
    n = patients.size
    classes = ["neg", "pos"] if task_type == "binary" else ["a", "b", "c"]
    propensity = np.repeat(rng.normal(0, 1, n_patients), 3)
    if task_type == "binary":
        labels = (propensity + rng.normal(0, 0.7, n) > 0).astype(int)
    else:
        labels = np.digitize(propensity + rng.normal(0, 0.7, n), [-0.4, 0.4])
    sex = np.repeat(np.where(rng.random(n_patients) < 0.5, "F", "M"), 3)
    return {"y": labels, "classes": classes, "task_type": task_type, "sex": sex.astype(object),
            "patients": patients.astype(object) if with_patients else np.full(n, None, dtype=object)}


def probabilities(y: np.ndarray, n_classes: int, strength: float, rng: np.random.Generator,
                  patient_effect: np.ndarray) -> np.ndarray:
    logits = rng.normal(0, 1, (y.size, n_classes)) + patient_effect[:, None] * np.arange(n_classes)
    logits[np.arange(y.size), y] += strength
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def outcomes(test: dict, fractions=(1.0,), seeds=(0,), converged: bool = True) -> list[ProbeOutcome]:
    """Selected probes of backbones "a" and "b" ("b" the stronger) at each fraction and seed."""
    y = test["y"]
    rng = np.random.default_rng(5)
    effect = np.repeat(rng.normal(0, 1, y.size // 3), 3)
    made = []
    for backbone, strength in (("a", 1.0), ("b", 1.4)):
        for fraction in fractions:
            for seed in (seeds if fraction < 1 else (0,)):
                scores = probabilities(y, len(test["classes"]), strength * fraction ** 0.3, rng, effect)
                made.append(ProbeOutcome(backbone, "layer0", fraction, seed, 1.0, 0.8, scores, converged=converged,
                                         selected=True, n_train=int(round(fraction * 400)) + seed, n_val=60))
    return made


def statistics(test: dict, probes: list[ProbeOutcome], stats: dict | None = None,
               task_metric: str = "auc") -> ProbeStatistics:
    """The statistics of ``probes`` with backbone "a" as the reference, as a run would compute them."""
    settings = StatsConfig(**{"n_bootstrap": N_BOOT, "reference": "a", **(stats or {})})
    evaluation = EvaluationSet.draw("run", test["task_type"], test["classes"], test["y"], test["patients"],
                                    n_bootstrap=settings.n_bootstrap, seed=0, bootstrap_unit=settings.bootstrap_unit)
    groups = [GroupColumn(column, test[column], True) for column in settings.group_columns]
    return probe_statistics(probes, evaluation, settings, task_metric=task_metric, seed=0,
                            reference=settings.reference, groups=groups)


def expanded(draws: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return np.concatenate([np.flatnonzero(codes == d) for d in draws])


def test_results_resample_patients_by_default() -> None:
    test = clustered_test_set()
    y, probes = test["y"], outcomes(test)
    result = statistics(test, probes)
    auc_rows = [r for r in result.rows if r["metric"] == "auc"]
    patients = test["patients"]
    plan = cluster_bootstrap_indices(patients, N_BOOT, seed=0)
    codes = cluster_codes(patients)
    for row, outcome in zip(auc_rows, probes):
        assert row["bootstrap_unit"] == "patient" and row["n_units"] == 40 and row["n_test"] == 120
        replicates = [roc_auc_score(y[expanded(d, codes)], outcome.test_scores[expanded(d, codes), 1])
                      for d in plan.draws]
        assert row["ci_low"] == pytest.approx(np.percentile(replicates, 2.5), abs=1e-12)
        assert row["sd"] == pytest.approx(np.std(replicates, ddof=1), abs=1e-12)
        assert row["n_train"] == 400 and row["n_val"] == 60
    assert result.summary["bootstrap_unit"] == "patient"


@pytest.mark.parametrize("with_patients", [True, False])
def test_image_unit_override_and_data_without_patient_ids(with_patients: bool) -> None:
    test = clustered_test_set(with_patients=with_patients)
    y, probes = test["y"], outcomes(test)
    result = statistics(test, probes, {"bootstrap_unit": "image"} if with_patients else None)
    row = next(r for r in result.rows if r["metric"] == "auc")
    indices = bootstrap_indices(len(y), N_BOOT, seed=0)
    scores = probes[0].test_scores[:, 1]
    replicates = [roc_auc_score(y[i], scores[i]) for i in indices]
    assert row["bootstrap_unit"] == "image" and row["n_units"] == 120
    assert row["ci_high"] == pytest.approx(np.percentile(replicates, 97.5), abs=1e-12)
    delong = next(c for c in result.comparisons if c["test"] == "delong")
    assert delong["method"] == "delong" and delong["bootstrap_unit"] == "image"


def test_binary_comparisons_share_patient_replicates_and_use_clustered_delong() -> None:
    test = clustered_test_set()
    y, probes = test["y"], outcomes(test)
    comparisons = statistics(test, probes, {"paired_t_test": True}).comparisons
    by_test = {c["test"]: c for c in comparisons}
    assert set(by_test) == {"paired_bootstrap", "delong", "replicate_t_test"}
    a, b = probes[1], probes[0]  # backbone "b" is compared with the reference "a"
    patients = test["patients"]
    expected = delong_test(y, a.test_scores[:, 1], b.test_scores[:, 1], patients=patients)
    assert by_test["delong"]["method"] == "obuchowski" and by_test["delong"]["bootstrap_unit"] == "patient"
    assert by_test["delong"]["p_value"] == pytest.approx(expected["p_value"], abs=1e-12)
    plan = cluster_bootstrap_indices(patients, N_BOOT, seed=0)
    codes = cluster_codes(patients)
    diffs = [roc_auc_score(y[r], a.test_scores[r, 1]) - roc_auc_score(y[r], b.test_scores[r, 1])
             for r in (expanded(d, codes) for d in plan.draws)]
    paired = by_test["paired_bootstrap"]
    assert paired["bootstrap_unit"] == "patient"
    assert paired["ci_low"] == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert paired["p_holm"] == paired["p_bh"] == paired["p_value"] and paired["n_family"] == 1
    t_row = by_test["replicate_t_test"]
    assert t_row["warning"] == REPLICATE_T_TEST_WARNING and t_row["n_replicates"] == N_BOOT


def test_replicate_t_statistic_grows_with_the_number_of_replicates() -> None:
    """The reason the study's t-test is only an option: same data, more replicates, larger t
    (roughly by sqrt(R ratio))."""
    test = clustered_test_set()
    t = {}
    for n_boot in (100, 1600):
        comparisons = statistics(test, outcomes(test), {"paired_t_test": True, "n_bootstrap": n_boot,
                                                        "delong": False}).comparisons
        t[n_boot] = abs(next(c for c in comparisons if c["test"] == "replicate_t_test")["t"])
    assert 2.5 < t[1600] / t[100] < 6.5  # sqrt(16) = 4


def test_multiclass_per_class_delong_paired_rows_and_adjusted_p_values() -> None:
    test = clustered_test_set("multiclass", seed=2)
    y, probes = test["y"], outcomes(test)
    result = statistics(test, probes)
    rows, comparisons = result.rows, result.comparisons
    assert {r["metric"] for r in rows} >= {"f1[a]", "f1[b]", "f1[c]", "auc[a]", "ece"}
    delong = [c for c in comparisons if c["test"] == "delong"]
    assert [c["metric"] for c in delong] == ["auc[a]", "auc[b]", "auc[c]", "auc"]
    assert delong[-1]["p_value"] is None and "macro AUC" in delong[-1]["note"]
    a, b = probes[1], probes[0]
    patients = test["patients"]
    for k, row in enumerate(delong[:3]):
        expected = delong_test((y == k).astype(int), a.test_scores[:, k], b.test_scores[:, k], patients=patients)
        assert row["method"] == "obuchowski" and row["p_value"] == pytest.approx(expected["p_value"], abs=1e-12)
    np.testing.assert_allclose([c["p_holm"] for c in delong[:3]], holm([c["p_value"] for c in delong[:3]]))
    np.testing.assert_allclose([c["p_bh"] for c in delong[:3]],
                               benjamini_hochberg([c["p_value"] for c in delong[:3]]))
    paired = [c for c in comparisons if c["test"] == "paired_bootstrap"]
    assert [c["metric"] for c in paired] == ["auc", "auc[a]", "auc[b]", "auc[c]"]
    np.testing.assert_allclose([c["p_holm"] for c in paired[1:]], holm([c["p_value"] for c in paired[1:]]))
    assert all(c["n_family"] == 3 for c in paired[1:])


def test_delong_it_cannot_serve_is_a_row_with_a_note() -> None:
    test = clustered_test_set("multiclass", seed=2)
    y = test["y"].copy()
    y[y == 2] = 0
    y[0] = 2  # class "c": a single positive test image
    test = {**test, "y": y}
    comparisons = statistics(test, outcomes(test)).comparisons
    row = next(c for c in comparisons if c["test"] == "delong" and c["metric"] == "auc[c]")
    assert row["p_value"] is None and row["p_holm"] is None and "not applicable" in row["note"]


def test_group_columns_rows_and_calibration() -> None:
    test = clustered_test_set()
    y, probes = test["y"], outcomes(test)
    rows = statistics(test, probes, {"group_columns": ["sex"]}).rows
    groups = [r for r in rows if r.get("group_column") == "sex"]
    for row in groups:
        members = test["sex"] == row["group"]
        outcome = next(o for o in probes if o.backbone == row["backbone"])
        assert row["value"] == pytest.approx(roc_auc_score(y[members], outcome.test_scores[members, 1]), abs=1e-12)
        assert row["bootstrap_unit"] == "patient" and row["n_units"] == members.sum() // 3
        assert row["metric"] == f"auc@sex={row['group']}" and row["ci_low"] < row["value"] < row["ci_high"]
    assert len(groups) == 4  # 2 backbones x 2 groups
    ece = [r for r in rows if r["metric"] == "ece"]
    assert len(ece) == 2 and all(len(r["reliability"]) == 10 and r["ci_low"] <= r["value"] for r in ece)


def test_label_efficiency_sd_ci_ratios_and_sizes() -> None:
    test = clustered_test_set()
    result = statistics(test, outcomes(test, fractions=(0.1, 1.0), seeds=(0, 1, 2)))
    rows, summary = result.rows, result.label_efficiency
    entry = next(e for e in summary if e["backbone"] == "b" and e["train_fraction"] == 0.1)
    values = [r["value"] for r in rows if r["metric"] == "auc" and r["backbone"] == "b" and r["train_fraction"] == 0.1]
    full = next(r["value"] for r in rows if r["metric"] == "auc" and r["backbone"] == "b" and r["train_fraction"] == 1)
    assert entry["value_sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert entry["fraction_of_full"] == pytest.approx(np.mean(values) / full, abs=1e-12)
    assert entry["chance_corrected_ratio"] == pytest.approx((np.mean(values) - 0.5) / (full - 0.5), abs=1e-12)
    assert entry["fraction_of_full_ci_low"] < entry["fraction_of_full"] < entry["fraction_of_full_ci_high"]
    assert entry["chance_corrected_ci_low"] < entry["chance_corrected_ratio"] < entry["chance_corrected_ci_high"]
    assert entry["n_train"] == [40, 41, 42] and entry["n_train_mean"] == 41 and entry["n_val"] == [60] * 3
    one_seed = next(e for e in summary if e["backbone"] == "b" and e["train_fraction"] == 1.0)
    assert one_seed["value_sd"] is None and one_seed["n_seeds"] == 1


def test_unconverged_selected_probe_is_flagged(capsys) -> None:
    from medprobe.stages.statistics import print_warnings

    test = clustered_test_set()
    result = statistics(test, outcomes(test, converged=False))
    print_warnings(result.warnings)  # what the statistics stage does with them
    warnings = result.summary["warnings"]
    assert len(warnings) == 2 and "did not converge" in warnings[0]
    assert "did not converge" in capsys.readouterr().err
    assert all(not r["converged"] for r in result.rows if r["metric"] == "auc")


def test_val_follows_fraction_subsamples_validation(tmp_path) -> None:
    from test_experiment import _config

    config = _config(tmp_path, stats={"n_bootstrap": 20})
    config["backbones"] = [{"name": "pixels", "options": {"size": 8}}]
    config["probe"] = {**config["probe"], "val_follows_fraction": True, "Cs": [1.0]}
    run_experiment(parse_config(config), show_progress=False)
    rows = pd.DataFrame(json.loads((tmp_path / "out" / "results.json").read_text()))
    auc = rows[rows["metric"] == "auc"]
    assert (auc.loc[auc["train_fraction"] == 1.0, "n_val"] == 60).all()
    assert (auc.loc[auc["train_fraction"] == 1.0, "n_train"] == 160).all()
    small = auc[auc["train_fraction"] == 0.25]
    assert small["n_val"].between(13, 17).all() and small["n_train"].between(38, 42).all()
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["statistics"]["bootstrap_unit"] == "image"  # MedMNIST has no patient ids


def test_f1_task_metric_gets_per_class_f1_comparisons() -> None:
    test = clustered_test_set("multiclass", seed=4)
    result = statistics(test, outcomes(test), task_metric="f1_macro")
    comparisons = result.comparisons
    paired = [c for c in comparisons if c["test"] == "paired_bootstrap"]
    assert [c["metric"] for c in paired] == ["f1_macro", "f1[a]", "f1[b]", "f1[c]"]
    point = result.replicates[("b", 1.0, 0)][0]
    reference = result.replicates[("a", 1.0, 0)][0]
    assert paired[1]["diff"] == pytest.approx(point["f1[a]"] - reference["f1[a]"], abs=1e-12)
    # DeLong still compares the per-class AUCs; no macro row since the task metric is not AUC
    assert [c["metric"] for c in comparisons if c["test"] == "delong"] == ["auc[a]", "auc[b]", "auc[c]"]


def test_stats_options_are_validated() -> None:
    from medprobe.errors import ConfigError

    base = {"data": {"adapter": "medmnist"}, "backbones": [{"name": "a"}]}
    with pytest.raises(ConfigError, match="stats.bootstrap_unit"):
        parse_config({**base, "stats": {"bootstrap_unit": "eye"}})
    with pytest.raises(ConfigError, match="stats.calibration_bins"):
        parse_config({**base, "stats": {"calibration_bins": 1}})
    config = parse_config({**base, "probe": {"val_follows_fraction": True}})
    assert config.probe.val_follows_fraction and config.stats.bootstrap_unit == "patient"
    assert config.stats.group_columns == [] and config.stats.paired_t_test is False


def test_end_to_end_run_with_patients_resamples_patients(tmp_path) -> None:
    """A manifest with 3 images per patient: results, comparisons, groups and run.json say
    "patient", and the per-sex rows resample the patients of each sex."""
    from PIL import Image

    rng = np.random.default_rng(0)
    records = []
    for patient in range(60):
        split = "train" if patient < 30 else "val" if patient < 40 else "test"
        label = int(rng.random() < 0.5)
        sex = "F" if patient % 2 else "M"
        for image in range(3):
            pixels = np.clip(rng.random((12, 12)) * 160 + 40 * label + rng.normal(0, 30), 0, 255).astype(np.uint8)
            name = f"p{patient:02d}_{image}.png"
            Image.fromarray(pixels).convert("RGB").save(tmp_path / name)
            records.append({"path": name, "label": ["benign", "malignant"][label], "patient_id": f"p{patient:02d}",
                            "split": split, "sex": sex})
    pd.DataFrame(records).to_csv(tmp_path / "manifest.csv", index=False)
    config = parse_config({
        "name": "clustered", "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "data": {"adapter": "manifest", "options": {"path": str(tmp_path / "manifest.csv"), "extra_columns": ["sex"]}},
        "backbones": [{"name": "pixels", "options": {"size": 4}}, {"name": "pixels", "label": "p8",
                                                                 "options": {"size": 8}}],
        "probe": {"Cs": [0.1, 1.0]},
        "stats": {"n_bootstrap": 50, "group_columns": ["sex"]},
    })
    run_experiment(config, show_progress=False)
    out = tmp_path / "out"
    rows = json.loads((out / "results.json").read_text())
    assert {r["bootstrap_unit"] for r in rows} == {"patient"}
    assert {r["n_units"] for r in rows if "@" not in r["metric"]} == {20}
    assert {r["n_units"] for r in rows if r["metric"].startswith("auc@sex=")} == {10}
    comparisons = json.loads((out / "comparisons.json").read_text())
    assert {c["bootstrap_unit"] for c in comparisons} == {"patient"}
    assert next(c for c in comparisons if c["test"] == "delong")["method"] == "obuchowski"
    statistics = json.loads((out / "run.json").read_text())["statistics"]
    assert statistics["bootstrap_unit"] == "patient" and statistics["n_units"] == 20
