"""Probe protocols: medprobe's, the study's as it ran, or both on the same cached features.

The default run has one protocol, medprobe's, and goes straight to
:func:`medprobe.stages.probe.probe_backbone` -- nothing here changes its outcomes. The study's
protocol (``probe.recipe: study | study-clip``, or ``probe.protocols: [medprobe, study]``) fits
the study's recipe (:mod:`medprobe.probes.study_recipes`) on every layer and picks a layer per
stack:

* ``layer_selection: test`` (always for the study protocol of ``probe.protocols``): as the study
  did -- the probe is trained on every non-test image (train and validation splits together) and
  the layer with the best *test* score is taken. Such rows are labelled "selected on test
  (optimistic)" (results.json ``layer_selection``, the console and the backbone row's name, so
  every table and figure of the report shows it);
* ``layer_selection: validation``: the study's recipe trained on the train split, the layer picked
  on validation like medprobe's -- the recipe without the optimistic choice.

With both protocols the study protocol's rows are their own backbone rows, paired with medprobe's
(``ProbeOutcome.protocol_of``) for the protocol comparison (:mod:`medprobe.stats.protocols`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medprobe.config import ProbeConfig
from medprobe.data.dataset import Dataset
from medprobe.features.reader import layer_sample_ids, read_layer_splits
from medprobe.probes.layer_sweep import stack_display_name
from medprobe.probes.score_store import ScoreStore, SpilledScores
from medprobe.probes.selection import select_best, validation_score
from medprobe.probes.study_recipes import SELECTED_ON_TEST, STUDY_RECIPES, fit_recipe
from medprobe.progress import console, progress_bar
from medprobe.stages.data import Splits, align_features
from medprobe.stages.extract import ExtractedFeatures
from medprobe.stages.probe import ProbedBackbone, probe_backbone, train_subsets
from medprobe.stats.outcomes import ProbeOutcome


@dataclass(frozen=True)
class Protocol:
    """How one set of probes is made: ``recipe`` and where the layer is chosen."""

    name: str  # "medprobe" or "study"
    recipe: str
    selected_on: str  # "validation" or "test"


def run_protocols(probe: ProbeConfig) -> list[Protocol]:
    """The protocols a run file asks for, in its order (one unless ``probe.protocols`` lists two)."""
    if probe.protocols is None:
        return [Protocol("medprobe" if probe.recipe == "medprobe" else "study", probe.recipe, probe.layer_selection)]
    study_recipe = probe.recipe if probe.recipe in STUDY_RECIPES else "study"
    return [Protocol("medprobe", "medprobe", "validation") if name == "medprobe" else
            Protocol("study", study_recipe, "test") for name in probe.protocols]


def study_options_active(probe: ProbeConfig) -> bool:
    """Whether rows carry the study's layer labels (``study_layer``): a study recipe, protocol or draw."""
    return probe.recipe != "medprobe" or probe.protocols is not None or probe.train_sampling == "study"


def protocol_label(label: str, protocol: Protocol, paired: bool) -> str:
    """The backbone row name of a protocol's probes: the backbone's own for medprobe's (and for a
    study recipe picked on validation alone); otherwise it says what the rows are."""
    if paired and protocol.name == "study":
        return f"{label} [study protocol, {SELECTED_ON_TEST}]"
    return f"{label} [{SELECTED_ON_TEST}]" if protocol.selected_on == "test" else label


def probe_protocols(probe: ProbeConfig, run_seed: int, dataset: Dataset, features: ExtractedFeatures, *,
                    score_store: ScoreStore | None = None, ray_address: str | None = None,
                    show_progress: bool = True, earlier_warnings: Sequence[str] = ()) -> ProbedBackbone:
    """Every protocol of the run on one backbone's features (see the module docstring)."""
    protocols = run_protocols(probe)
    score_store = score_store or ScoreStore(probe.scores_in_memory_mb * 2**20)
    if protocols == [Protocol("medprobe", "medprobe", "validation")] and not study_options_active(probe):
        return probe_backbone(probe, run_seed, dataset, features, score_store=score_store, ray_address=ray_address,
                              show_progress=show_progress, earlier_warnings=earlier_warnings)
    paired = probe.protocols is not None and len(protocols) > 1
    results = []
    for protocol in protocols:
        if protocol.recipe == "medprobe":
            probed = probe_backbone(probe, run_seed, dataset, features, score_store=score_store,
                                    ray_address=ray_address, show_progress=show_progress,
                                    earlier_warnings=earlier_warnings)
        else:
            probed = probe_study(probe, protocol, run_seed, dataset, features, score_store=score_store,
                                 show_progress=show_progress, paired=paired)
        results.append(dataclasses.replace(
            probed, outcomes=tuple(dataclasses.replace(o, study_labels=True) for o in probed.outcomes)))
    timings: dict[str, float] = {}
    for result in results:
        timings.update(result.timings)
    return ProbedBackbone(tuple(o for r in results for o in r.outcomes), results[0].splits,
                          tuple(w for r in results for w in r.warnings), timings)


def every_non_test_image(splits: Splits) -> Splits:
    """The splits with train and validation merged into train (in cache order) and no validation
    rows: what the study trained on."""
    merged = np.concatenate([splits.index["train"], splits.index["val"]])
    order = np.argsort(merged, kind="stable")
    labels = np.concatenate([splits.labels["train"], splits.labels["val"]])[order]
    return dataclasses.replace(splits, index={**splits.index, "train": merged[order], "val": merged[:0]},
                               labels={**splits.labels, "train": labels, "val": labels[:0]})


def probe_study(probe: ProbeConfig, protocol: Protocol, run_seed: int, dataset: Dataset,
                features: ExtractedFeatures, *, score_store: ScoreStore, show_progress: bool = True,
                paired: bool = False) -> ProbedBackbone:
    """Fit the study's recipe on every layer x (fraction, seed) and pick a layer per stack on
    ``protocol.selected_on``; one layer's features in memory at a time."""
    started = time.perf_counter()
    label, cache, layers = features.label, features.cache, features.layers
    splits = align_features(dataset, *layer_sample_ids(cache, layers))
    on_test = protocol.selected_on == "test"
    fitted_on = every_non_test_image(splits) if on_test else splits
    subsets = train_subsets(probe, run_seed, dataset, fitted_on, label)
    name = protocol_label(label, protocol, paired)
    console.print(f"{name}: the study's {protocol.recipe!r} recipe on {len(fitted_on.index['train'])} "
                  + ("non-test images (train + val), layer " + SELECTED_ON_TEST if on_test else
                     "training images, layer chosen on validation"), highlight=False, markup=False)
    scores: dict[str, list[tuple[float, float, object]]] = {}
    with progress_bar(f"{name}: {len(layers)} layer(s) x {len(subsets)} plan(s)", total=len(layers),
                      enabled=show_progress) as advance:
        for layer in layers:
            matrices = read_layer_splits(cache, layer, fitted_on.index)
            scores[layer] = [_fit_one(probe, protocol, dataset, matrices, fitted_on, subset.train_rows, subset.seed,
                                      score_store) for subset in subsets]
            advance(1)
    outcomes = _select(name, label if paired else None, protocol, layers, features.stacks, subsets, scores,
                       n_val=0 if on_test else len(splits.index["val"]), metric=probe.selection_metric)
    return ProbedBackbone(tuple(outcomes), splits, (), {f"probe[{name}]_s": round(time.perf_counter() - started, 3)})


def _fit_one(probe: ProbeConfig, protocol: Protocol, dataset: Dataset, matrices: dict[str, np.ndarray],
             splits: Splits, rows: np.ndarray, seed: int, score_store: ScoreStore) -> tuple[float, float, object]:
    """``(validation score, test score, kept test probabilities)`` of one recipe fit; the
    validation score is NaN when the validation images were trained on."""
    model = fit_recipe(protocol.recipe, matrices["train"][rows], splits.labels["train"][rows], dataset.task_type,
                       len(dataset.classes), seed=seed, device=probe.device)
    test_scores = model.predict_proba(matrices["test"])
    metric = probe.selection_metric
    val_score = (validation_score(splits.labels["val"], model.predict_proba(matrices["val"]), dataset.task_type,
                                  metric) if protocol.selected_on == "validation" else math.nan)
    test_score = validation_score(splits.labels["test"], test_scores, dataset.task_type, metric)
    return val_score, test_score, score_store.keep(test_scores)


def _select(name: str, paired_with: str | None, protocol: Protocol, layers: Sequence[str], stacks: dict[str, str],
            subsets: Sequence, scores: dict[str, list[tuple[float, float, object]]], *, n_val: int,
            metric: str) -> list[ProbeOutcome]:
    """Outcomes (fraction/seed-major, layer order) with the best layer of each stack selected on
    validation or test scores (the first of equal maxima), said on the console when on test."""
    outcomes = []
    by_test = protocol.selected_on == "test"
    for number, subset in enumerate(subsets):
        candidates = [ProbeOutcome(
            stack_display_name(name, stacks[layer]), layer, subset.fraction, subset.seed, math.nan,
            scores[layer][number][0], scores[layer][number][2], n_train=len(subset.train_rows), n_val=n_val,
            stack=stacks[layer], recipe=protocol.recipe, selected_on=protocol.selected_on,
            protocol_of=stack_display_name(paired_with, stacks[layer]) if paired_with else None)
            for layer in layers]
        for stack in dict.fromkeys(stacks[layer] for layer in layers):
            positions = [i for i, o in enumerate(candidates) if o.stack == stack]
            best_layer, _, ties = select_best({candidates[i].layer: {0.0: scores[candidates[i].layer][number][
                1 if by_test else 0]} for i in positions})
            chosen = next(i for i in positions if candidates[i].layer == best_layer)
            best = candidates[chosen]
            kept = best.test_scores.load() if isinstance(best.test_scores, SpilledScores) else best.test_scores
            tied = [layer for layer, _ in ties] if len(ties) > 1 else []
            candidates[chosen] = dataclasses.replace(best, selected=True, test_scores=kept, tied_layers=tied,
                                                     val_tie=bool(tied))
            if by_test:
                console.print(f"{best.backbone}: layer {best_layer} (fraction {subset.fraction:g}, seed "
                              f"{subset.seed}) {SELECTED_ON_TEST}: best test {metric} of {len(positions)} layers",
                              highlight=False, markup=False)
        outcomes.extend(candidates)
    return outcomes


__all__ = ["Protocol", "every_non_test_image", "probe_protocols", "probe_study", "protocol_label", "run_protocols",
           "study_options_active"]
