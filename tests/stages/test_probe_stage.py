"""The probe stage: layer by layer in bounded memory with the old numbers, one selection per stack,
validation ties and tiny validation splits reported, the grid announced, predictions that scale."""

from __future__ import annotations

import dataclasses
import gc
import json
import tracemalloc
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pytest
from test_experiment import _config  # the toy MedMNIST run of the end-to-end tests

import medprobe.probes.layer_sweep as sweep
from conftest import make_dataset
from medprobe.config import parse_config
from medprobe.data.dataset import SPLITS
from medprobe.config import RunConfig
from medprobe.experiment import run_experiment
from medprobe.stages.data import Splits, align_features, load_data, train_subset
from medprobe.stages.extract import ExtractedFeatures, extract_backbone
from medprobe.stages.probe import ProbedBackbone, probe_backbone
from medprobe.stages.statistics import score_run
from medprobe.stats import ProbeOutcome
from medprobe.features import extract_features
from medprobe.features.reader import layer_sample_ids, read_layer_splits
from medprobe.models.base import Backbone
from medprobe.models.imaging import resize_batch
from medprobe.models.registry import _REGISTRY, register_backbone
from medprobe.plan import grid_estimate
from medprobe.probes import select_best, select_probe
from medprobe.probes.score_store import SpilledScores


class LayeredToy(Backbone):
    """Several layers, each a fixed random projection of the (downsampled) pixels, mixing in a little
    more of the brightness signal with depth. ``vlm=True`` names them like an HF VLM (``vision.k``
    then LM hidden states ``k``) and puts a prompt in the fingerprint, as those backbones do.
    ``copies`` repeats the first layer's features under more names (validation ties)."""

    name = "test-layers"
    default_batch_size = 16

    def __init__(self, n_layers: int = 4, dim: int = 24, vlm: bool = False, copies: int = 0, n_vision: int = 2) -> None:
        self.n_layers, self.dim, self.vlm, self.copies, self.n_vision = n_layers, dim, vlm, copies, n_vision

    def layer_names(self) -> list[str]:
        if self.vlm:
            return [f"vision.{k}" for k in range(self.n_vision)] + [str(k) for k in range(self.n_layers)]
        return [f"l{k}" for k in range(self.n_layers)] + [f"copy{k}" for k in range(self.copies)]

    def layer_stacks(self) -> dict[str, str]:
        """Like an HF VLM with ``vlm=True``: ``vision.k`` the vision stack, the rest the LM."""
        if not self.vlm:
            return super().layer_stacks()
        return {layer: "vision" if layer.startswith("vision.") else "lm" for layer in self.layer_names()}

    def fingerprint(self) -> dict[str, Any]:
        print_ = {"backbone": self.name, "n_layers": self.n_layers, "dim": self.dim, "copies": self.copies,
                  "n_vision": self.n_vision}
        return {**print_, "prompt": "what is this?"} if self.vlm else print_

    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        pixels = resize_batch(images, 6).mean(axis=-1).reshape(len(images), -1)
        brightness = pixels.mean(axis=1, keepdims=True)
        out = {}
        for layer in layers:
            depth = 0 if layer.startswith("copy") else self.layer_names().index(layer)
            weights = np.random.default_rng(depth).normal(size=(pixels.shape[1], self.dim))
            out[layer] = (np.tanh(pixels @ weights / 6) + 0.05 * depth * brightness).astype(np.float32)
        return out


@pytest.fixture
def layered_backbone():
    register_backbone("test-layers", LayeredToy, "test backbone with many layers", "test")
    yield
    _REGISTRY.pop("test-layers")


def _run_config(tmp_path: Path, backbone: dict[str, Any], **probe: Any) -> dict[str, Any]:
    config = _config(tmp_path)
    config["backbones"] = [backbone]
    config["stats"] = {"n_bootstrap": 50}
    config["probe"] = {**config["probe"], **probe}
    return config


def _reference_outcomes(config: RunConfig, dataset, extracted: ExtractedFeatures) -> list[ProbeOutcome]:
    """The probe stage as it was before the layer-outer rewrite: every layer loaded with
    ``cache.load`` up front, then per (fraction, seed) a probe per layer and the best layer overall."""
    probe_config, cache, layers = config.probe, extracted.cache, extracted.layers
    features = {layer: cache.load(layer)[1] for layer in layers}
    ids, _ = cache.load(layers[0])
    splits = align_features(dataset, ids, cache.skipped(layers[0]))
    outcomes = []
    for fraction in probe_config.train_fractions:
        for seed in probe_config.seeds if fraction < 1 else [config.seed]:
            local = train_subset(splits, fraction, seed)
            train = splits.index["train"][local]
            candidates = []
            for layer in layers:
                X = features[layer]
                probe, table = select_probe(X[train], splits.labels["train"][local], X[splits.index["val"]],
                                            splits.labels["val"], dataset.task_type, Cs=probe_config.Cs,
                                            metric=probe_config.selection_metric, max_iter=probe_config.max_iter,
                                            device=probe_config.device, n_classes=len(dataset.classes))
                chosen = table[table["selected"]].iloc[0]
                candidates.append(ProbeOutcome(extracted.label, layer, fraction, seed, float(probe.C),
                                               float(chosen["val_score"]), probe.predict_proba(X[splits.index["test"]]),
                                               converged=bool(chosen["converged"]), n_train=len(local),
                                               n_val=len(splits.index["val"])))
            best = max(range(len(candidates)), key=lambda i: candidates[i].val_score)
            candidates[best] = dataclasses.replace(candidates[best], selected=True)
            outcomes.extend(candidates)
    return outcomes


def _extracted(config: RunConfig):
    """The data and extract stages of a run file with one backbone: ``(dataset, features)``."""
    dataset = load_data(config.data, val_fraction=config.probe.val_fraction, seed=config.seed)
    features = extract_backbone(config.backbones[0], dataset, config.extraction, config.resolved_cache_dir(),
                                on_error=config.data.on_error, show_progress=False)
    return dataset, features


def _prepared(tmp_path: Path, n_layers: int = 5, dim: int = 24, **probe: Any):
    config = parse_config(_run_config(tmp_path, {"name": "test-layers", "label": "toy", "layers": "all",
                                                 "options": {"n_layers": n_layers, "dim": dim}}, **probe))
    return (config, *_extracted(config))


def _probe(config: RunConfig, dataset, features: ExtractedFeatures, **probe: Any) -> ProbedBackbone:
    """The probe stage, with ``probe`` settings overriding the run file's."""
    return probe_backbone(config.probe.model_copy(update=probe), config.seed, dataset, features, show_progress=False)


def _score(config: RunConfig, dataset, splits: Splits, outcomes) -> tuple[list, list]:
    """The statistics stage: results rows and comparisons."""
    statistics = score_run(config, dataset, splits.test_ids(), splits.labels["test"], outcomes).statistics
    return statistics.rows, statistics.comparisons


def test_layer_outer_stage_gives_the_old_results_byte_for_byte(tmp_path, layered_backbone):
    config, dataset, features = _prepared(tmp_path)
    probed = _probe(config, dataset, features)
    reference = _reference_outcomes(config, dataset, features)
    assert len(probed.outcomes) == len(reference) == 5 * 3
    for new, old in zip(probed.outcomes, reference):
        assert (new.backbone, new.layer, new.train_fraction, new.seed, new.selected) == \
               (old.backbone, old.layer, old.train_fraction, old.seed, old.selected)
        assert (new.C, new.val_score, new.converged) == (old.C, old.val_score, old.converged)
        assert new.test_scores.tobytes() == old.test_scores.tobytes()
    # and so results.json: the same rows, serialised to the same bytes
    rows_new, comparisons_new = _score(config, dataset, probed.splits, probed.outcomes)
    rows_old, comparisons_old = _score(config, dataset, probed.splits, reference)
    # the reference loop does not look for ties, so the tie columns are left out of the comparison
    ties = ("val_tie", "tied_layers", "tied_Cs")
    assert len(rows_new) == len(rows_old)
    for new, old in zip(rows_new, rows_old):
        assert json.dumps({k: new[k] for k in old if k not in ties}) == \
            json.dumps({k: v for k, v in old.items() if k not in ties})
    assert comparisons_new == comparisons_old


def test_layers_per_pass_fits_k_layers_at_once_with_the_same_results(tmp_path, layered_backbone, monkeypatch):
    """``probe.layers_per_pass: 2`` on 5 layers: passes of 2, 2 and 1 layers, each read together and
    fitted in one solver pass per plan; on this small sigmoid task Newton fits every layer on its
    own, so the outcomes are the one-layer-per-pass outcomes bit for bit."""
    config, dataset, features = _prepared(tmp_path)
    layers = features.layers
    single = _probe(config, dataset, features)
    passes, fit_plans = [], sweep.fit_subsets

    def spy(features, *args):
        passes.append(list(features))
        return fit_plans(features, *args)

    monkeypatch.setattr(sweep, "fit_subsets", spy)
    paired = _probe(config, dataset, features, layers_per_pass=2)
    assert passes == [layers[0:2], layers[2:4], layers[4:]]
    assert len(paired.outcomes) == len(single.outcomes) == 5 * 3
    for one, two in zip(single.outcomes, paired.outcomes):
        assert (one.layer, one.train_fraction, one.seed, one.C, one.val_score, one.selected) == \
               (two.layer, two.train_fraction, two.seed, two.C, two.val_score, two.selected)
        assert one.test_scores.tobytes() == two.test_scores.tobytes()
    with pytest.raises(Exception, match="layers_per_pass"):
        parse_config({**_run_config(tmp_path, {"name": "test-layers"}), "probe": {"layers_per_pass": 0}})


def test_reading_a_layer_into_splits_equals_cache_load(tmp_path):
    data = make_dataset(30, bad=[7])
    backbone = LayeredToy(n_layers=2, dim=5)
    cache = extract_features(backbone, data, ["l0", "l1"], tmp_path, chunk_size=4, on_error="skip",
                             show_progress=False)
    ids, skipped = layer_sample_ids(cache, ["l0", "l1"])
    assert (ids, skipped) == (cache.load("l1")[0], cache.skipped("l1"))
    splits = align_features(data, ids, skipped)
    parts = read_layer_splits(cache, "l1", splits.index)
    whole = cache.load("l1")[1]
    for split in SPLITS:
        assert parts[split].dtype == np.float32 and parts[split].flags.c_contiguous
        assert parts[split].tobytes() == whole[splits.index[split]].tobytes()


def _traced_peak(function) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_one_layer_in_memory_at_a_time(tmp_path, layered_backbone, monkeypatch):
    """Counting layers alive when the next is read (a spy on the reader), and the traced peak: more
    layers, fractions and seeds must not raise it above one layer plus the solver's own memory."""
    alive: list[weakref.ref] = []
    most_alive = []
    read = sweep.read_layer_splits

    def spy(cache, layer, index):
        gc.collect()
        most_alive.append(sum(ref() is not None for ref in alive))
        parts = read(cache, layer, index)
        alive.append(weakref.ref(parts["train"]))
        return parts

    peaks, dim = {}, 600
    # a first, untraced run imports what the stage imports lazily: module code is not feature memory
    _probe(*_prepared(tmp_path / "warm-up", n_layers=1, dim=dim))
    monkeypatch.setattr(sweep, "read_layer_splits", spy)
    for n_layers, fractions, seeds in ((2, [1.0], [0]), (6, [0.5, 1.0], [0, 1])):
        config, dataset, features = _prepared(tmp_path / str(n_layers), n_layers=n_layers, dim=dim,
                                              train_fractions=fractions, seeds=seeds)
        peaks[n_layers] = _traced_peak(lambda: _probe(config, dataset, features))
    cache, layers = features.cache, features.layers
    assert len(most_alive) == 2 + 6 and max(most_alive) == 0  # the previous layer was freed first
    # the solver alone, on one layer at the full fraction and the run's C grid: the memory no probe
    # stage can save (the solver's NumPy buffers are traced too, e.g. its float64 finish's copy)
    splits = align_features(dataset, *layer_sample_ids(cache, layers))
    parts = read(cache, layers[-1], splits.index)
    layer_bytes = sum(part.nbytes for part in parts.values())
    solver = _traced_peak(lambda: select_probe(parts["train"], splits.labels["train"], parts["val"],
                                               splits.labels["val"], "binary", Cs=config.probe.Cs)[0]
                          .predict_proba(parts["test"]))
    assert peaks[6] < 1.15 * peaks[2], peaks  # 3x the layers, 3x the plans: the same peak
    # + the stage's own keep: every layer x plan's outcome (coefficients, validation and test
    # scores: 24 of them at 6 layers) and, at the half fraction, whatever the solver picked there;
    # still less than one more layer (720 kB) could add
    assert peaks[6] < layer_bytes + solver + 512 * 1024, (peaks, layer_bytes, solver)


def _vlm_stage(tmp_path: Path, **probe: Any) -> ProbedBackbone:
    config = parse_config(_run_config(tmp_path, {"name": "test-layers", "label": "VLM", "layers": "all",
                                                 "options": {"vlm": True, "n_layers": 3}}, **probe))
    dataset, features = _extracted(config)
    assert features.layers == ["vision.0", "vision.1", "0", "1", "2"]
    assert features.stacks == {"vision.0": "vision", "vision.1": "vision", "0": "lm", "1": "lm", "2": "lm"}
    return _probe(config, dataset, features)


def test_vlm_layers_are_selected_per_stack(tmp_path, layered_backbone):
    frame = pd.DataFrame([vars(o) for o in _vlm_stage(tmp_path).outcomes])
    assert set(frame.loc[frame.layer.str.startswith("vision."), "backbone"]) == {"VLM (vision)"}
    assert set(frame.loc[~frame.layer.str.startswith("vision."), "backbone"]) == {"VLM"}
    for (backbone, _, _), part in frame.groupby(["backbone", "train_fraction", "seed"]):
        assert part["selected"].sum() == 1
        best = part.loc[part["selected"]].iloc[0]
        assert best["val_score"] == part["val_score"].max()
        assert part.loc[part.val_score == best.val_score].index[0] == best.name  # the first of equal maxima
        assert best["stack"] == ("vision" if backbone.endswith("(vision)") else "lm")


def test_vision_only_models_stay_one_stack(tmp_path, layered_backbone):
    """The stack of a layer is what its backbone declares, whatever the layer is called."""
    assert set(LayeredToy(n_layers=3).layer_stacks().values()) == {"main"}

    class VisionNamed(LayeredToy):  # a vision-only model whose layers happen to be called vision.k
        def layer_names(self) -> list[str]:
            return ["vision.0", "vision.1", "image_embeds"]

    assert set(VisionNamed().layer_stacks().values()) == {"main"}
    config = parse_config(_run_config(tmp_path, {"name": "test-layers", "label": "toy", "layers": "all",
                                                 "options": {"n_layers": 2}}))
    dataset, features = _extracted(config)
    assert features.stacks == {"l0": "main", "l1": "main"}
    assert {o.stack for o in _probe(config, dataset, features).outcomes} == {"main"}


def test_vision_rows_flow_into_comparisons_and_label_efficiency(tmp_path, layered_backbone):
    config = _run_config(tmp_path, {"name": "test-layers", "label": "VLM", "layers": "all",
                                    "options": {"vlm": True, "n_layers": 3}})
    config["backbones"].append({"name": "pixels", "options": {"size": 8}})
    config["stats"] = {"n_bootstrap": 50, "reference": "pixels"}
    out = run_experiment(parse_config(config), show_progress=False).parent
    comparisons = json.loads((out / "comparisons.json").read_text())
    assert {c["backbone_a"] for c in comparisons} == {"VLM", "VLM (vision)"}
    assert {c["layer_a"] for c in comparisons if c["backbone_a"] == "VLM (vision)"} <= {"vision.0", "vision.1"}
    summary = json.loads((out / "run.json").read_text())
    assert {row["backbone"] for row in summary["label_efficiency"]} == {"VLM", "VLM (vision)", "pixels"}
    assert "VLM (vision)" in (out / "report.html").read_text()


def test_validation_ties_are_flagged_and_warned(tmp_path, layered_backbone, capsys):
    config = parse_config(_run_config(tmp_path, {"name": "test-layers", "label": "toy", "layers": "all",
                                                 "options": {"n_layers": 1, "copies": 2}}))
    probed = _probe(config, *_extracted(config))
    selected = [o for o in probed.outcomes if o.selected]
    assert len(selected) == 3
    for outcome in selected:  # l0, copy0 and copy1 hold the very same features
        assert outcome.layer == "l0" and outcome.val_tie
        assert outcome.tied_layers == ["l0", "copy0", "copy1"]
    assert "validation ties in 3 of 3 selection(s)" in capsys.readouterr().err
    assert any("validation ties" in w for w in probed.warnings)


def test_ties_between_cs_are_reported():
    scores = [0.8, 0.9, 0.9 - 1e-15, 0.85]
    assert select_best({"l0": dict(zip([0.01, 0.1, 1.0, 10.0], scores))}) == ("l0", 0.1, [("l0", 0.1), ("l0", 1.0)])
    assert select_best({"l0": {1.0: 0.5}}) == ("l0", 1.0, [("l0", 1.0)])


def test_tiny_validation_split_is_warned():
    text = sweep.validation_size_warning(np.array([0, 1] * 10), "binary", ["neg", "pos"])
    assert "only 20 samples (< 30)" in text
    text = sweep.validation_size_warning(np.array([0] * 40 + [1] * 3), "multiclass", ["a", "b", "c"])
    assert "fewer than 5 samples for b (3), c (0)" in text
    labels = np.zeros((50, 2), int)
    labels[:10, 0] = 1
    labels[:2, 1] = 1
    assert "fewer than 5 positives for y (2)" in sweep.validation_size_warning(labels, "multilabel", ["x", "y"])
    assert sweep.validation_size_warning(np.array([0, 1] * 20), "binary", ["neg", "pos"]) is None


def test_grid_is_announced_with_its_fit_count(tmp_path, layered_backbone, capsys):
    config, dataset, features = _prepared(tmp_path, n_layers=4)
    probed = _probe(config, dataset, features)
    err = " ".join(capsys.readouterr().err.split())
    # 4 layers x (0.25 with seeds 0, 1 + 1.0 once) x 3 Cs
    assert "4 layer(s) x 3 (fraction, seed) plan(s) x 3 C = 36 probe fits (12 C paths) on 24-dim" in err
    assert probed.timings["probe_estimate[toy]_s"] >= 0
    estimate = grid_estimate(81, 8192, 9, [sweep.TrainSubset(1.0, 0, np.arange(20000))] * 19, 6, 1e11)
    assert (estimate["fits"], estimate["paths"]) == (81 * 19 * 6, 81 * 19)


def test_predictions_selected_by_default_and_all_partitioned(tmp_path, layered_backbone):
    backbone = {"name": "test-layers", "label": "VLM", "layers": "all", "options": {"vlm": True, "n_layers": 2}}
    out = run_experiment(parse_config(_run_config(tmp_path / "a", backbone)), show_progress=False).parent
    predictions = pd.read_parquet(out / "predictions.parquet")
    rows = pd.DataFrame(json.loads((out / "results.json").read_text()))
    chosen = rows[rows.selected & (rows.metric == "auc")]
    assert len(predictions) == len(chosen) * 80
    assert set(map(tuple, predictions[["backbone", "layer"]].drop_duplicates().to_numpy())) == \
           set(map(tuple, chosen[["backbone", "layer"]].drop_duplicates().to_numpy()))
    assert not (out / "predictions_all").exists()

    out_all = run_experiment(parse_config(_run_config(tmp_path / "b", backbone, predictions="all")),
                             show_progress=False).parent
    every = pd.read_parquet(out_all / "predictions_all")
    assert len(every) == len(rows[rows.metric == "auc"]) * 80
    assert sorted(p.parent.name for p in (out_all / "predictions_all").rglob("part-0.parquet")) == \
           sorted(f"layer={layer}" for layer in ["vision.0", "vision.1", "0", "1"])
    assert (out_all / "predictions_all" / "backbone=VLM%20%28vision%29").is_dir()
    # the selected rows of the full table are predictions.parquet's rows, value for value
    keys = ["backbone", "layer", "train_fraction", "seed", "sample_id"]
    every["backbone"], every["layer"] = every["backbone"].astype(str), every["layer"].astype(str)
    merged = pd.read_parquet(out_all / "predictions.parquet").merge(every, on=keys, suffixes=("", "_all"))
    assert len(merged) == len(predictions)
    assert (merged["score[pneumonia]"] == merged["score[pneumonia]_all"]).all()
    with pytest.raises(Exception, match="already holds"):
        run_experiment(parse_config(_run_config(tmp_path / "b", backbone, predictions="all")), show_progress=False)


def test_probe_settings_are_validated():
    base = {"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels"}]}
    with pytest.raises(Exception, match="probe.engine"):
        parse_config({**base, "probe": {"engine": "spark"}})
    with pytest.raises(Exception, match="probe.predictions"):
        parse_config({**base, "probe": {"predictions": "some"}})
    with pytest.raises(Exception, match="probe.num_cpus_per_worker"):
        parse_config({**base, "probe": {"num_cpus_per_worker": 0}})
    config = parse_config(base).probe
    assert (config.engine, config.predictions, config.num_workers) == ("local", "selected", 1)


def test_probe_engine_ray_on_a_local_instance_equals_local(tmp_path, layered_backbone):
    """The default-run check of ``probe.engine: ray`` (one node; tests/probes/test_ray_multinode.py has the
    multi-node cluster): same outcomes bit for bit, and worker-side errors keep their type."""
    ray = pytest.importorskip("ray")
    from medprobe.errors import CacheError
    from medprobe.probes.ray_engine import probe_layers_ray

    config, dataset, features = _prepared(tmp_path, n_layers=3)
    cache, layers = features.cache, features.layers
    local_run = _probe(config, dataset, features)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        on_ray = {"engine": "ray", "num_workers": 2, "num_cpus_per_worker": 0.5}
        distributed = _probe(config, dataset, features, **on_ray)
        # passes of two layers are one task each, with the local engine's numbers
        paired = _probe(config, dataset, features, **on_ray, layers_per_pass=2)
        splits = align_features(dataset, *layer_sample_ids(cache, layers))
        settings = sweep.ProbeSettings("binary", 2, (1.0,), "auc", 100, "cpu")
        with pytest.raises(CacheError, match=r"layer 'l0' on host .*cannot see the feature cache .*nowhere"):
            probe_layers_ray(tmp_path / "nowhere", ["l0"], splits.index, splits.labels,
                             [sweep.TrainSubset(1.0, 0, np.arange(len(splits.index["train"])))], settings,
                             num_cpus_per_worker=0.5, show_progress=False)
    finally:
        ray.shutdown()
    assert len(distributed.outcomes) == len(paired.outcomes) == len(local_run.outcomes) == 3 * 3
    for local, remote in [*zip(local_run.outcomes, distributed.outcomes), *zip(local_run.outcomes, paired.outcomes)]:
        assert (local.layer, local.C, local.val_score, local.selected) == (remote.layer, remote.C, remote.val_score,
                                                                         remote.selected)
        assert local.test_scores.tobytes() == remote.test_scores.tobytes()


def test_real_hf_backbones_are_told_apart(tmp_path):
    """The backbones declare their stacks: an HF VLM's vision tower is its own stack, CLIP's is not."""
    pytest.importorskip("transformers")
    import medprobe.testing.tiny_models as tiny
    from medprobe.models.registry import create_backbone

    for build, expected in ((tiny.build_tiny_llava, {"vision.1": "vision", "1": "lm"}),
                            (tiny.build_tiny_clip, {"vision.1": "main"})):
        backbone = create_backbone(f"hf:{build(tmp_path / build.__name__)}")
        try:
            stacks = backbone.layer_stacks()
        finally:
            backbone.close()
        assert {layer: stacks[layer] for layer in expected} == expected


def test_test_probabilities_beyond_the_budget_wait_on_disk_with_exact_values(tmp_path, layered_backbone):
    config, dataset, features = _prepared(tmp_path, n_layers=4)
    in_memory = _probe(config, dataset, features)
    spilling = _probe(config, dataset, features, scores_in_memory_mb=0)
    on_disk = [o for o in spilling.outcomes if isinstance(o.test_scores, SpilledScores)]
    assert len(on_disk) == 4 * 3 - 3  # all but the three selected probes (selected ones are read back)
    assert all(isinstance(o.test_scores, np.ndarray) for o in spilling.outcomes if o.selected)
    assert _score(config, dataset, spilling.splits, spilling.outcomes) == \
           _score(config, dataset, in_memory.splits, in_memory.outcomes)
    folder = on_disk[0].test_scores.path.parent
    assert folder.is_dir()
    del spilling, on_disk
    gc.collect()
    assert not folder.exists()  # the temporary folder goes with the last spilled array


def test_a_plan_fits_exactly_its_train_and_val_rows():
    rng = np.random.default_rng(0)
    features = {split: rng.normal(size=(n, 6)).astype(np.float32) for split, n in (("train", 60), ("val", 40),
                                                                                   ("test", 10))}
    labels = {split: np.arange(len(x)) % 2 for split, x in features.items()}
    features["train"][:, 0] += labels["train"]
    train_rows, val_rows = np.arange(0, 60, 3), np.arange(10, 40)
    settings = sweep.ProbeSettings("binary", 2, (0.1, 1.0), "auc", 100, "cpu")
    fit, = sweep.fit_subsets({"l0": features}, labels, [sweep.TrainSubset(0.5, 3, train_rows, val_rows)], settings)["l0"]
    probe, table = select_probe(features["train"][train_rows], labels["train"][train_rows], features["val"][val_rows],
                                labels["val"][val_rows], "binary", Cs=[0.1, 1.0], max_iter=100, device="cpu",
                                n_classes=2)
    assert (fit.fraction, fit.seed, fit.C) == (0.5, 3, probe.C)
    assert fit.val_score == table.loc[table.selected, "val_score"].iloc[0]
    assert fit.test_scores.tobytes() == probe.predict_proba(features["test"]).tobytes()


def test_a_head_that_does_not_converge_is_named_in_the_fit():
    """Per-head convergence reaches the probe stage: the chosen C's unconverged findings by name."""
    rng = np.random.default_rng(1)
    features = {split: rng.normal(size=(n, 8)).astype(np.float32) for split, n in (("train", 80), ("val", 40),
                                                                                   ("test", 10))}
    labels = {split: (rng.random((len(x), 3)) < 0.4).astype(int) for split, x in features.items()}
    for split in features:
        features[split][:, :3] += 3 * labels[split]
    plan = sweep.TrainSubset(1.0, 0, np.arange(80))
    names = ("effusion", "nodule", "edema")
    starved, = sweep.fit_subsets({"l0": features}, labels, [plan],
                              sweep.ProbeSettings("multilabel", 3, (100.0,), "auc", 1, "cpu", names))["l0"]
    assert not starved.converged
    assert set(starved.unconverged.split(", ")) <= set(names) and starved.unconverged
    enough, = sweep.fit_subsets({"l0": features}, labels, [plan],
                             sweep.ProbeSettings("multilabel", 3, (100.0,), "auc", 1000, "cpu", names))["l0"]
    assert enough.converged and enough.unconverged == ""


def test_per_class_rows_only_for_selected_layers_by_default(tmp_path, layered_backbone):
    """results.json stays compact at paper scale: layers the sweep did not select keep their summary
    metrics; every row that both settings write is the same bytes."""
    config, dataset, features = _prepared(tmp_path)
    probed = _probe(config, dataset, features)
    compact, _ = _score(config, dataset, probed.splits, probed.outcomes)
    every_layer = config.model_copy(update={"stats": config.stats.model_copy(update={"per_class_rows": "all"})})
    full, _ = _score(every_layer, dataset, probed.splits, probed.outcomes)
    summary_metrics = {r["metric"] for r in full if not r["selected"] and "[" not in r["metric"]}
    assert {r["metric"] for r in compact if not r["selected"]} == summary_metrics
    assert not any("[" in r["metric"] for r in compact if not r["selected"])
    assert any("[" in r["metric"] for r in full if not r["selected"])
    key = lambda r: (r["backbone"], r["layer"], r["train_fraction"], r["seed"], r["metric"])  # noqa: E731
    by_key = {key(r): r for r in full}
    assert all(json.dumps(r) == json.dumps(by_key[key(r)]) for r in compact)
    assert len(compact) < len(full)
