"""``medprobe plan`` for backbones that are not Hugging Face models (pixels, ONNX networks).

There is no config.json to plan memory from, but a plan should still say what it can rather than
print nothing: the layers a run will probe and their widths, an extraction time from one timed
image, the feature cache's size, and the probe grid's size and CPU time
(:func:`~medprobe.plan.probe_time.grid_estimate`, the estimate the run itself announces).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprobe.plan.probe_time import format_duration, grid_estimate, measured_flops, n_outputs


@dataclass(frozen=True)
class _Subset:
    """The part of a probe plan the time estimate reads: how many training rows it fits on."""

    train_rows: range


def _train_sizes(config: Any, n_train: int) -> list[_Subset]:
    """Training rows per (fraction, seed) as the probe stage draws them (sizes only)."""
    subsets = []
    for fraction in config.probe.train_fractions:
        seeds = config.probe.seeds if fraction < 1 else [config.seed]
        subsets += [_Subset(range(max(1, round(fraction * n_train)))) for _ in seeds]
    return subsets


def dataset_or_none(config: Any) -> Any | None:
    """The run's data set as its adapter builds it, or None when it cannot be loaded here."""
    from medprobe.data.loaders import load_dataset
    from medprobe.errors import MedprobeError

    try:
        return load_dataset(config.data)
    except (MedprobeError, OSError):
        return None


def plan_other_backbone(config: Any, spec: Any, dataset: Any | None) -> list[str]:
    """Lines for one non-Hugging-Face backbone of a run: it is built (an ONNX graph is read) and
    run on one blank image, so the layer widths and the time per image are measured, not guessed."""
    from medprobe.models.registry import create_backbone

    label = spec.display_name
    backbone = create_backbone(spec.name, **dict(spec.options))
    try:
        layers = backbone.resolve_layers(spec.layers)
        blank = np.zeros((224, 224, 3), np.float32)
        backbone.extract([blank], layers)  # warm-up: sessions and buffers
        started = time.perf_counter()
        features = backbone.extract([blank], layers)
        per_image = time.perf_counter() - started
        precision = backbone.compute_precision()
    finally:
        backbone.close()
    widths = {layer: int(np.prod(np.asarray(features[layer]).shape[1:])) for layer in layers}
    shown = ", ".join(f"{layer} ({widths[layer]})" for layer in layers[:8]) + (" ..." if len(layers) > 8 else "")
    lines = [f"{label}: not a Hugging Face model, so no memory plan from config.json; what can be said:",
             f"  {len(layers)} layer(s) probed, width: {shown}"]
    if precision is not None:
        lines.append(f"  precision: {precision.value} ({precision.reason})")
    if dataset is None:
        lines.append("  the run's data could not be loaded here, so no time or size estimate")
        return lines
    n_images = len(dataset.samples)
    bytes_per_value = 2 if config.extraction.dtype == "float16" else 4
    cache_bytes = n_images * sum(widths.values()) * bytes_per_value
    lines.append(f"  extraction: {n_images} images; one image took {format_duration(per_image)} here, so roughly "
                 f"{format_duration(per_image * n_images)} (measured one image at a time: batches are faster); "
                 f"feature cache {cache_bytes / 2**20:.1f} MiB as {config.extraction.dtype}")
    n_train = int((dataset.samples["split"] == "train").sum())
    subsets = _train_sizes(config, n_train)
    outputs, flops = n_outputs(dataset.task_type, len(dataset.classes)), measured_flops()
    seconds = sum(grid_estimate(1, width, outputs, subsets, len(config.probe.Cs), flops)["estimated_seconds"]
                  for width in widths.values())
    n_plans, n_Cs = len(subsets), len(config.probe.Cs)
    lines.append(f"  probes: {len(layers)} layer(s) x {n_plans} (fraction, seed) plan(s) x {n_Cs} C = "
                 f"{len(layers) * n_plans * n_Cs} fits on up to {n_train} training images; roughly "
                 f"{format_duration(seconds)} of single-process CPU time")
    return lines


__all__ = ["dataset_or_none", "plan_other_backbone"]
