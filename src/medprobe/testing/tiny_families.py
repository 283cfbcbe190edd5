"""A tiny random instance of every image-text-to-text family transformers registers, for contract tests.

Why: ``hf:`` promises any ``AutoModelForImageTextToText`` model, and the families change with every
transformers release, so the contract test enumerates
``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES`` instead of picking families. Each family's default
config is shrunk field by field (:data:`SMALL`: widths, depths, heads, experts, in every
sub-config), built with ``AutoModelForImageTextToText.from_config`` and run on inputs made from
the config alone: a text-only batch for the language model (:func:`text_inputs`), and pixels
shaped as the vision encoder's own ``forward`` takes them (:func:`tower_call`). No files, no
network, no processor; the families with a full processor path are in
:mod:`medprobe.testing.tiny_models`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

#: config fields shrunk to at most these values (in the config and every nested sub-config)
SMALL: dict[str, int] = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    depth=2, num_heads=2, embed_dim=32, layers=2, num_layers=2, d_model=32, encoder_layers=2,
    decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
    projection_dim=32, moe_intermediate_size=32, n_routed_experts=4, num_experts=4, num_local_experts=4,
    num_experts_per_tok=2, word_embed_proj_dim=32, out_hidden_size=32, num_global_layers=1, num_decoder_layers=2,
    text_hidden_size=32, vision_hidden_size=32, projector_hidden_size=32, shared_expert_intermediate_size=32,
)
#: token ids drawn for text-only inputs (below every special token the configs here define)
TEXT_IDS = (5, 60)


def _shrink(config: Any, seen: set[int]) -> None:
    from transformers import PretrainedConfig

    if id(config) in seen:
        return
    seen.add(id(config))
    for key, value in list(vars(config).items()):
        if isinstance(value, PretrainedConfig):
            _shrink(value, seen)
        elif key in SMALL and isinstance(value, int) and not isinstance(value, bool) and value > SMALL[key]:
            setattr(config, key, SMALL[key])


def tiny_config(model_type: str) -> Any:
    """The default config of ``model_type``, shrunk (:data:`SMALL`)."""
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type]()
    _shrink(config, set())
    _fit_rope_sections(config, set())
    return config


def _fit_rope_sections(config: Any, seen: set[int]) -> None:
    """Multimodal RoPE splits each head's rotary half into sections (``mrope_section``) that must add
    up to it; after shrinking the heads they are rescaled to the new rotary width."""
    from transformers import PretrainedConfig

    if id(config) in seen:
        return
    seen.add(id(config))
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            _fit_rope_sections(value, seen)
    rope = getattr(config, "rope_parameters", None)
    takes_sections = "mrope_section" in getattr(config, "ignore_keys_at_rope_validation", ())
    try:
        heads = getattr(config, "num_attention_heads", None)
    except Exception:  # noqa: BLE001 -- per-layer configs (Dots3) refuse a model-wide head count
        return
    if not isinstance(rope, dict) or not heads or not (takes_sections or rope.get("mrope_section")):
        return
    sections = rope.get("mrope_section") or [2, 3, 3]  # the models' defaults ([16, 24, 24], [8, 12, 12]) in ratio
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rotary = int(head_dim * rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0) or 1.0))
    half, total = rotary // 2, sum(sections)
    scaled = [max(1, s * half // total) for s in sections]
    scaled[0] += half - sum(scaled)
    rope["mrope_section"] = scaled


def build_tiny_family(model_type: str, *, seed: int = 0) -> Any:
    """A tiny random ``AutoModelForImageTextToText`` of ``model_type``, in eval mode."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(tiny_config(model_type)).eval()


def text_inputs(batch: int = 2, length: int = 7, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A text-only batch (no image tokens) of ``batch`` rows of ``length`` ordinary token ids."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(*TEXT_IDS, (batch, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _pixel_side(config: Any) -> int:
    size = getattr(config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    if isinstance(size, dict):
        size = size.get("height") or next(iter(size.values()))
    patch = getattr(config, "patch_size", 14)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    return int(size) if isinstance(size, int) else 4 * int(patch)


def tower_call(tower: Any, batch: int = 2, *, seed: int = 0) -> Callable[..., Any] | None:
    """``call(**kwargs)`` running ``tower`` on ``batch`` random images shaped from its config, or
    None for an encoder whose inputs cannot be made from the config alone.

    Two layouts cover most encoders: ``pixel_values`` ``(batch, C, S, S)`` (S the config's image
    size), or patches packed Qwen2-VL style (``hidden_states`` ``(patches, C*T*P*P)`` + ``grid_thw``)."""
    config = getattr(tower, "config", None)
    if config is None:
        return None
    parameters = inspect.signature(tower.forward).parameters
    generator = torch.Generator().manual_seed(seed)
    channels = int(getattr(config, "num_channels", None) or getattr(config, "in_channels", None) or 3)
    required = [n for n, p in parameters.items() if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if "grid_thw" in parameters:
        patch = int(getattr(config, "patch_size", 14))
        temporal = int(getattr(config, "temporal_patch_size", 1) or 1)
        merge = int(getattr(config, "spatial_merge_size", 1) or 1)
        side = 2 * merge
        grid = torch.tensor([[1, side, side]] * batch)
        first = required[0] if required else "hidden_states"
        patches = torch.randn(batch * side * side, channels * temporal * patch * patch, generator=generator)
        return lambda **kwargs: tower(**{first: patches, "grid_thw": grid}, **kwargs)
    if "pixel_values" not in parameters or set(required) - {"pixel_values"}:
        return None
    side = _pixel_side(config)
    pixels = torch.randn(batch, channels, side, side, generator=generator)
    return lambda **kwargs: tower(pixel_values=pixels, **kwargs)
