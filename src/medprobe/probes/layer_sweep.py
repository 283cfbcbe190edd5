"""The probe sweep of one backbone: every layer x (train fraction, seed), fitted one layer at a time.

Why layer by layer: a layer's features are the big object (81 hidden states x 8,192 dims x 100k
images is ~265 GB in float32), while what selection and scoring need from a fitted layer is tiny
(a validation score per C and the test probabilities). So :func:`probe_layers` reads one layer
straight into its train / val / test matrices (:func:`medprobe.features.reader.read_layer_splits`),
fits it for every :class:`TrainSubset`, returns a :class:`LayerFit` per subset and lets the
features go; the layer is chosen afterwards from the scores alone. Peak memory is one layer's
features (float32) plus one cache chunk and the solver's working copy of one training subset,
whatever the number of layers, fractions and seeds.

``probe.layers_per_pass: k`` reads k layers at a time and fits them in one solver pass per subset
(:meth:`~medprobe.probes.logistic.LinearProbe.fit_layers_path`): on a GPU the solver's
per-iteration cost is then paid once for k layers; memory holds k layers' features.

:func:`probe_layers` is a pure function of its arguments (the cache path, the split positions,
the subsets and :class:`ProbeSettings`), which is what lets the Ray engine run it on any node and
still give the local engine's numbers bit for bit (see :mod:`medprobe.probes.ray_engine`).

Stacks: a vision-language model has two stacks of layers -- its vision encoder and its language
model -- as its backbone declares (:meth:`medprobe.models.base.Backbone.layer_stacks`). Their
layers are never compared with each other when choosing the best layer: each stack gets its own
selected layer (see :func:`stack_display_name`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from medprobe.errors import ConvergenceWarning, DataError
from medprobe.features.cache import FeatureCache
from medprobe.features.reader import read_layer_splits
from medprobe.probes.saved import ProbeWeights
from medprobe.probes.selection import select_best, select_probes

#: below these validation sizes the selected layer and C are mostly noise; the run says so
MIN_VAL_SAMPLES = 30
MIN_VAL_PER_CLASS = 5


@dataclass(frozen=True)
class TrainSubset:
    """One (train fraction, seed) of the sweep and the train-split rows it uses (and the val-split
    rows it is selected on; ``None``: the whole validation split)."""

    fraction: float
    seed: int
    train_rows: np.ndarray  # positions into the train split
    val_rows: np.ndarray | None = None  # positions into the val split


@dataclass(frozen=True)
class ProbeSettings:
    """Everything :func:`select_probe` needs besides the data (picklable, for the Ray engine)."""

    task_type: str
    n_classes: int
    Cs: tuple[float, ...]
    metric: str
    max_iter: int
    device: str
    #: names of the heads (classes or findings), so a head that does not converge is named
    head_names: tuple[str, ...] | None = None
    #: layers fitted together in one solver pass (``probe.layers_per_pass``)
    layers_per_pass: int = 1


@dataclass
class LayerFit:
    """What is kept of one layer fitted on one subset: enough to select and to score, no features."""

    layer: str
    fraction: float
    seed: int
    C: float
    val_score: float
    converged: bool
    test_scores: np.ndarray
    #: Cs (ascending) whose validation score ties the chosen one's (the chosen C included)
    tied_Cs: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0
    #: heads of the chosen C that did not meet tol (comma-separated names; empty when all did)
    unconverged: str = ""
    #: the chosen probe's arrays and its validation probabilities (on the rows it was selected on):
    #: what saving the probe and choosing operating points need. The probe stage drops them for
    #: layers it will not save, so memory holds them for the selected probes only
    weights: ProbeWeights | None = None
    val_scores: np.ndarray | None = None


def stack_display_name(label: str, stack: str) -> str:
    """The backbone name result rows carry: vision-encoder rows are their own backbone row."""
    return f"{label} (vision)" if stack == "vision" else label


def validation_size_warning(labels: np.ndarray, task_type: str, classes: Sequence[str],
                            option: str = "") -> str | None:
    """A warning text when the validation split is too small to choose a layer and C reliably;
    ``option`` is the run-file option that sizes it (:attr:`Dataset.validation_option`), named as
    the way out, since advice naming an option that does not apply would do nothing."""
    n = len(labels)
    if task_type == "multilabel":
        per_class = labels.sum(axis=0)
    else:
        per_class = np.bincount(labels, minlength=len(classes))
    scarce = [f"{name} ({int(count)})" for name, count in zip(classes, per_class) if count < MIN_VAL_PER_CLASS]
    problems = []
    if n < MIN_VAL_SAMPLES:
        problems.append(f"only {n} samples (< {MIN_VAL_SAMPLES})")
    if scarce:
        what = "positives" if task_type == "multilabel" else "samples"
        problems.append(f"fewer than {MIN_VAL_PER_CLASS} {what} for {', '.join(scarce)}")
    if not problems:
        return None
    remedy = (f"enlarge it with {option}" if option else
              "the data set brings its own validation split: add images to it if you can")
    return (f"the validation split has {'; '.join(problems)}: the chosen layer and C rest on very few samples "
            f"and may be noise; {remedy}")


def _rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]`` without a copy when ``rows`` is every row in order (the full fraction)."""
    if len(rows) == len(matrix) and np.array_equal(rows, np.arange(len(matrix))):
        return matrix
    return matrix[rows]


def fit_subsets(features: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                subsets: Sequence[TrainSubset], settings: ProbeSettings) -> dict[str, list[LayerFit]]:
    """Fit the probes of one or more layers (C chosen on val per layer) for every subset; keep val
    scores and test probabilities. ``features`` is ``{layer: {split: matrix}}``; several layers
    are fitted in one solver pass per subset (:func:`~medprobe.probes.selection.select_probes`)."""
    layers = list(features)
    fits: dict[str, list[LayerFit]] = {layer: [] for layer in layers}
    for subset in subsets:
        started = time.perf_counter()
        X_train = [_rows(features[layer]["train"], subset.train_rows) for layer in layers]
        val_rows = np.arange(len(labels["val"])) if subset.val_rows is None else subset.val_rows
        X_val = [_rows(features[layer]["val"], val_rows) for layer in layers]
        with warnings.catch_warnings():
            # non-convergence at the extreme Cs of the grid is expected; it is recorded per row in
            # results.json ("converged") instead of flooding the terminal
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                selected = select_probes(
                    X_train, labels["train"][subset.train_rows], X_val, labels["val"][val_rows], settings.task_type,
                    Cs=list(settings.Cs), metric=settings.metric, max_iter=settings.max_iter, device=settings.device,
                    n_classes=settings.n_classes,
                    **({"head_names": list(settings.head_names)} if settings.head_names else {}),
                )
            except DataError as error:
                where = f"layer {layers[0]!r}" if len(layers) == 1 else f"layers {layers}"
                raise DataError(f"{where}, train fraction {subset.fraction}, seed {subset.seed}: {error}") from error
        del X_train, X_val
        seconds = (time.perf_counter() - started) / len(layers)
        for layer, (probe, table) in zip(layers, selected):
            chosen = table[table["selected"]].iloc[0]
            _, _, ties = select_best({layer: dict(zip(table["C"], table["val_score"]))})
            tied = [float(C) for _, C in ties]
            fits[layer].append(LayerFit(layer=layer, fraction=subset.fraction, seed=subset.seed, C=float(probe.C),
                                        val_score=float(chosen["val_score"]), converged=bool(chosen["converged"]),
                                        test_scores=probe.predict_proba(features[layer]["test"]), tied_Cs=tied,
                                        fit_seconds=seconds, unconverged=str(chosen.get("unconverged", "") or ""),
                                        weights=ProbeWeights.of(probe),
                                        val_scores=probe.predict_proba(_rows(features[layer]["val"], val_rows))))
    return fits


def probe_layers(cache_path: str | Path, layers: Sequence[str], index: dict[str, np.ndarray],
                 labels: dict[str, np.ndarray], subsets: Sequence[TrainSubset],
                 settings: ProbeSettings) -> dict[str, list[LayerFit]]:
    """Read a pass of layers from the cache and fit them for every subset (the unit of work of both
    engines): ``{layer: [LayerFit per subset]}``. One layer per pass unless ``probe.layers_per_pass``
    asks for more -- memory then holds that many layers' features."""
    cache = FeatureCache(Path(cache_path))
    features = {layer: read_layer_splits(cache, layer, index) for layer in layers}
    return fit_subsets(features, labels, subsets, settings)


def layer_passes(layers: Sequence[str], layers_per_pass: int) -> list[list[str]]:
    """The layers in passes of at most ``layers_per_pass``, in order."""
    return [list(layers[start:start + layers_per_pass]) for start in range(0, len(layers), layers_per_pass)]


__all__ = [
    "LayerFit", "ProbeSettings", "TrainSubset", "fit_subsets", "layer_passes", "probe_layers", "stack_display_name",
    "validation_size_warning",
]
