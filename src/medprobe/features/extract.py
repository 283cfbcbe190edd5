"""Fill the feature cache: stream images chunk by chunk through a backbone.

Memory stays flat in the number of images: at most two chunks of images (the one being computed
and the one being prefetched by a reader thread) and one chunk of activations live at a time.
Only chunks/layers missing from the cache are computed, so a second run costs nothing and a
crashed run resumes where it stopped.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.errors import DataError, ImageReadError
from medprobe.features.cache import DTYPES, BadChunksError, FeatureCache, entry_path
from medprobe.models.base import Backbone
from medprobe.progress import console, format_duration, progress_bar

OnError = Literal["raise", "skip"]


@dataclass
class ChunkImages:
    """The readable images of one chunk plus the samples that could not be read."""

    sample_ids: list[str]
    images: list[np.ndarray]
    skipped: list[dict[str, str]] = field(default_factory=list)


def cache_fingerprint(backbone: Backbone, dataset: Dataset) -> dict[str, Any]:
    """What the cache key hashes besides the sample ids: the backbone and the preprocessing."""
    preprocessing = dataset.preprocessing
    if not preprocessing:
        from medprobe.data.images import preprocessing_fingerprint

        preprocessing = preprocessing_fingerprint()
    return {"backbone": backbone.fingerprint(), "preprocessing": preprocessing}


def read_chunk(dataset: Dataset, rows: pd.DataFrame, on_error: OnError) -> ChunkImages:
    """Read the images of ``rows``; a bad image stops the run or is recorded, never dropped silently."""
    chunk = ChunkImages([], [])
    for _, row in rows.iterrows():
        sample_id = str(row["sample_id"])
        try:
            image = dataset.read_image(row)
        except ImageReadError as error:
            if on_error == "raise":
                raise DataError(
                    f"sample {sample_id!r} ({error.path or row['source']}): {error}. "
                    "Fix or remove the file, or set `on_error: skip` to skip and report bad images."
                ) from error
            chunk.skipped.append({"sample_id": sample_id, "source": str(row["source"]), "error": str(error)})
            continue
        chunk.sample_ids.append(sample_id)
        chunk.images.append(image)
    return chunk


def compute_chunk(
    backbone: Backbone, chunk: ChunkImages, layers: Sequence[str], batch_size: int,
    after_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Activations of one chunk's images, in fixed batches (a pure function of the chunk, which is
    what makes resumed caches bit-identical). ``after_batch(n_images)`` is called after each batch
    (the extraction times its first one for the up-front estimate)."""
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(chunk.images), batch_size):
        batch = chunk.images[start : start + batch_size]
        out = backbone.extract(batch, list(layers))
        for layer in layers:
            parts[layer].append(np.asarray(out[layer], dtype=np.float32))
        if after_batch is not None:
            after_batch(len(batch))
    return {
        layer: np.concatenate(arrays) if arrays else np.zeros((0, 0), np.float32)
        for layer, arrays in parts.items()
    }


def store_chunk(cache: FeatureCache, index: int, layers: Sequence[str], chunk: ChunkImages,
                features: dict[str, np.ndarray]) -> None:
    """Write one chunk's features of every layer to the cache (an all-skipped chunk as an empty array)."""
    for layer in layers:
        array = features[layer]
        if not chunk.sample_ids:  # every image of the chunk was skipped: keep the layer's width
            array = np.zeros((0, 0), np.float32)
        cache.write_chunk(layer, index, chunk.sample_ids, array, chunk.skipped)


def open_cache(backbone: Backbone, dataset: Dataset, cache_root: str | Path, chunk_size: int,
               dtype: str) -> FeatureCache:
    """The cache entry of this backbone on this data set in storage ``dtype`` (created if new):
    entries are per dtype, so a float32 request never reads float16 features."""
    return FeatureCache.open_or_create(
        cache_root, backbone.name, cache_fingerprint(backbone, dataset), dataset.sample_ids,
        chunk_size=chunk_size, dtype=dtype,
    )


def existing_cache(backbone: Backbone, dataset: Dataset, cache_root: str | Path, dtype: str) -> FeatureCache | None:
    """The entry for this setting and dtype if it exists; creates nothing (for probing from the
    cache only, which must not leave empty entries behind)."""
    path = entry_path(cache_root, backbone.name, cache_fingerprint(backbone, dataset), dataset.sample_ids, dtype)
    return FeatureCache(path) if (path / "meta.json").is_file() else None


def other_dtype_entries(backbone: Backbone, dataset: Dataset, cache_root: str | Path, dtype: str) -> list[Path]:
    """Entries of the same setting stored in another dtype: named in errors, never read instead."""
    fingerprint = cache_fingerprint(backbone, dataset)
    return [path for other in sorted(DTYPES) if other != dtype
            if (path := entry_path(cache_root, backbone.name, fingerprint, dataset.sample_ids, other)).is_dir()]


def extract_features(
    backbone: Backbone,
    dataset: Dataset,
    layers: Sequence[str] | str,
    cache_root: str | Path,
    *,
    batch_size: int | None = None,
    chunk_size: int = 256,
    dtype: str = "float16",
    on_error: OnError = "raise",
    show_progress: bool = True,
    lock_wait_s: float = 0.0,
) -> FeatureCache:
    """Make sure ``layers`` of ``backbone`` on every sample of ``dataset`` are in the cache.
    ``lock_wait_s``: how long to wait for another process writing the same cache entry.

    Chunks that fail their checksum when a layer is completed are moved aside, reported (a
    :class:`CorruptChunkWarning` naming each file) and recomputed in the same call. Returns the
    cache entry; read features with ``cache.load(layer)``.
    """
    layers = backbone.resolve_layers(layers if isinstance(layers, str) else list(layers))
    cache = open_cache(backbone, dataset, cache_root, chunk_size, dtype)
    batch_size = batch_size or backbone.default_batch_size
    _compute_missing(backbone, dataset, cache, layers, batch_size, on_error, show_progress, lock_wait_s)
    try:
        _mark_complete(cache, layers)
    except BadChunksError as error:
        warnings.warn(f"{error}\nRecomputing them now.", CorruptChunkWarning, stacklevel=2)
        _compute_missing(backbone, dataset, cache, layers, batch_size, on_error, show_progress, lock_wait_s)
        _mark_complete(cache, layers)  # chunks corrupted again right after writing: a disk problem, raised
    return cache


class CorruptChunkWarning(UserWarning):
    """A cached chunk failed its checksum; it was moved aside and is being recomputed."""


class FirstBatchEstimate:
    """Says, right after the first batch, how long the whole extraction will take at that batch's rate.

    Why the first batch and not the first chunk: a chunk (256 images) takes a minute on a ViT-S on
    a CPU, and much longer on a large VLM, so an estimate after it comes late; a batch (the
    backbone's batch size, e.g. 16 images) is the smallest unit the backbone computes. It is timed as
    part of the normal extraction, so nothing is computed twice. The first batch carries the
    backbone's warm-up, so the estimate errs on the long side; the progress bar (or, piped, the
    periodic lines) refines it.
    """

    def __init__(self, name: str, n_images: int, enabled: bool) -> None:
        self.name, self.n_images, self.enabled = name, n_images, enabled
        self.started: float | None = None

    def start(self) -> None:
        """Start the clock (just before the first chunk is computed: its images are already read)."""
        self.started = time.perf_counter()

    def __call__(self, batch_images: int) -> None:
        """After a batch: print the estimate once, if there is more than this batch to do."""
        if self.started is None or not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.started = None  # once per extraction
        if batch_images and self.n_images > batch_images:
            rate = batch_images / elapsed
            shown = f"{rate:.0f}" if rate >= 100 else f"{rate:.2g}" if rate < 1 else f"{rate:.1f}"
            console.print(f"{self.name}: ~{self.n_images} images at {shown} img/s "
                          f"≈ {format_duration(self.n_images / rate)} to extract", highlight=False)


def _mark_complete(cache: FeatureCache, layers: Sequence[str]) -> None:
    for layer in layers:
        if not cache.is_complete(layer):
            cache.mark_complete(layer)


def _compute_missing(backbone: Backbone, dataset: Dataset, cache: FeatureCache, layers: Sequence[str],
                     batch_size: int, on_error: OnError, show_progress: bool, lock_wait_s: float = 0.0) -> None:
    """Compute and store every (chunk, layer) file still absent, streaming chunk by chunk;
    ``lock_wait_s``: how long to wait for another process writing the same entry."""
    if not cache.missing(layers):
        return
    plans = {plan.index: plan for plan in cache.chunks()}
    with cache.writer_lock(lock_wait_s):
        todo = cache.missing(layers)  # another process may have finished some meanwhile
        if not todo:
            return
        order = sorted(todo)
        n_images = sum(plans[i].stop - plans[i].start for i in order)
        estimate = FirstBatchEstimate(backbone.name, n_images, show_progress)
        # the first batch's estimate replaces the bar's own after-the-first-chunk one
        with ThreadPoolExecutor(max_workers=1) as reader, progress_bar(
            f"{backbone.name}: extracting {len(layers)} layer(s)", total=n_images, enabled=show_progress,
            unit="images", estimate=False,
        ) as advance:
            def submit(i: int):
                plan = plans[i]
                return reader.submit(read_chunk, dataset, dataset.samples.iloc[plan.start:plan.stop], on_error)

            pending = submit(order[0])
            for position, index in enumerate(order):
                chunk = pending.result()
                if position + 1 < len(order):
                    pending = submit(order[position + 1])
                if position == 0:
                    estimate.start()
                features = compute_chunk(backbone, chunk, todo[index], batch_size,
                                         after_batch=estimate if position == 0 else None)
                store_chunk(cache, index, todo[index], chunk, features)
                advance(plans[index].stop - plans[index].start)
