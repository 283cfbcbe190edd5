"""Probe stage: fit a probe for every layer x (train fraction, seed) of one backbone and select,
per stack, the layer with the best validation score.

Layer by layer (:mod:`medprobe.probes.layer_sweep`): one layer's features in memory at a time
(``probe.layers_per_pass`` of them), whatever the number of layers, fractions and seeds. Test
probabilities of the layers not selected may wait on disk (:class:`~medprobe.probes.score_store.ScoreStore`);
those of selected layers are read back, since they are compared and written many times.
The result is frozen: a selection, once made, is what every row reports.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from medprobe.config import ProbeConfig
from medprobe.data.dataset import SPLITS, Dataset
from medprobe.errors import DataError
from medprobe.features.reader import layer_sample_ids, layer_width
from medprobe.plan import format_duration, grid_estimate, measured_flops, n_outputs
from medprobe.probes.layer_sweep import (
    LayerFit,
    ProbeSettings,
    TrainSubset,
    layer_passes,
    probe_layers,
    stack_display_name,
    validation_size_warning,
)
from medprobe.probes.selection import select_best
from medprobe.probes.score_store import ScoreStore, SpilledScores
from medprobe.progress import console, progress_bar
from medprobe.stages.data import Splits, align_features, check_train_classes, train_subset
from medprobe.stages.extract import ExtractedFeatures
from medprobe.stats.outcomes import ProbeOutcome


@dataclass(frozen=True)
class ProbedBackbone:
    """The probes of one backbone: outcomes in (fraction, seed)-major, layer order, the splits
    they were fitted and scored on, warnings said on the console, and how long it took."""

    outcomes: tuple[ProbeOutcome, ...]
    splits: Splits
    warnings: tuple[str, ...]
    #: ``probe_estimate[<label>]_s`` (the time announced) and ``probe[<label>]_s`` (the time taken)
    timings: dict[str, float]


def warn(message: str) -> None:
    """A warning the user must see (also with --quiet); the stage also keeps it for run.json."""
    console.print(f"[yellow]warning:[/] {message}", highlight=False)


def train_subsets(probe: ProbeConfig, run_seed: int, dataset: Dataset, splits: Splits, label: str) -> list[TrainSubset]:
    """Every (train fraction, seed) of the sweep with its rows; the full fraction has one seed, the run's."""
    subsets = []
    for fraction in probe.train_fractions:
        for seed in (probe.seeds if fraction < 1 else [run_seed]):
            train_rows = train_subset(splits, fraction, seed, sampling=probe.train_sampling)
            check_train_classes(dataset, splits.labels["train"][train_rows],
                                f"{label}, train fraction {fraction:g}, seed {seed}")
            val_rows = (train_subset(splits, fraction, seed, "val", probe.train_sampling)
                        if probe.val_follows_fraction else None)
            subsets.append(TrainSubset(fraction, seed, train_rows, val_rows))
    return subsets


def probe_backbone(probe: ProbeConfig, run_seed: int, dataset: Dataset, features: ExtractedFeatures, *,
                   score_store: ScoreStore | None = None, ray_address: str | None = None, show_progress: bool = True,
                   earlier_warnings: Sequence[str] = ()) -> ProbedBackbone:
    """Fit and score a probe for every layer x fraction x seed of ``features``; select per stack.

    ``score_store`` is shared by every backbone of a run (its memory budget is the run's); a warning
    already in ``earlier_warnings`` (another backbone's) is not said twice."""
    started = time.perf_counter()
    label, cache, layers = features.label, features.cache, features.layers
    score_store = score_store or ScoreStore(probe.scores_in_memory_mb * 2**20)
    splits = align_features(dataset, *layer_sample_ids(cache, layers))
    subsets = train_subsets(probe, run_seed, dataset, splits, label)
    settings = ProbeSettings(dataset.task_type, len(dataset.classes), tuple(probe.Cs), probe.selection_metric,
                             probe.max_iter, probe.device,
                             tuple(dataset.classes) if dataset.task_type != "binary" else None, probe.layers_per_pass)
    estimate = announce_grid(probe, label, dataset, features, subsets)
    warnings = []
    small = validation_size_warning(splits.labels["val"], dataset.task_type, dataset.classes,
                                    dataset.validation_option)
    if small and small not in earlier_warnings:
        warn(small)
        warnings.append(small)
    labels = {split: splits.labels[split] for split in SPLITS}
    keeper = FitKeeper(layers, features.stacks, score_store, save_all=probe.save == "all")
    if probe.engine == "ray":
        from medprobe.probes.ray_engine import probe_layers_ray

        fits = probe_layers_ray(
            cache.path, layers, splits.index, labels, subsets, settings, num_workers=probe.num_workers,
            num_cpus_per_worker=probe.num_cpus_per_worker, num_gpus_per_worker=probe.num_gpus_per_worker,
            ray_address=ray_address, description=f"{label}: probing on Ray, layers", show_progress=show_progress,
            keep=keeper,
        )
    else:
        fits = _probe_locally(label, features, splits, subsets, settings, keeper, show_progress)
    val_labels = [labels["val"] if subset.val_rows is None else labels["val"][subset.val_rows] for subset in subsets]
    outcomes, ties = select_layers(label, layers, features.stacks, subsets, fits, len(splits.index["val"]),
                                   val_labels=val_labels)
    for message in ties:
        warn(message)
    timings = {f"probe_estimate[{label}]_s": round(estimate, 1),
               f"probe[{label}]_s": round(time.perf_counter() - started, 3)}
    return ProbedBackbone(tuple(outcomes), splits, tuple(warnings + ties), timings)


class FitKeeper:
    """Applied to every fit as it arrives (either engine): test scores go to the run's
    :class:`ScoreStore`; the fitted arrays and validation scores are kept only for the fits the run
    will save -- with ``probe.save: selected``, the best layer so far of each (fraction, seed,
    stack), by the rule :func:`select_layers` applies (highest validation score, the shallowest of
    equal ones), so memory holds one probe per selection whatever the number of layers; with
    ``all``, every fit's, through the score store (spilled to disk beyond its budget)."""

    def __init__(self, layers: Sequence[str], stacks: dict[str, str], score_store: ScoreStore, *,
                 save_all: bool) -> None:
        self.position = {layer: number for number, layer in enumerate(layers)}
        self.stacks, self.score_store, self.save_all = stacks, score_store, save_all
        self.best: dict[tuple[float, int, str], LayerFit] = {}

    def __call__(self, fit: LayerFit) -> LayerFit:
        fit = dataclasses.replace(fit, test_scores=self.score_store.keep(fit.test_scores))
        if self.save_all:
            assert fit.weights is not None and fit.val_scores is not None
            return dataclasses.replace(fit, val_scores=self.score_store.keep(fit.val_scores),
                                       weights=type(fit.weights)(*(self.score_store.keep(getattr(fit.weights, f.name))
                                                                   for f in dataclasses.fields(fit.weights))))
        where = (fit.fraction, fit.seed, self.stacks[fit.layer])
        best = self.best.get(where)
        if best is not None and not (fit.val_score > best.val_score or (
                fit.val_score == best.val_score and self.position[fit.layer] < self.position[best.layer])):
            return dataclasses.replace(fit, weights=None, val_scores=None)
        if best is not None:  # no longer the best of its selection: let its arrays go
            best.weights = best.val_scores = None
        self.best[where] = fit
        return fit


def _probe_locally(label: str, features: ExtractedFeatures, splits: Splits, subsets: list[TrainSubset],
                   settings: ProbeSettings, keeper: FitKeeper, show_progress: bool) -> dict[str, list[LayerFit]]:
    """The local engine: passes of ``layers_per_pass`` layers, in this process."""
    labels = {split: splits.labels[split] for split in SPLITS}
    layers, fits = features.layers, {}
    with progress_bar(f"{label}: probing {len(layers)} layer(s) x {len(subsets)} plan(s), layers",
                      total=len(layers), enabled=show_progress) as advance:
        for members in layer_passes(layers, settings.layers_per_pass):
            try:
                fitted = probe_layers(features.cache.path, members, splits.index, labels, subsets, settings)
            except DataError as error:  # the probe names the problem; say which fit it was
                raise DataError(f"{label}: {error}") from None
            for layer in members:
                fits[layer] = [keeper(fit) for fit in fitted[layer]]
            advance(len(members))
    return fits


def announce_grid(probe: ProbeConfig, label: str, dataset: Dataset, features: ExtractedFeatures,
                  subsets: list[TrainSubset]) -> float:
    """Print the size of the probe grid and a rough time before fitting (``medprobe plan`` style);
    returns the estimated seconds."""
    dim = layer_width(features.cache, features.layers[0])
    estimate = grid_estimate(len(features.layers), dim, n_outputs(dataset.task_type, len(dataset.classes)), subsets,
                             len(probe.Cs), measured_flops())
    console.print(
        f"{label}: {estimate['layers']} layer(s) x {estimate['plans']} (fraction, seed) plan(s) x "
        f"{estimate['Cs']} C = {estimate['fits']} probe fits ({estimate['paths']} C paths) on {dim}-dim "
        f"features, engine {probe.engine}; roughly {format_duration(estimate['estimated_seconds'])} of "
        "single-process CPU time", highlight=False)
    return estimate["estimated_seconds"]


def select_layers(label: str, layers: Sequence[str], stacks: dict[str, str], subsets: Sequence[TrainSubset],
                  fits: dict[str, list[Any]], n_val_split: int, *,
                  val_labels: Sequence[np.ndarray] | None = None) -> tuple[list[ProbeOutcome], list[str]]:
    """Turn the fits into outcomes (fraction/seed-major, layer order) with the best layer of each
    stack on validation selected (the first of equal maxima); validation ties become a warning
    instead of being hidden. Outcomes carry the weights and validation scores the fits kept
    (:class:`FitKeeper`) and ``val_labels[subset]``, the labels of the rows they were selected on."""
    outcomes, ties = [], {}
    for number, subset in enumerate(subsets):
        candidates = []
        for layer in layers:
            fit = fits[layer][number]
            candidates.append(ProbeOutcome(
                stack_display_name(label, stacks[layer]), layer, subset.fraction, subset.seed, fit.C, fit.val_score,
                fit.test_scores, converged=fit.converged, unconverged=fit.unconverged, stack=stacks[layer],
                tied_Cs=fit.tied_Cs if len(fit.tied_Cs) > 1 else [], n_train=len(subset.train_rows),
                n_val=n_val_split if subset.val_rows is None else len(subset.val_rows),
                weights=getattr(fit, "weights", None), val_scores=getattr(fit, "val_scores", None),
                val_labels=None if val_labels is None else val_labels[number]))
        for stack in dict.fromkeys(stacks[layer] for layer in layers):
            positions = [i for i, outcome in enumerate(candidates) if outcome.stack == stack]
            best_layer, _, ties_here = select_best({candidates[i].layer: {candidates[i].C: candidates[i].val_score}
                                                    for i in positions})
            chosen = next(i for i in positions if candidates[i].layer == best_layer)
            best = candidates[chosen]
            tied = [layer for layer, _ in ties_here]
            tied_layers = tied if len(tied) > 1 else []
            scores_in_memory = best.test_scores.load() if isinstance(best.test_scores, SpilledScores) else \
                best.test_scores
            best = candidates[chosen] = dataclasses.replace(
                best, selected=True, test_scores=scores_in_memory, tied_layers=tied_layers,
                val_tie=bool(tied_layers or best.tied_Cs))
            if best.val_tie:
                what = " and ".join(([f"layers {tied}"] if best.tied_layers else [])
                                    + ([f"Cs {best.tied_Cs} of layer {best.layer}"] if best.tied_Cs else []))
                ties.setdefault(best.backbone, []).append(f"fraction {subset.fraction}, seed {subset.seed}: {what}")
        outcomes.extend(candidates)
    return outcomes, [f"{backbone}: validation ties in {len(where)} of {len(subsets)} selection(s) -- the first "
                      f"(shallowest layer, smallest C) was taken; rows carry val_tie. {'; '.join(where[:3])}"
                      + (" ..." if len(where) > 3 else "") for backbone, where in ties.items()]


__all__ = ["FitKeeper", "ProbedBackbone", "announce_grid", "probe_backbone", "select_layers", "train_subsets", "warn"]
