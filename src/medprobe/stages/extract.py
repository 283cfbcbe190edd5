"""Extract stage: fill (or, ``cached_only``, only find) the feature cache of one backbone.

The result says everything later stages need about the backbone, so none of them builds a model
again or guesses from layer names: the cache, the layers, the stack each layer is selected within
(:meth:`~medprobe.models.base.Backbone.layer_stacks`) and the run.json record of the backbone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from medprobe.config import BackboneConfig, ExtractionConfig
from medprobe.data.dataset import Dataset
from medprobe.errors import CacheError
from medprobe.features.cache import FeatureCache
from medprobe.features.extract import existing_cache, extract_features, other_dtype_entries
from medprobe.models.base import Backbone
from medprobe.models.registry import create_backbone
from medprobe.plan import check_fits
from medprobe.progress import console


@dataclass(frozen=True)
class ExtractedFeatures:
    """One backbone's features in the cache, and what the probe stage must know about them."""

    label: str
    cache: FeatureCache
    layers: list[str]
    #: ``{layer: "main" | "lm" | "vision"}`` for ``layers``, as the backbone declares it
    stacks: Mapping[str, str]
    #: the run.json ``backbones`` entry
    info: Mapping[str, Any]
    seconds: float


def extract_backbone(spec: BackboneConfig, dataset: Dataset, extraction: ExtractionConfig, cache_root: Path, *,
                     on_error: str, show_progress: bool = True, cached_only: bool = False) -> ExtractedFeatures:
    """Features of ``spec``'s layers for every sample of ``dataset``; resumes an interrupted cache.

    With ``cached_only`` nothing is extracted: layers missing from the cache (in the run's dtype)
    are an error that says how to fill it. Otherwise a model that cannot fit in memory stops here,
    before any weight is read."""
    started = time.perf_counter()
    if not cached_only:
        check_fits(spec.name, spec.options, label=spec.display_name, layers=spec.layers)
    backbone = create_backbone(spec.name, **spec.options)
    try:
        layers = backbone.resolve_layers(spec.layers)
        precision = backbone.compute_precision()
        if precision is not None and not cached_only and show_progress:
            console.print(f"{spec.display_name}: precision {precision.value} ({precision.reason})", highlight=False)
        if cached_only:
            cache = _cached(spec.display_name, backbone, dataset, layers, cache_root, extraction.dtype)
        elif extraction.engine == "ray":
            from medprobe.features.ray_engine import extract_features_ray

            cache = extract_features_ray(
                spec.name, spec.options, dataset, layers, cache_root, batch_size=spec.batch_size,
                chunk_size=extraction.chunk_size, dtype=extraction.dtype, on_error=on_error,
                num_workers=extraction.num_workers, num_gpus_per_worker=extraction.num_gpus_per_worker,
                num_cpus_per_worker=extraction.num_cpus_per_worker, show_progress=show_progress,
                ray_address=extraction.ray_address, lock_wait_s=extraction.lock_wait_s,
            )
        else:
            cache = extract_features(
                backbone, dataset, layers, cache_root, batch_size=spec.batch_size, chunk_size=extraction.chunk_size,
                dtype=extraction.dtype, on_error=on_error, show_progress=show_progress,
                lock_wait_s=extraction.lock_wait_s,
            )
        declared = backbone.layer_stacks()
        info = {
            "name": spec.name, "label": spec.display_name, "layers": layers,
            "fingerprint": cache.meta["fingerprint"]["backbone"], "cache_dir": str(cache.path),
            "cache_key": cache.meta["key"], "cache_dtype": cache.dtype_name,
            # optional backbone attributes: only HF / ONNX backbones have a provenance, only VLMs a prompt
            "provenance": getattr(backbone, "provenance", ""), "prompt": getattr(backbone, "prompt", None),
            # the compute precision and why (medprobe.hardware); None for NumPy backbones
            "precision": precision.record() if precision is not None else None,
            # what a saved probe needs to be fed the same features (medprobe.stages.probe_files)
            "options": dict(spec.options), "batch_size": spec.batch_size,
            "preprocessing": cache.meta["fingerprint"]["preprocessing"], "prompt_record": prompt_record(backbone),
        }
    finally:
        backbone.close()
    return ExtractedFeatures(spec.display_name, cache, layers, {layer: declared[layer] for layer in layers}, info,
                             round(time.perf_counter() - started, 3))


def prompt_record(backbone: Backbone) -> dict[str, Any] | None:
    """A VLM's prompt as the model sees it: the question, the style, the rendered text and its
    token ids (backbones without a prompt: None)."""
    prompt = getattr(backbone, "prompt", None)
    if prompt is None:
        return None
    record: dict[str, Any] = {"text": prompt, "style": getattr(backbone, "prompt_style", None)}
    if hasattr(backbone, "rendered_prompt"):
        record["rendered"] = backbone.rendered_prompt()
    if hasattr(backbone, "prompt_token_ids"):
        record["token_ids"] = [int(token) for token in backbone.prompt_token_ids()]
    return record


def _cached(label: str, backbone: Backbone, dataset: Dataset, layers: list[str], root: Path,
            dtype: str) -> FeatureCache:
    """The complete cache entry of ``layers``, or a :class:`CacheError` saying how to fill it."""
    cache = existing_cache(backbone, dataset, root, dtype)
    absent = [layer for layer in layers if cache is None or not cache.is_complete(layer)]
    if absent:
        others = other_dtype_entries(backbone, dataset, root, dtype)
        hint = (f" (an entry stored in another dtype exists, {others[0]}, but the run file asks for "
                f"{dtype} and features are never converted)" if others else "")
        where = cache.path if cache is not None else root
        raise CacheError(f"{label}: layers {absent} are not in the {dtype} cache "
                         f"{where}{hint}; run `medprobe extract RUN.yaml` first")
    assert cache is not None
    return cache


__all__ = ["ExtractedFeatures", "extract_backbone", "prompt_record"]
