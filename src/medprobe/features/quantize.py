"""8-bit per-feature affine storage, the study's way (``extraction.dtype: uint8``).

The study (peterhan91/Multimodal-Probes, ``activation.py`` with its default ``--save_precision 8``
and ``utils.adjust_precision``) cast each layer's activations to float16, then to float32, and
stored them with ``torch.quantize_per_channel`` along the feature axis: for every feature the
minimum and maximum over *all* rows of the layer give ``scale = (max - min) / 255`` and
``zero_point = round(-min / scale)``; a value ``x`` is stored as the code
``clamp(round(x / scale) + zero_point, 0, 255)`` and read back as ``(code - zero_point) * scale``.
The probes then trained on the dequantised values.

What medprobe keeps the same and what it adds:

* the range is the whole layer's, never a chunk's, so the codes do not depend on the chunk size:
  the cache writes float16 chunks first and converts them once the layer is complete (a pass for
  the per-feature minimum / maximum, then one chunk at a time: memory holds one chunk and three
  vectors of the layer's width, whatever the number of rows);
* the parameters (minimum, scale, zero point per feature) are a file of their own, checksummed like
  every chunk, written before the first chunk is converted, so a conversion killed half-way
  resumes with the same parameters;
* a feature that is constant over the layer (``max == min``) has scale 0: the study's call turns
  it into NaN for every row (its zero point is ``round(-min / 0)``); here it is stored as code 0
  and read back exactly as its value.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from medprobe.errors import CacheError

#: the dtype chunks are written in before a uint8 layer is converted (the study's float16 cast)
STAGING_DTYPE = np.float16
LEVELS = 255
#: file of a layer's parameters, beside its chunks
PARAMS_NAME = "quantization.safetensors"


class RunningRange:
    """Per-feature minimum and maximum over the chunks of a layer, one chunk at a time."""

    def __init__(self) -> None:
        self.minimum: np.ndarray | None = None
        self.maximum: np.ndarray | None = None

    def update(self, block: np.ndarray) -> None:
        if not len(block):
            return
        values = np.asarray(block, dtype=np.float32)
        low, high = values.min(axis=0), values.max(axis=0)
        self.minimum = low if self.minimum is None else np.minimum(self.minimum, low)
        self.maximum = high if self.maximum is None else np.maximum(self.maximum, high)


def affine_params(minimum: np.ndarray, maximum: np.ndarray) -> np.ndarray:
    """``(3, dim)`` float32 rows ``minimum, scale, zero_point`` of each feature (float32 arithmetic,
    as the study's float32 tensors)."""
    minimum = np.asarray(minimum, dtype=np.float32)
    scale = (np.asarray(maximum, dtype=np.float32) - minimum) / np.float32(LEVELS)
    with np.errstate(divide="ignore", invalid="ignore"):
        zero_point = np.where(scale > 0, np.round(-minimum / np.where(scale > 0, scale, 1)), 0).astype(np.float32)
    return np.stack([minimum, scale.astype(np.float32), zero_point])


def quantise(block: np.ndarray, params: np.ndarray) -> np.ndarray:
    """uint8 codes of ``block`` (rows x features): ``clamp(round(zero_point + x * (1 / scale)))``
    in float32, as torch's per-channel quantiser computes it (the zero point added before rounding,
    half to even): the codes equal ``torch.quantize_per_channel``'s bit for bit."""
    _, scale, zero_point = params
    values = np.asarray(block, dtype=np.float32)
    live = scale > 0
    inverse = np.zeros_like(scale)
    inverse[live] = np.float32(1) / scale[live]
    codes = np.rint(zero_point + values * inverse)
    return np.clip(codes, 0, LEVELS).astype(np.uint8)


def dequantise(codes: np.ndarray, params: np.ndarray) -> np.ndarray:
    """float32 values of uint8 ``codes``: ``(code - zero_point) * scale`` (in float64, as torch's
    dequantiser does with its double scale), a constant feature's own value where ``scale == 0``."""
    minimum, scale, zero_point = params
    values = (np.asarray(codes, dtype=np.float64) - zero_point.astype(np.float64)) * scale.astype(np.float64)
    return np.where(scale > 0, values, minimum).astype(np.float32)


def params_digest(layer: str, params: np.ndarray) -> str:
    """sha256 of the layer name, shape and bytes of its parameters."""
    digest = hashlib.sha256(json.dumps({"layer": layer, "shape": list(params.shape)}).encode())
    digest.update(np.ascontiguousarray(params, dtype=np.float32).tobytes())
    return digest.hexdigest()


def params_bytes(layer: str, params: np.ndarray) -> bytes:
    """The parameters file: one safetensors tensor and its checksum in the header."""
    from safetensors.numpy import save

    params = np.ascontiguousarray(params, dtype=np.float32)
    return save({"params": params}, metadata={"medprobe": json.dumps({"layer": layer,
                                                                       "sha256": params_digest(layer, params)})})


def read_params(path: Path, layer: str) -> np.ndarray:
    """A layer's parameters, verified against their checksum (:class:`CacheError` otherwise)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = json.loads((handle.metadata() or {})["medprobe"])
            params = handle.get_tensor("params")
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise CacheError(f"{path}: unreadable 8-bit parameters ({error!r}); delete the layer folder and "
                         "extract again") from error
    if metadata.get("layer") != layer or metadata.get("sha256") != params_digest(layer, params):
        raise CacheError(f"{path}: the 8-bit parameters do not match their checksum (changed on disk); delete "
                         "the layer folder and extract again")
    return params


__all__ = ["LEVELS", "PARAMS_NAME", "STAGING_DTYPE", "RunningRange", "affine_params", "dequantise", "params_bytes",
           "params_digest", "quantise", "read_params"]
