"""What the Hugging Face backbones' forward hooks read and how they stop the pass early.

Shared by :mod:`medprobe.models.hf` and :mod:`medprobe.models.hf_clip`. Kept free of
torch/transformers imports at module level so registering the backbones stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class StopForward(Exception):
    """Raised from a hook once the deepest requested activation is captured."""


def layer_output(output: Any) -> "torch.Tensor":
    """The hidden state a layer returned (the first element of a tuple, or ``last_hidden_state``)."""
    if isinstance(output, tuple):
        return output[0]
    return getattr(output, "last_hidden_state", output)


def layer_input(args: tuple, kwargs: dict) -> "torch.Tensor":
    """The hidden state a layer was called with, positional or ``hidden_states=``."""
    return args[0] if args else kwargs["hidden_states"]


def to_cpu(tensor: "torch.Tensor") -> "torch.Tensor":
    """A detached float32 CPU copy, so features do not depend on where the layer ran."""
    import torch

    return tensor.detach().to("cpu", torch.float32)
