"""The study's protocol beside medprobe's: recipes in the probe stage, layers picked on test and
labelled so, the paired protocol comparison, the study's uniform draw, its prompt and case text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_probe_stage import _prepared, layered_backbone  # noqa: F401 (fixture)

from medprobe.config import parse_config
from medprobe.errors import ConfigError
from medprobe.probes.selection import validation_score
from medprobe.probes.study_recipes import SELECTED_ON_TEST, fit_recipe
from medprobe.stages.data import align_features, train_subset
from medprobe.stages.protocols import every_non_test_image, probe_protocols
from medprobe.stages.statistics import score_run
from medprobe.features.reader import layer_sample_ids, read_layer_splits

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def _minimal(**probe):
    return {"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels"}], "probe": probe}


def test_test_selection_only_with_a_study_recipe():
    with pytest.raises(ConfigError, match="layer_selection: test .* only for reproducing the study"):
        parse_config(_minimal(layer_selection="test"))
    assert parse_config(_minimal(recipe="study", layer_selection="test")).probe.layer_selection == "test"
    with pytest.raises(ConfigError, match="drop layer_selection"):
        parse_config(_minimal(recipe="study", layer_selection="test", protocols=["medprobe", "study"]))
    with pytest.raises(ConfigError, match="at most once"):
        parse_config(_minimal(protocols=["study", "study"]))


def test_study_recipe_on_test_trains_on_every_non_test_image_and_picks_the_best_test_layer(tmp_path,
                                                                                          layered_backbone):
    config, dataset, features = _prepared(tmp_path, n_layers=4)
    probe = config.probe.model_copy(update={"recipe": "study", "layer_selection": "test", "train_fractions": [1.0]})
    probed = probe_protocols(probe, config.seed, dataset, features, show_progress=False)
    splits = align_features(dataset, *layer_sample_ids(features.cache, features.layers))
    merged = every_non_test_image(splits)
    assert len(merged.index["train"]) == len(splits.index["train"]) + len(splits.index["val"])
    test_scores = {}
    for layer in features.layers:  # the reference: the recipe by hand, layer by layer
        matrices = read_layer_splits(features.cache, layer, merged.index)
        model = fit_recipe("study", matrices["train"], merged.labels["train"], dataset.task_type,
                           len(dataset.classes), seed=config.seed, device="cpu")
        test_scores[layer] = validation_score(splits.labels["test"], model.predict_proba(matrices["test"]),
                                              dataset.task_type)
    best = max(features.layers, key=lambda layer: (test_scores[layer], -features.layers.index(layer)))
    selected = [o for o in probed.outcomes if o.selected]
    assert [o.layer for o in selected] == [best]
    assert all(o.backbone == f"toy [{SELECTED_ON_TEST}]" and o.n_train == len(merged.index["train"])
               for o in probed.outcomes)
    for outcome in probed.outcomes:
        assert validation_score(splits.labels["test"], np.asarray(outcome.test_scores),
                                dataset.task_type) == pytest.approx(test_scores[outcome.layer], abs=1e-12)
    rows = score_run(config, dataset, splits.test_ids(), splits.labels["test"], probed.outcomes).statistics.rows
    assert {row["layer_selection"] for row in rows} == {SELECTED_ON_TEST}
    assert {row["recipe"] for row in rows} == {"study"} and all("study_layer" in row for row in rows)


def test_study_recipe_on_validation_keeps_the_validation_split_out(tmp_path, layered_backbone):
    config, dataset, features = _prepared(tmp_path, n_layers=3)
    probe = config.probe.model_copy(update={"recipe": "study-clip", "train_fractions": [1.0]})
    probed = probe_protocols(probe, config.seed, dataset, features, show_progress=False)
    assert all(o.backbone == "toy" and o.selected_on == "validation" and o.val_score == o.val_score
               for o in probed.outcomes)
    rows = score_run(config, dataset, probed.splits.test_ids(), probed.splits.labels["test"],
                     probed.outcomes).statistics.rows
    assert not any("layer_selection" in row for row in rows) and {row["recipe"] for row in rows} == {"study-clip"}


def test_both_protocols_give_the_comparison_with_paired_cis_that_add_up(tmp_path, layered_backbone):
    config, dataset, features = _prepared(tmp_path, n_layers=4)
    probe = config.probe.model_copy(update={"protocols": ["medprobe", "study"], "train_fractions": [1.0]})
    probed = probe_protocols(probe, config.seed, dataset, features, show_progress=False)
    names = {o.backbone for o in probed.outcomes}
    assert names == {"toy", f"toy [study protocol, {SELECTED_ON_TEST}]"}
    statistics = score_run(config, dataset, probed.splits.test_ids(), probed.splits.labels["test"],
                           probed.outcomes).statistics
    (row,) = statistics.protocols
    assert row["backbone"] == "toy" and row["study_selection"] == SELECTED_ON_TEST
    assert row["difference"]["value"] == pytest.approx(row["study"]["value"] - row["medprobe"]["value"])
    assert row["difference"]["value"] == pytest.approx(row["layer_selection_on_test"]["value"]
                                                       + row["recipe_and_training_images"]["value"])
    assert row["layer_selection_on_test"]["value"] >= 0  # the best on test is at least the val-picked layer
    for part in ("difference", "layer_selection_on_test", "recipe_and_training_images"):
        assert row[part]["ci_low"] <= row[part]["value"] <= row[part]["ci_high"]
    medprobe_rows = [r for r in statistics.rows if r["backbone"] == "toy"]
    assert all("layer_selection" not in r and "study_layer" in r for r in medprobe_rows)


def test_default_run_has_no_study_fields(tmp_path, layered_backbone):
    config, dataset, features = _prepared(tmp_path, n_layers=2)
    probed = probe_protocols(config.probe, config.seed, dataset, features, show_progress=False)
    statistics = score_run(config, dataset, probed.splits.test_ids(), probed.splits.labels["test"],
                           probed.outcomes).statistics
    assert not statistics.protocols
    assert not any(key in row for row in statistics.rows for key in ("recipe", "layer_selection", "study_layer"))


def test_study_sampling_is_one_uniform_draw_of_int_f_n(tmp_path, layered_backbone):
    config, dataset, features = _prepared(tmp_path, n_layers=2)
    splits = align_features(dataset, *layer_sample_ids(features.cache, features.layers))
    n = len(splits.index["train"])
    rows = train_subset(splits, 0.3, 1, sampling="study")
    np.random.seed(1)  # clip_ex.py's draw, written out
    expected = np.random.choice(n, int(0.3 * n), replace=False)
    np.testing.assert_array_equal(rows, expected)
    assert not np.array_equal(np.sort(rows), np.sort(train_subset(splits, 0.3, 1)))


def test_study_general_prompt_is_the_codes_default(tmp_path):
    pytest.importorskip("transformers")
    from medprobe.models.registry import create_backbone
    from medprobe.testing.tiny_models import build_tiny_idefics

    path = build_tiny_idefics(tmp_path / "idefics")
    backbone = create_backbone("idefics-9b", path=str(path), prompt_style="study-general", noun="skin image")
    assert backbone.prompt == "What's on this image?"  # activation.py's 'general' entry names no image kind
    study = create_backbone("idefics-9b", path=str(path), prompt_style="study", noun="skin image")
    assert json.dumps(study.fingerprint(), sort_keys=True) != json.dumps(backbone.fingerprint(), sort_keys=True)


def test_run_with_both_protocols_reports_them_and_labels_test_picked_layers(tmp_path, layered_backbone):
    from medprobe.experiment import run_experiment

    config, _, _ = _prepared(tmp_path, n_layers=3)
    config = config.model_copy(update={"probe": config.probe.model_copy(update={"protocols": ["medprobe", "study"]})})
    report = run_experiment(config, tmp_path / "run", show_progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {row["train_fraction"] for row in run["protocol_comparison"]} == set(config.probe.train_fractions)
    html = report.read_text()
    assert "Study protocol vs medprobe protocol" in html
    assert html.count(SELECTED_ON_TEST) >= len(run["protocol_comparison"])
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    assert all(row["layer_selection"] == SELECTED_ON_TEST for row in rows if "study protocol" in row["backbone"])
