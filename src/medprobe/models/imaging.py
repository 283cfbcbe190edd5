"""Image conversions shared by the backbones: resized float batches, and 8-bit PIL images for processors."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medprobe.errors import ModelError


def resize_batch(images: Sequence[np.ndarray], size: int | tuple[int, int]) -> np.ndarray:
    """Resize float (H, W, C) images in [0, 1] to ``size`` and stack them as (B, h, w, C) float32.

    Uses antialiased bilinear interpolation in float32 (torch), so 16-bit detail survives and the
    result does not depend on Pillow's uint8 rounding. Deterministic on CPU. torch is imported
    here, not at module level, so listing backbones or checking their options stays fast.
    """
    import torch
    import torch.nn.functional as F

    height, width = (size, size) if isinstance(size, int) else size
    resized = []
    for image in images:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        if tensor.shape[-2:] != (height, width):
            tensor = F.interpolate(
                tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False
            )
        resized.append(tensor[0].permute(1, 2, 0).clamp_(0.0, 1.0).numpy())
    return np.stack(resized).astype(np.float32, copy=False)


def normalise(batch: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Channel-wise (x - mean) / std on a (B, h, w, C) batch; no-op when mean/std are None."""
    if mean is None or std is None:
        return batch
    return (batch - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def to_pil(image: np.ndarray) -> Any:
    """A float image in [0, 1] (``(H, W, 3)``, ``(H, W, 1)`` or ``(H, W)``) as an 8-bit RGB PIL
    image, which is what Hugging Face processors are written for (rounded, not truncated)."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ModelError(f"expected an (H, W, 3) image, got shape {np.shape(image)}")
    return Image.fromarray(np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8), mode="RGB")
