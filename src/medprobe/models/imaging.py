"""Image -> tensor conversions shared by backbones that take fixed-size inputs."""

from __future__ import annotations

from typing import Sequence

import numpy as np


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
