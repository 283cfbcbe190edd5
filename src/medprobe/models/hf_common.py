"""Helpers shared by the Hugging Face backbones (:mod:`medprobe.models.hf`, :mod:`medprobe.models.hf_clip`).

Kept free of torch/transformers imports at module level so registering the backbones stays cheap.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import ModelError
from medprobe.models.base import Backbone

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


def find_layer_list(module: Any, what: str) -> Any:
    """The longest ``ModuleList`` called ``layers``/``blocks`` inside ``module`` (the encoder stack)."""
    import torch

    candidates = [
        child for name, child in module.named_modules()
        if isinstance(child, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "blocks")
    ]
    if not candidates:
        raise ModelError(f"cannot find the {what} layer list in {type(module).__name__}")
    return max(candidates, key=len)


def resolve_stack_layer(backbone: Backbone, spec: Any, main: list[str], vision: list[str]) -> list[str] | None:
    """Shared layer-spec rules of the Hugging Face backbones: integers and ``"a:b"`` slices index
    the ``main`` stack (negative from its end), ``"vision.k"`` / ``"vision.a:b"`` the vision stack.
    Returns None when ``spec`` is none of those (the caller falls back to :meth:`Backbone.resolve_layers`)."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        spec = str(int(spec))
    if not isinstance(spec, str):
        return None
    if spec in backbone.layer_names():
        return [spec]
    match = re.fullmatch(r"(vision\.)?(-?\d+)", spec.strip())
    if match:
        stack = vision if match.group(1) else main
        index = int(match.group(2))
        if not -len(stack) <= index < len(stack):
            raise ModelError(
                f"backbone {backbone.name!r}: layer {spec!r} is out of range; this stack has {len(stack)} "
                f"layers ({stack[0]} .. {stack[-1]})"
            )
        return [stack[index]]
    match = re.fullmatch(r"(vision\.)?(-?\d*):(-?\d*)(?::(-?\d*))?", spec.strip())
    if match:
        stack = vision if match.group(1) else main
        bounds = [int(part) if part else None for part in match.groups()[1:]]
        return list(stack[slice(*bounds)])
    return None
