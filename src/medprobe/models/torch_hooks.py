"""Helpers shared by the Hugging Face backbones (:mod:`medprobe.models.hf`, :mod:`medprobe.models.hf_clip`).

Kept free of torch/transformers imports at module level so registering the backbones stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import ModelError

if TYPE_CHECKING:
    import torch

VISION_POOLINGS = ("mean", "cls")


class StopForward(Exception):
    """Raised from a hook once the deepest requested activation is captured."""


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


def layer_output(output: Any) -> "torch.Tensor":
    if isinstance(output, tuple):
        return output[0]
    return getattr(output, "last_hidden_state", output)


def layer_input(args: tuple, kwargs: dict) -> "torch.Tensor":
    return args[0] if args else kwargs["hidden_states"]


def to_cpu(tensor: "torch.Tensor") -> "torch.Tensor":
    import torch

    return tensor.detach().to("cpu", torch.float32)
