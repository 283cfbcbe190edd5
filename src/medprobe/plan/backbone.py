"""``medprobe plan RUN.yaml``: what each Hugging Face backbone of a run will cost, from config.json alone.

Why: IDEFICS-80B is 160 GB of weights; finding out that it does not fit after downloading it, or
an hour into loading it, is the expensive way. Everything here is computed on a meta-device build
of the model (:mod:`medprobe.models.architectures`): no weights, no tokenizer, milliseconds to a
few seconds. Per backbone:

* **parameters**, counted on the real module tree (tied weights once);
* **weight memory** at the run's ``dtype`` / ``quantization``: 4 or 2 bytes a parameter; with
  bitsandbytes 8-bit every ``nn.Linear`` weight but the LM head takes 1 byte plus a float32 scale
  per output row, 4-bit 0.5 byte plus a float32 scale per 64 weights; the rest stays at ``dtype``;
* **placement** on the visible devices by accelerate's ``infer_auto_device_map`` with
  ``max_memory`` (the backbone's own ``max_memory`` option, else the given or detected devices):
  which modules land on CPU RAM or disk. A plan that needs disk without an ``offload_folder``
  cannot load, and :func:`check_fits` says so before anything is loaded;
* **activation memory per batch**: on the device, one layer's working set for the widest stack,
  ``batch x tokens x (4 x width + 2 x MLP width)`` values at ``dtype`` plus the attention scores
  ``batch x heads x tokens^2`` (eager attention; SDPA needs less); on the CPU, the captured hidden
  states (float32, every token, one tensor per requested layer) before pooling;
* **feature-cache size**: images x requested layers x width x bytes of ``extraction.dtype``;
* **FLOPs per image** up to the deepest requested layer and for a full forward pass:
  2 x parameters x tokens for every layer that runs, plus 4 x tokens^2 x width for attention.

A model without a vision encoder (Fuyu: image patches enter the language model through a linear
projection; Chameleon) gets a language-model-only plan. A hierarchical image encoder (Swin,
ConvNeXt: ``depths`` per stage) is costed stage by stage, since each listed layer is a stage with
its own width (``hidden_sizes[i]``, else ``embed_dim x 2^i``), tokens (a quarter of the previous
stage's), attention heads (Swin's ``num_heads[i]``; none for ConvNeXt) and blocks; Swin attends
within windows of ``window_size^2`` tokens, so its scores are ``heads x tokens x window^2``;
ConvNeXt has no attention term. A stage's parameters are counted at its input resolution, patch
merging included (Swin-T: 10.1 GFLOP against the published 4.5 GMAC = 9.0 GFLOP; ConvNeXt-T 8.9 GFLOP
against 9.0). The stack's summary shows the first stage's tokens and width (its largest hidden
state) and the largest head count; the feature cache counts every vision layer at the last
stage's width (an upper bound).

Token counts are the model's own where its config fixes them (IDEFICS v1: 257 vision tokens, 64
latents, ``PROMPT_TOKENS`` text tokens; LLaVA: 577 / 576), counted by the rule its family record
states (:class:`~medprobe.models.records.ModelFamily`: CLS token, image tokens, assumed image side);
for dynamic-resolution models one image at the family's assumed size without splitting is
assumed, and the plan says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from medprobe.errors import ModelError
from medprobe.plan.devices import devices_text, has_gpu, parse_size, placement_text, visible_memory
from medprobe.plan.stack_costs import forward_flops, parameter_count, stack_costs, working_set

#: text tokens assumed around one image (the study's prompt is ~20 LLaMA tokens; chat templates add more)
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_GB = 1e9


@dataclass
class BackbonePlan:
    """What running one backbone will take (weights, placement, activations, cache, FLOPs), shown by
    ``medprobe plan`` before any weights are read."""

    label: str
    name: str
    model_class: str
    parameters: int
    dtype: str
    quantization: str | None
    weight_bytes: int
    max_memory: dict[Any, int]
    device_map: dict[str, Any]
    layers: list[str]
    batch_size: int
    activation_bytes: int
    captured_bytes: int
    cache_bytes_per_image: int
    n_images: int | None
    flops_requested: float
    flops_full: float
    offload_folder: str | None = None
    assumptions: list[str] = field(default_factory=list)
    #: why ``dtype`` (:func:`medprobe.hardware.choose_torch_dtype`)
    dtype_reason: str = ""

    @property
    def offloaded(self) -> dict[str, list[str]]:
        """``{"cpu": [...], "disk": [...]}``: modules not on an accelerator."""
        out: dict[str, list[str]] = {}
        for module, device in self.device_map.items():
            if device in ("cpu", "disk"):
                out.setdefault(str(device), []).append(module)
        return out

    @property
    def fits(self) -> bool:
        """Loadable as planned: nothing on disk, or an offload folder to put it in."""
        return "disk" not in self.offloaded or bool(self.offload_folder)

    @property
    def cache_bytes(self) -> int | None:
        return None if self.n_images is None else self.cache_bytes_per_image * self.n_images

    def lines(self) -> list[str]:
        """The plan as the CLI prints it."""
        quant = f", {self.quantization} weights" if self.quantization else ""
        out = [f"{self.label} ({self.model_class}): {self.parameters / 1e9:.2f}B parameters",
               f"  weights: {self.weight_bytes / _GB:.1f} GB at {self.dtype}{quant}",
               *([f"  precision: {self.dtype} ({self.dtype_reason})"] if self.dtype_reason else []),
               f"  devices: {devices_text(self.max_memory)}",
               f"  placement: {placement_text(self.device_map)}"]
        offloaded = self.offloaded
        if not has_gpu(self.max_memory) and "disk" not in offloaded:
            out.append("  fits: yes, in CPU RAM (no accelerator visible)")
        elif not offloaded:
            out.append("  fits: yes, entirely on the accelerators")
        elif self.fits:
            where = ", ".join(f"{len(modules)} modules on {device}" for device, modules in offloaded.items())
            out.append(f"  fits: only with offloading ({where})")
        else:
            out.append(f"  fits: NO: {len(offloaded['disk'])} modules need disk and no offload_folder is set")
        out.append(f"  activations per batch of {self.batch_size}: {self.activation_bytes / _GB:.2f} GB on the device, "
                   f"{self.captured_bytes / _GB:.2f} GB of captured hidden states on the CPU")
        cache = (f"{self.cache_bytes / _GB:.2f} GB for {self.n_images} images" if self.cache_bytes is not None
                 else "number of images unknown (data not found; pass --images N)")
        out.append(f"  feature cache: {len(self.layers)} layers, {self.cache_bytes_per_image} bytes per image; {cache}")
        share = self.flops_requested / self.flops_full if self.flops_full else 0.0
        out.append(f"  FLOPs per image: {self.flops_requested / 1e12:.3f} TFLOP up to the deepest requested layer "
                   f"vs {self.flops_full / 1e12:.3f} TFLOP full forward ({share:.0%})")
        out.extend(f"  assumed: {text}" for text in self.assumptions)
        return out


# ---------------------------------------------------------------------------------------------- weights
def _is_quantized_linear(module: Any, model: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings()


def weight_bytes(model: Any, dtype: str, quantization: str | None) -> int:
    """Bytes of the weights of a (meta) model at ``dtype`` / ``quantization`` (module docstring)."""
    width = _DTYPE_BYTES[dtype]
    if quantization is None:
        return sum(p.numel() for p in model.parameters()) * width
    total, seen = 0, set()
    for module in model.modules():
        quantized = _is_quantized_linear(module, model) and id(module.weight) not in seen
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if quantized and name == "weight":
                rows, count = parameter.shape[0], parameter.numel()
                total += count + 4 * rows if quantization == "8bit" else count // 2 + 4 * (count // 64)
            else:
                total += parameter.numel() * width
    return total


def _special_dtypes(model: Any, dtype: str) -> dict[str, Any]:
    """Non-quantized parameters at the compute dtype, for accelerate's size estimate."""
    import torch

    special = {}
    for module_name, module in model.named_modules():
        quantized = _is_quantized_linear(module, model)
        for name, _ in module.named_parameters(recurse=False):
            if not (quantized and name == "weight"):
                special[f"{module_name}.{name}" if module_name else name] = getattr(torch, dtype)
    return special


def device_map_for(model: Any, max_memory: dict[Any, int], dtype: str, quantization: str | None) -> dict[str, Any]:
    """Accelerate's ``infer_auto_device_map`` for the model at its load dtype (``device_map="auto"``)."""
    import torch
    from accelerate import infer_auto_device_map
    from accelerate.utils import CustomDtype

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if quantization:
        kwargs = {"dtype": torch.int8 if quantization == "8bit" else CustomDtype.INT4,
                  "special_dtypes": _special_dtypes(model, dtype)}
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    # accelerate warns about planned GPUs this machine does not have; planning for them is the point
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return dict(infer_auto_device_map(model, max_memory=dict(max_memory), no_split_module_classes=no_split,
                                          **kwargs))
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------------- compute
# ---------------------------------------------------------------------------------------------- plans
def is_hf_backbone(name: str) -> bool:
    """Backbones :func:`plan_backbone` can plan: recorded models and ``hf:`` models."""
    from medprobe.models.records import MODELS

    return name.startswith("hf:") or name in MODELS


def embedding_width(config: Any, stacks: Any) -> int:
    """Width of ``image_embeds``: CLIP's projection, else the image encoder's last width."""
    return int(getattr(config, "projection_dim", 0) or stacks.vision_width)


def plan_backbone(name: str, options: dict[str, Any] | None = None, *, layers: Any = None, label: str | None = None,
                  batch_size: int | None = None, max_memory: dict[Any, Any] | None = None,
                  n_images: int | None = None, feature_dtype: str = "float16") -> BackbonePlan:
    """The plan of one backbone (see the module docstring); ``max_memory`` defaults to the backbone's
    own ``max_memory`` option, else the visible devices."""
    from medprobe.models.architectures import config_for_backbone, meta_model, stacks_of
    from medprobe.hardware import choose_torch_dtype, matrix_units
    from medprobe.models.hf_loading import DTYPES, QUANTIZATIONS
    from medprobe.models.records import family_of
    from medprobe.models.stacks import resolve_layer_spec

    options = dict(options or {})
    label = label or name
    config = config_for_backbone(name, options)
    model = meta_model(config, name=name)
    is_clip = not family_of(config.model_type).language_model
    stacks = stacks_of(model, config, name)
    memory_source = options.get("max_memory") or max_memory or visible_memory()
    memory = {key: parse_size(value, where=f"backbone {label!r} max_memory") for key, value in memory_source.items()}
    # the loader's choice (dtype auto: what this machine's matrix units run fastest); GPUs planned
    # for but not visible here are assumed to have bf16 tensor cores (Ampere+)
    requested, on_gpu = options.get("dtype"), has_gpu(memory)
    if requested not in (None, "auto", *DTYPES):
        raise ModelError(f"backbone {label!r}: unknown dtype {requested!r}; choose from {('auto', *DTYPES)}")
    units = matrix_units(gpu=on_gpu)
    if on_gpu and units.gpu_capability is None:
        units = replace(units, gpu="the planned GPU (assumed Ampere+)", gpu_capability=(8, 0))
    precision = choose_torch_dtype(requested, units, on_gpu)
    dtype = precision.value
    quantization = options.get("quantization")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ModelError(f"backbone {label!r}: unknown quantization {quantization!r}; choose from {QUANTIZATIONS}")
    extra = ["image_embeds"] if is_clip else []
    default = extra or [str(stacks.num_lm_layers)]
    names = resolve_layer_spec(label, layers, num_lm=None if is_clip else stacks.num_lm_layers,
                               num_vision=stacks.num_vision_layers, extra=extra, default=default)
    device_map = device_map_for(model, memory, dtype, quantization)
    lm, vision, assumptions = stack_costs(stacks, config)
    hidden_states = stacks.hidden_states()
    keys = [hidden_states[layer] for layer in names if layer in hidden_states]  # image_embeds is neither stack
    lm_layers = [k for stack, k in keys if stack == "lm"]
    vision_layers = [k for stack, k in keys if stack == "vision"]
    wants_embeds = "image_embeds" in names
    deepest_lm = max(lm_layers) if lm_layers else None
    deepest_vision = stacks.num_vision_layers if wants_embeds else (max(vision_layers) if vision_layers else None)
    requested = forward_flops(model, stacks, lm, vision, deepest_lm, deepest_vision)
    full = forward_flops(model, stacks, lm, vision, None, None, full=True)
    batch = batch_size or (32 if is_clip else 4)
    width = _DTYPE_BYTES[dtype]
    activation = batch * max(working_set(stack) for stack in (lm, vision) if stack is not None)
    captured_values = len(vision_layers) * vision.largest_hidden_state if vision is not None else 0
    if lm is not None:
        captured_values += len(lm_layers) * lm.tokens * lm.width
    embed_width = embedding_width(config, stacks)
    feature_bytes = _DTYPE_BYTES.get(feature_dtype, 4)
    widths = {"lm": lm.width if lm else 0, "vision": stacks.vision_width}
    per_image = sum(widths[hidden_states[layer][0]] if layer in hidden_states else embed_width
                    for layer in names) * feature_bytes
    return BackbonePlan(
        label=label, name=name, model_class=type(model).__name__, parameters=parameter_count(model), dtype=dtype,
        quantization=quantization, weight_bytes=weight_bytes(model, dtype, quantization), max_memory=memory,
        device_map=device_map, layers=names, batch_size=batch, activation_bytes=activation * width,
        captured_bytes=batch * captured_values * 4, cache_bytes_per_image=per_image, n_images=n_images,
        flops_requested=requested, flops_full=full, offload_folder=options.get("offload_folder"),
        assumptions=assumptions, dtype_reason=precision.reason,
    )


def plan_run(config: Any, *, max_memory: dict[Any, Any] | None = None, n_images: int | None = None,
             backbones: Sequence[str] | None = None) -> list[BackbonePlan]:
    """Plans of a run file's Hugging Face backbones (others -- pixels, ONNX -- have nothing to plan)."""
    plans = []
    for spec in config.backbones:
        if not is_hf_backbone(spec.name) or (backbones and spec.display_name not in backbones):
            continue
        plans.append(plan_backbone(spec.name, spec.options, layers=spec.layers, label=spec.display_name,
                                   batch_size=spec.batch_size, max_memory=max_memory, n_images=n_images,
                                   feature_dtype=config.extraction.dtype))
    return plans


def check_fits(name: str, options: dict[str, Any] | None = None, *, label: str | None = None,
               layers: Any = None) -> BackbonePlan | None:
    """Stop before loading a backbone that cannot be loaded on this machine (run by ``medprobe run``).

    Returns the plan (None for backbones that are not Hugging Face models)."""
    if not is_hf_backbone(name):
        return None
    plan = plan_backbone(name, options, layers=layers, label=label)
    if not plan.fits:
        raise ModelError(
            f"backbone {plan.label!r} cannot be loaded here: {plan.weight_bytes / _GB:.0f} GB of weights at "
            f"{plan.dtype}{' ' + plan.quantization if plan.quantization else ''}, but {devices_text(plan.max_memory)} "
            f"leave {len(plan.offloaded.get('disk', []))} modules for disk and no offload_folder is set. Set "
            "options.offload_folder, quantization: 8bit, or run on more/larger GPUs (see `medprobe plan`)")
    return plan


def count_images(config: Any) -> int | None:
    """Images in a run's data (every split), or None when the data is not there to count."""
    from medprobe.data.loaders import load_dataset
    from medprobe.errors import MedprobeError

    try:
        return len(load_dataset(config.data).samples)
    except (MedprobeError, OSError):
        return None


def layer_listing(name: str, options: dict[str, Any] | None = None, *, layers: Any = None,
                  label: str | None = None) -> list[str]:
    """What ``medprobe layers`` prints: each stack (range, width, hooked module list) and, for a
    run file's backbone, the layers its ``layers:`` requests. Hugging Face models come from
    config.json on the meta device; other backbones are built."""
    from medprobe.models.stacks import resolve_layer_spec

    label = label or name
    if is_hf_backbone(name):
        from medprobe.models.architectures import config_for_backbone, stacks_for_backbone

        stacks = stacks_for_backbone(name, options)
        lines = [f"{label}:", *(f"  {line}" for line in stacks.describe())]
        if stacks.lm_layers is None:
            config = config_for_backbone(name, options)
            what = ("the projected image embedding" if getattr(config, "projection_dim", 0)  # CLIP, PLIP
                    else "the model's own pooled image embedding")  # image encoders
            lines.append(f"  image_embeds: {what}, width {embedding_width(config, stacks)}")
        if layers is not None or label != name:
            is_clip = stacks.lm_layers is None
            default = ["image_embeds"] if is_clip else [str(stacks.num_lm_layers)]
            names = resolve_layer_spec(label, layers, num_lm=None if is_clip else stacks.num_lm_layers,
                                       num_vision=stacks.num_vision_layers, extra=["image_embeds"] if is_clip else [],
                                       default=default)
            lines.append(f"  requested ({layers!r}): {len(names)} layers: {', '.join(names)}")
        return lines
    from medprobe.models.registry import create_backbone

    backbone = create_backbone(name, **dict(options or {}))
    try:
        names = backbone.layer_names() if layers is None else backbone.resolve_layers(layers)
        return [f"{label}:", *(f"  {index:>4}  {layer}" for index, layer in enumerate(names))]
    finally:
        backbone.close()


