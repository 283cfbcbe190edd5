"""What the Hugging Face backbones' forward hooks read and how they stop the pass early.

Shared by :mod:`medprobe.models.hf`, :mod:`medprobe.models.hf_clip` and the contract tests. Kept free of
torch/transformers imports at module level so registering the backbones stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from medprobe.errors import ModelError

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


def run_hooked(stacks: Any, keys: Sequence[tuple[str, int]], forward: Callable[[], Any], *, name: str,
               on_tower: Callable[[tuple, dict], None] | None = None) -> dict[tuple[str, int], "torch.Tensor"]:
    """Run ``forward()`` once, recording hidden states ``keys`` (``(stack, k)``) of ``stacks``
    (:class:`~medprobe.models.stacks.LayerStacks`) as float32 CPU tensors, and stop right after the
    deepest (:func:`~medprobe.models.stacks.stop_key`). ``on_tower(args, kwargs)`` sees the vision
    encoder's call (how its tokens map to images). Every hook is removed afterwards.

    Shared by the backbones and the contract tests, so the tests check the code that extracts."""
    import torch

    from medprobe.models.stacks import hook_points, stop_key

    by_stack: dict[str, list[int]] = {}
    for stack, k in keys:
        by_stack.setdefault(stack, []).append(k)
    lm, vision = sorted(by_stack.pop("lm", [])), sorted(by_stack.pop("vision", []))
    extra = {stack: sorted(ks) for stack, ks in by_stack.items()}
    captured: dict[tuple[str, int], Any] = {}
    stop_at = stop_key(lm, vision, extra)
    handles = []

    def store(key: tuple[str, int], tensor: Any) -> None:
        if key in captured:
            raise ModelError(f"backbone {name!r}: layer {key} ran twice in one forward pass; "
                             "this architecture is not supported by the layer hooks")
        captured[key] = to_cpu(tensor)
        if key == stop_at:
            raise StopForward

    def pre_hook(key: tuple[str, int]) -> Any:
        return lambda module, args, kwargs: store(key, layer_input(args, kwargs))

    def post_hook(key: tuple[str, int]) -> Any:
        return lambda module, args, output: store(key, layer_output(output))

    try:
        if on_tower is not None and stacks.vision_module is not None:
            handles.append(stacks.vision_module.register_forward_pre_hook(
                lambda module, args, kwargs: on_tower(args, kwargs), with_kwargs=True))
        for point in hook_points(stacks, lm, vision, extra):
            if point.before:
                handles.append(point.module.register_forward_pre_hook(pre_hook(point.key), with_kwargs=True))
            else:
                handles.append(point.module.register_forward_hook(post_hook(point.key)))
        with torch.inference_mode():
            try:
                forward()
            except StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [key for key in keys if key not in captured]
    if missing:
        raise ModelError(f"backbone {name!r}: layers {missing} were not reached in the forward pass")
    return captured
