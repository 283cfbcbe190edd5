"""What one layer of a model's stack costs: tokens, widths, the working set on the device and FLOPs.

Why separate from :mod:`.backbone`: the geometry of a stack (how many tokens each layer sees, how
wide it is, how many heads attend over how many tokens) is the part that differs between
architectures -- uniform ViT / decoder stacks, hierarchical encoders costed stage by stage (Swin,
ConvNeXt), models without a vision encoder (Fuyu) -- while the plan around it (weights, placement,
cache) does not. The rules are stated in :mod:`medprobe.plan.backbone`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medprobe.errors import ModelError

#: text tokens assumed around one image (the study's prompt is ~20 LLaMA tokens; chat templates add more)
PROMPT_TOKENS = 32


@dataclass
class StackCost:
    """One stack's geometry as the plan uses it."""

    layers: int
    width: int
    mlp_width: int
    heads: int
    tokens: int
    #: parameters of each layer of the stack
    layer_params: int
    #: tokens each query attends to: every token (None), or a window's (Swin)
    span: int | None = None
    #: attention blocks in each listed layer (a Swin stage holds several)
    blocks: int = 1
    #: a hierarchical stack's per-stage costs, one per listed layer (module docstring)
    stages: tuple[StackCost, ...] = ()

    @property
    def attended(self) -> int:
        """Tokens each query attends to."""
        return self.tokens if self.span is None else self.span

    @property
    def largest_hidden_state(self) -> int:
        """Values (tokens x width) of the largest hidden state the stack outputs, per image."""
        return max((stage.tokens * stage.width for stage in self.stages), default=self.tokens * self.width)


def parameter_count(module: Any) -> int:
    """Parameters of ``module`` (and its sub-modules)."""
    return sum(p.numel() for p in module.parameters())


def _image_tokens(family: Any, config: Any, vision_config: Any, patches: int) -> int:
    """Language-model tokens one image becomes, by the rule its family record states."""
    rule = family.image_tokens
    if isinstance(rule, int):
        return rule
    if rule == "patches":
        return patches
    if rule == "perceiver_latents":
        return int(config.perceiver_config.resampler_n_latents)
    if rule == "pixel_shuffle":
        return patches // config.scale_factor ** 2
    if rule == "spatial_merge":
        return patches // vision_config.spatial_merge_size ** 2
    if rule == "none":
        return 0
    raise ModelError(f"model family {family.model_type!r}: unknown image-token rule {rule!r}")


def stack_costs(stacks: Any, config: Any) -> tuple[StackCost | None, StackCost | None, list[str]]:
    """(LM, vision, assumptions) for one model: geometry plus the tokens each stack sees per image;
    vision is None for a model without a vision encoder (Fuyu), LM None for an image encoder."""
    from medprobe.models.records import family_of

    family = family_of(config.model_type)
    vision_config = getattr(config, "vision_config", None) or config
    image_size = _first(getattr(vision_config, "image_size", 224))
    patch = _first(getattr(vision_config, "patch_size", 14))
    assumptions: list[str] = []
    if family.image_side is not None:
        image_size = family.image_side
        assumptions.append(f"one {image_size}x{image_size} px image (dynamic resolution)")
    patches = (image_size // patch) ** 2
    image_tokens = _image_tokens(family, config, vision_config, patches)
    if family.token_assumption:
        assumptions.append(family.token_assumption)
    vision = None
    if stacks.has_vision:
        vision = _vision_cost(stacks, vision_config, image_size // patch, patches + (1 if family.vision_cls else 0))
    if stacks.lm_layers is None:
        return None, vision, assumptions
    if vision is None:
        assumptions.append("no vision encoder: only the language model runs")
    text_config = getattr(config, "text_config", None) or config
    lm = StackCost(stacks.num_lm_layers, stacks.lm_width, _mlp_width(text_config, stacks.lm_width),
                   int(text_config.num_attention_heads), PROMPT_TOKENS + image_tokens,
                   parameter_count(stacks.lm_layers[0]))
    assumptions.append(f"{PROMPT_TOKENS} prompt tokens + {image_tokens} image tokens in the language model")
    return lm, vision, assumptions


def _first(value: Any) -> int:
    """The first entry of a per-axis config value (``[height, width]``), else the value."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _vision_cost(stacks: Any, vision_config: Any, side: int, tokens: int) -> StackCost:
    """The vision stack's cost: uniform layers, or per stage for a hierarchical encoder (module docstring)."""
    depths = getattr(vision_config, "depths", None)
    heads = getattr(vision_config, "num_attention_heads", getattr(vision_config, "num_heads", 1))
    if not isinstance(depths, (list, tuple)) or len(depths) != stacks.num_vision_layers:
        return StackCost(stacks.num_vision_layers, stacks.vision_width, _mlp_width(vision_config, stacks.vision_width),
                         int(heads), tokens, parameter_count(stacks.vision_layers[0]))
    sizes = getattr(vision_config, "hidden_sizes", None)
    window = getattr(vision_config, "window_size", None)
    stages = []
    for i, (layer, blocks) in enumerate(zip(stacks.vision_layers, depths)):
        width = int(sizes[i]) if sizes else int(vision_config.embed_dim) * 2 ** i
        stage_side = max(1, side // 2 ** i)
        stage_heads = int(heads[i]) if isinstance(heads, (list, tuple)) else 0  # ConvNeXt: no attention
        span = None  # global attention
        if not stage_heads:
            span = 0
        elif window:
            span = min(_first(window), stage_side) ** 2
        stages.append(StackCost(1, width, _mlp_width(vision_config, width), stage_heads, stage_side ** 2,
                                parameter_count(layer), span=span, blocks=int(blocks)))
    return StackCost(len(stages), stacks.vision_width, stages[0].mlp_width, max(s.heads for s in stages),
                     stages[0].tokens, max(s.layer_params for s in stages), stages=tuple(stages))


def _mlp_width(config: Any, width: int) -> int:
    value = getattr(config, "intermediate_size", None)
    if isinstance(value, int):
        return value
    return int(getattr(config, "mlp_ratio", 4) * width)


def working_set(stack: StackCost) -> int:
    """Values alive on the device while one layer of ``stack`` runs, per image (module docstring)."""
    if stack.stages:
        return max(working_set(stage) for stage in stack.stages)
    return stack.tokens * (4 * stack.width + 2 * stack.mlp_width) + stack.heads * stack.tokens * stack.attended


def _layer_flops(stack: StackCost) -> float:
    return 2.0 * stack.layer_params * stack.tokens + 4.0 * stack.blocks * stack.tokens * stack.attended * stack.width


def _stack_flops(stack: StackCost | None, depth: int) -> float:
    """FLOPs of the first ``depth`` layers of ``stack``, per image."""
    if stack is None:
        return 0.0
    if stack.stages:
        return sum(_layer_flops(stage) for stage in stack.stages[:depth])
    return depth * _layer_flops(stack)


def forward_flops(model: Any, stacks: Any, lm: StackCost | None, vision: StackCost | None,
                  deepest_lm: int | None, deepest_vision: int | None, *, full: bool = False) -> float:
    """FLOPs per image to reach the deepest requested layers, or of a ``full`` forward pass.

    Reading an LM layer runs the whole vision tower, the connector (perceiver / projector, counted
    per vision token) and, for IDEFICS v1, the gated cross-attention blocks in front of the decoder
    layers reached (one every ``cross_layer_interval``, per text token). Reading only vision layers
    runs the tower up to the deepest one. A full pass adds the LM head over every token. Without a
    vision encoder (Fuyu) the connector runs over the image tokens of the language model."""
    vision_layers = vision.layers if vision is not None else 0
    if full:
        deepest_lm, deepest_vision = (lm.layers if lm else None), vision_layers
    vision_depth = vision_layers if deepest_lm is not None else 0
    if deepest_vision is not None:
        vision_depth = max(vision_depth, deepest_vision)
    flops = _stack_flops(vision, vision_depth)
    if lm is None or deepest_lm is None:
        return flops
    flops += deepest_lm * _layer_flops(lm)
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    head_params = parameter_count(head) if head is not None and head.weight is not embeddings.weight else 0
    cross = getattr(stacks.lm_module, "gated_cross_attn_layers", None)
    cross_params = parameter_count(cross) if cross is not None else 0
    vision_params = parameter_count(stacks.vision_module) if stacks.vision_module is not None else 0
    connector = (parameter_count(model) - vision_params - lm.layer_params * lm.layers - cross_params
                 - parameter_count(embeddings) - head_params)
    flops += 2.0 * max(connector, 0) * (vision.tokens if vision is not None else lm.tokens - PROMPT_TOKENS)
    if cross is not None:
        interval = max(1, int(getattr(model.config, "cross_layer_interval", 1)))
        reached = sum(1 for k in range(deepest_lm) if k % interval == 0)
        flops += 2.0 * parameter_count(cross[0]) * lm.tokens * reached
    if full and head is not None:
        flops += 2.0 * parameter_count(head) * lm.tokens
    return flops
