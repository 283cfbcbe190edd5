"""Reading a complete cache entry for the probes: the rows of a layer, its width, its sample order.

Why these read the ``COMPLETE`` marker instead of the chunks: the marker of a finished layer
records its row count, width and skipped samples, so the probe stage can size its matrices, line
up the rows with the dataset and announce the grid without reading a single feature; the
features themselves are then read once, chunk by chunk (:func:`read_layer_splits`).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from medprobe.data.dataset import SPLITS
from medprobe.errors import CacheError
from medprobe.features.cache import FeatureCache


def complete_marker(cache: FeatureCache, layer: str) -> dict[str, Any]:
    """The ``COMPLETE`` marker of a layer (raising the cache's own "incomplete" error if absent)."""
    if not cache.is_complete(layer):
        cache.load(layer)  # raises the cache's own "incomplete: resume the extraction" error
    return json.loads((cache.chunk_path(layer, 0).parent / "COMPLETE").read_text())


def layer_width(cache: FeatureCache, layer: str) -> int:
    """Feature width of a complete layer, from its marker (no features read)."""
    return int(complete_marker(cache, layer)["dim"])


def layer_sample_ids(cache: FeatureCache, layers: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The cache's row order (sample ids that were read) and the skipped samples, without reading any
    features; every layer must have skipped the same samples, or their rows would not line up."""
    skipped = cache.skipped(layers[0])
    for layer in layers:
        marker = complete_marker(cache, layer)
        if marker["skipped"] != skipped:
            raise CacheError(f"{cache.path}: layers {layers[0]!r} and {layer!r} skipped different samples; "
                             "delete the cache entry and extract again")
    left_out = {item["sample_id"] for item in skipped}
    return [sample_id for sample_id in cache.sample_ids if sample_id not in left_out], skipped


def read_layer_splits(cache: FeatureCache, layer: str, index: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One complete layer as float32 ``{split: (n_split, dim)}`` matrices, read chunk by chunk.

    ``index[split]`` are row positions in the cache's (post-skip) sample order, as
    :func:`medprobe.stages.data.align_features` gives them. Rows go straight from each float16/32
    chunk into their split's matrix, so the whole layer is never held twice; the values are exactly
    ``cache.load(layer)[1][index[split]]``.
    """
    marker = complete_marker(cache, layer)
    n_rows, dim = int(marker["n_samples"]), int(marker["dim"])
    destination_split = np.full(n_rows, -1, dtype=np.int64)
    destination_row = np.zeros(n_rows, dtype=np.int64)
    for number, split in enumerate(SPLITS):
        destination_split[index[split]] = number
        destination_row[index[split]] = np.arange(len(index[split]))
    out = {split: np.empty((len(index[split]), dim), dtype=np.float32) for split in SPLITS}
    start = 0
    for _, block in cache.iter_chunks(layer):  # each chunk checked against its checksum first
        if not len(block):  # every image of the chunk was skipped
            continue
        stop = start + len(block)
        if stop > n_rows:
            raise CacheError(f"layer {layer!r} of {cache.path}: chunks hold more rows than its COMPLETE marker says")
        for number, split in enumerate(SPLITS):
            here = destination_split[start:stop] == number
            if here.any():
                out[split][destination_row[start:stop][here]] = block[here]
        start = stop
    if start != n_rows:
        raise CacheError(f"layer {layer!r} of {cache.path}: chunks hold {start} rows, its COMPLETE marker {n_rows}")
    return out


__all__ = ["complete_marker", "layer_sample_ids", "layer_width", "read_layer_splits"]
