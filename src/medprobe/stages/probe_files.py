"""The run folder's ``probes/`` and ``operating_points.json``: the classifiers a run found, usable.

Written by the outputs stage into the staging folder, so they appear with the rest of the run or
not at all. Every probe the run saves (``probe.save``: the selected ones, or every layer's) becomes
a safetensors + JSON pair (:mod:`medprobe.probes.saved`) whose JSON says everything
``medprobe predict`` needs to feed it the same features: the backbone and its options, the layer
and stack, the pooling, the prompt, the preprocessing and the feature-cache fingerprint, plus the
thresholds of its operating points, chosen on the validation split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

import medprobe
from medprobe.config import RunConfig
from medprobe.data.dataset import Dataset
from medprobe.errors import DataError
from medprobe.io import atomic_write_json, make_dirs
from medprobe.probes.layer_sweep import stack_display_name
from medprobe.probes.saved import ProbeWeights, probe_file_stem, write_index, write_probe
from medprobe.stats.operating_points import probe_thresholds, rules_for
from medprobe.stats.outcomes import ProbeOutcome

PROBES_FOLDER = "probes"
OPERATING_POINTS_FILE = "operating_points.json"


def backbone_of(outcome: ProbeOutcome, backbones: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run.json ``backbones`` record an outcome's row belongs to (its label, per stack)."""
    for record in backbones:
        if stack_display_name(record["label"], outcome.stack) == outcome.backbone:
            return record
    raise DataError(f"no backbone record for result rows of {outcome.backbone!r}")


def probe_record(config: RunConfig, dataset: Dataset, outcome: ProbeOutcome,
                 backbone: dict[str, Any]) -> dict[str, Any]:
    """The JSON beside a probe's weights (see the module docstring)."""
    rules = rules_for(config.stats.operating_points.sensitivity, config.stats.operating_points.specificity)
    fingerprint = backbone["fingerprint"]
    return {
        "medprobe_version": medprobe.__version__, "task": config.name, "task_type": dataset.task_type,
        "classes": list(dataset.classes),
        "probability": "softmax" if dataset.task_type == "multiclass" else "sigmoid",
        "backbone_row": outcome.backbone, "stack": outcome.stack, "layer": outcome.layer,
        "backbone": {"name": backbone["name"], "label": backbone["label"], "options": backbone.get("options", {}),
                     "batch_size": backbone.get("batch_size"), "provenance": backbone.get("provenance", "")},
        "pooling": fingerprint.get("pooling", fingerprint.get("vision_pooling")) if isinstance(fingerprint, dict)
        else None,
        "prompt": backbone.get("prompt_record"),
        "preprocessing": backbone.get("preprocessing"), "max_image_size": config.data.max_image_size,
        "cache_fingerprint": {"backbone": fingerprint, "preprocessing": backbone.get("preprocessing")},
        "cache_key": backbone.get("cache_key"), "feature_dtype": backbone.get("cache_dtype"),
        "C": outcome.C, "val_score": outcome.val_score, "selection_metric": config.probe.selection_metric,
        "n_train": outcome.n_train, "n_val": outcome.n_val, "train_fraction": outcome.train_fraction,
        "seed": outcome.seed, "selected": outcome.selected, "converged": outcome.converged,
        "operating_points": probe_thresholds(outcome, dataset.task_type, dataset.classes, rules),
        "operating_points_chosen_on": "validation split (the rows the probe was selected on)",
    }


def write_probe_files(folder: Path, config: RunConfig, dataset: Dataset, outcomes: Sequence[ProbeOutcome],
                      backbones: Sequence[dict[str, Any]], operating_points: list[dict[str, Any]]) -> None:
    """``probes/`` (one pair per saved probe of ``outcomes``, and ``index.json``) and
    ``operating_points.json`` (``operating_points``: the statistics' rows)."""
    target = folder / PROBES_FOLDER
    make_dirs(target)
    records = []
    # the study's recipes (probe.recipe / probe.protocols) only reproduce its numbers: not saved
    outcomes = [outcome for outcome in outcomes if outcome.recipe == "medprobe"]
    for outcome in outcomes:
        if outcome.weights is None or not (outcome.selected or config.probe.save == "all"):
            continue
        weights = ProbeWeights(*(np.asarray(array) for array in (outcome.weights.coef, outcome.weights.intercept,
                                                                   outcome.weights.mean, outcome.weights.scale)))
        record = probe_record(config, dataset, outcome, backbone_of(outcome, backbones))
        stem = probe_file_stem(outcome.backbone, outcome.layer, outcome.train_fraction, outcome.seed)
        records.append(write_probe(target, stem, weights, record))
    missing = [o for o in outcomes if o.selected and o.weights is None]
    if missing:  # the probe stage keeps the arrays of every selected probe; anything else is a bug
        raise DataError(f"the fitted arrays of selected probes were not kept: {[o.backbone for o in missing]}")
    write_index(target, records)
    rules = rules_for(config.stats.operating_points.sensitivity, config.stats.operating_points.specificity)
    atomic_write_json(folder / OPERATING_POINTS_FILE, {
        "operating_points": [rule.name for rule in rules],
        "chosen_on": "validation split", "reported_on": "test split",
        "decision": "positive when the probability is >= the threshold",
        "rows": operating_points,
    })


__all__ = ["OPERATING_POINTS_FILE", "PROBES_FOLDER", "backbone_of", "probe_record", "write_probe_files"]
