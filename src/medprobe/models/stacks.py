"""Where a vision-language model keeps its two layer stacks, found by structure, and layer specs over them.

Why by structure: the decoder stack used to be "the longest ``layers`` list", and on IDEFICS-9B
(32 LLaMA decoder layers, 32 ViT-H/14 encoder layers) the vision encoder, registered first, won
the tie, so vision-tower activations were labelled as language-model layers. Here each stack is
looked up inside the sub-module that the architecture itself names for it, and checked by the
class of its layers:

* the **vision stack** lives in the vision sub-module (``vision_tower`` / ``vision_model`` /
  ``visual`` of the base model) and is the one ``ModuleList`` there whose layers are encoder
  layers (class name ending ``EncoderLayer``, e.g. ``IdeficsVisionEncoderLayer``,
  ``CLIPEncoderLayer``, ``Idefics3EncoderLayer``) or vision blocks (``Qwen2VLVisionBlock``);
* the **language-model stack** lives in the model's decoder (``get_decoder()``), outside the
  vision sub-module, and is the one ``ModuleList`` whose layers are decoder layers (class name
  ending ``DecoderLayer``: ``IdeficsDecoderLayer``, ``LlamaDecoderLayer``, ...). IDEFICS v1's
  gated cross-attention blocks and perceiver blocks are neither, so they are never candidates.

None found, or more than one, is a :class:`~medprobe.errors.ModelError` naming the model and the
candidates: never a guess. Everything here also works on a meta-device model (no weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from medprobe.errors import ModelError

VISION_ATTRIBUTES = ("vision_tower", "vision_model", "visual")
#: how a vision-stack hidden state becomes one vector per image: patch-token mean, or the CLS token
VISION_POOLINGS = ("mean", "cls")
LM_LAYER_SUFFIXES = ("DecoderLayer",)
VISION_LAYER_SUFFIXES = ("EncoderLayer", "VisionBlock")


@dataclass
class LayerStacks:
    """The language-model and vision layer lists of one model, with the paths they were found at."""

    name: str
    vision_module: Any
    vision_layers: Any
    vision_path: str
    vision_width: int
    lm_module: Any = None
    lm_layers: Any = None
    lm_path: str = ""
    lm_width: int = 0

    @property
    def num_lm_layers(self) -> int:
        return len(self.lm_layers) if self.lm_layers is not None else 0

    @property
    def num_vision_layers(self) -> int:
        return len(self.vision_layers)

    def hidden_states(self) -> dict[str, tuple[str, int]]:
        """``{layer name: (stack, k)}`` for every hidden state, vision tower first (it runs first):
        ``"vision.k"`` is hidden state k of the ``"vision"`` stack, ``"k"`` that of the ``"lm"`` stack.

        The one place the layer names of a two-stack model are made; backbones and ``medprobe
        plan`` read the stack and index of a layer from here instead of parsing its name."""
        names = {f"vision.{k}": ("vision", k) for k in range(self.num_vision_layers + 1)}
        if self.lm_layers is not None:
            names.update({str(k): ("lm", k) for k in range(self.num_lm_layers + 1)})
        return names

    def describe(self) -> list[str]:
        """One line per stack: hidden-state range, width, and the hooked module list with its class."""
        lines = []
        if self.lm_layers is not None:
            lines.append(f"language model: hidden states 0..{self.num_lm_layers} (layer names "
                         f"'0'..'{self.num_lm_layers}'), width {self.lm_width}; {self.num_lm_layers} x {type(self.lm_layers[0]).__name__} at "
                         f"{self.lm_path}")
        lines.append(f"vision: hidden states 0..{self.num_vision_layers} (layer names 'vision.0'..'vision."
                     f"{self.num_vision_layers}'), width {self.vision_width}; {self.num_vision_layers} x "
                     f"{type(self.vision_layers[0]).__name__} at {self.vision_path}")
        return lines


def _module_path(model: Any, target: Any) -> str:
    for path, module in model.named_modules():
        if module is target:
            return path
    return "?"


def vision_module_of(model: Any, name: str) -> Any:
    """The vision sub-module the architecture defines (on the base model, or the model itself for CLIP)."""
    for owner in (getattr(model, "base_model", model), model):
        for attribute in VISION_ATTRIBUTES:
            module = getattr(owner, attribute, None)
            if module is not None:
                return module
    raise ModelError(f"backbone {name!r}: {type(model).__name__} has no vision sub-module "
                     f"(looked for {', '.join(VISION_ATTRIBUTES)})")


def _layer_lists(root: Any, suffixes: Sequence[str], exclude: set[int]) -> list[tuple[str, Any]]:
    """``ModuleList``s under ``root`` (outside modules whose ids are in ``exclude``) whose layers all
    share one class whose name ends with one of ``suffixes``."""
    import torch

    found = []
    for path, module in root.named_modules():
        if id(module) in exclude or not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        classes = {type(layer) for layer in module}
        if len(classes) == 1 and type(module[0]).__name__.endswith(tuple(suffixes)):
            found.append((path, module))
    return found


def _one(found: list[tuple[str, Any]], *, what: str, name: str, model: Any, suffixes: Sequence[str]) -> tuple[str, Any]:
    if len(found) == 1:
        return found[0]
    kinds = " or ".join(f"*{s}" for s in suffixes)
    if not found:
        raise ModelError(f"backbone {name!r}: {type(model).__name__} has no recognisable {what} stack (a module "
                         f"list of {kinds} layers); this architecture is not supported by medprobe's layer hooks")
    listed = ", ".join(f"{_module_path(model, m)} ({len(m)} x {type(m[0]).__name__})" for _, m in found)
    raise ModelError(f"backbone {name!r}: {type(model).__name__} has {len(found)} candidate {what} stacks "
                     f"({listed}); refusing to guess which one is the {what}")


def _width(config: Any, fallback_layer: Any) -> int:
    for attribute in ("embed_dim", "hidden_size", "d_model"):
        value = getattr(config, attribute, None) if config is not None else None
        if isinstance(value, int):
            return value
    for parameter in fallback_layer.parameters():  # the first norm / projection weight
        return int(parameter.shape[0])
    return 0


def find_stacks(model: Any, name: str, *, language: bool = True) -> LayerStacks:
    """The vision stack and (with ``language``) the language-model stack of ``model``, by structure."""
    vision = vision_module_of(model, name)
    vision_path, vision_layers = _one(_layer_lists(vision, VISION_LAYER_SUFFIXES, set()), what="vision-encoder",
                                      name=name, model=model, suffixes=VISION_LAYER_SUFFIXES)
    stacks = LayerStacks(
        name=name, vision_module=vision, vision_layers=vision_layers,
        vision_path=_module_path(model, vision_layers),
        vision_width=_width(getattr(vision, "config", None), vision_layers[0]),
    )
    if not language:
        return stacks
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        raise ModelError(f"backbone {name!r}: {type(model).__name__} has no language-model decoder (get_decoder)")
    exclude = {id(module) for module in vision.modules()}
    _, lm_layers = _one(_layer_lists(decoder, LM_LAYER_SUFFIXES, exclude), what="language-model decoder",
                        name=name, model=model, suffixes=LM_LAYER_SUFFIXES)
    stacks.lm_module = decoder
    stacks.lm_layers = lm_layers
    stacks.lm_path = _module_path(model, lm_layers)
    config = getattr(decoder, "config", None)
    stacks.lm_width = _width(getattr(config, "text_config", None) or config, lm_layers[0])
    return stacks


# ---------------------------------------------------------------------------------------------- hooks
@dataclass(frozen=True)
class HookPoint:
    """Where hidden state ``key`` (``("lm", k)`` / ``("vision", k)``) is read: the input of
    ``module`` (``before``) or its output."""

    key: tuple[str, int]
    module: Any
    before: bool


def hook_points(stacks: LayerStacks, lm: Sequence[int], vision: Sequence[int]) -> list[HookPoint]:
    """The modules to hook for LM hidden states ``lm`` and vision hidden states ``vision``:
    ``k = 0`` is the input of the stack's first layer, ``k`` the output of layer ``k - 1``; the last
    LM hidden state is the decoder's output (after the final norm), as transformers reports it
    unless the decoder says otherwise (``tie_last_hidden_states: false``)."""
    points = [HookPoint(("vision", k), stacks.vision_layers[0] if k == 0 else stacks.vision_layers[k - 1], k == 0)
              for k in vision]
    last = stacks.num_lm_layers
    tied = getattr(getattr(stacks.lm_module, "config", None), "tie_last_hidden_states", True) is not False
    for k in lm:
        if k == 0:
            points.append(HookPoint(("lm", 0), stacks.lm_layers[0], True))
        elif k == last and tied:
            points.append(HookPoint(("lm", k), stacks.lm_module, False))
        else:
            points.append(HookPoint(("lm", k), stacks.lm_layers[k - 1], False))
    return points


def stop_key(lm: Sequence[int], vision: Sequence[int]) -> tuple[str, int]:
    """The hidden state after which the forward pass stops: the deepest LM one requested (the
    tower runs before the LM), else the deepest vision one."""
    return ("lm", max(lm)) if lm else ("vision", max(vision))


# ---------------------------------------------------------------------------------------------- layer specs
def resolve_layer_spec(name: str, spec: Any, *, num_lm: int | None, num_vision: int,
                       extra: Sequence[str] = (), default: Sequence[str] = ()) -> list[str]:
    """Layer names for a run file's ``layers:`` value, over a model's two stacks.

    * ``None``: ``default``; a list: the union of its items, in order;
    * ``"all"``: the language-model hidden states ``"0"``..``"L"`` (what the study probed); on a
      model without a language model (CLIP) every vision layer plus ``extra`` (``image_embeds``);
    * ``"vision.all"``, ``"vision.k"``, ``"vision.a:b"``: the vision stack (negative from its end);
    * ``k``, ``"k"``, ``"a:b"``: the language model (the vision stack when there is none);
    * a name in ``extra``.

    An index out of range for its stack but valid for the other is an error that says so.
    """
    lm = [str(k) for k in range(num_lm + 1)] if num_lm is not None else None
    vision = [f"vision.{k}" for k in range(num_vision + 1)]
    main = lm if lm is not None else vision
    if spec is None:
        return list(default)
    if isinstance(spec, (list, tuple)):
        resolved: list[str] = []
        for item in spec:
            for layer in resolve_layer_spec(name, item, num_lm=num_lm, num_vision=num_vision, extra=extra,
                                            default=default):
                if layer not in resolved:
                    resolved.append(layer)
        return resolved
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        spec = str(int(spec))
    if not isinstance(spec, str):
        raise ModelError(f"backbone {name!r}: layer spec {spec!r} must be a string, an integer or a list")
    text = spec.strip()
    if text == "all":
        return list(lm) if lm is not None else vision + list(extra)
    if text == "vision.all":
        return list(vision)
    if text in extra or (lm is not None and text in lm) or text in vision:
        return [text]
    match = re.fullmatch(r"(vision\.)?(-?\d+)", text)
    if match:
        on_vision = bool(match.group(1)) or lm is None
        stack, other = (vision, lm) if on_vision else (main, vision)
        index = int(match.group(2))
        if -len(stack) <= index < len(stack):
            return [stack[index]]
        label = "vision stack" if on_vision else "language model"
        hint = ""
        if other is not None and -len(other) <= index < len(other) and other is not stack:
            spelled = f"vision.{index}" if not on_vision else str(index)
            hint = (f"; {index} is valid on the {'vision stack' if not on_vision else 'language model'} "
                    f"({other[0]}..{other[-1]}): write {spelled!r} if that is the stack you meant")
        raise ModelError(f"backbone {name!r}: layer {spec!r} is out of range for the {label}, which has hidden "
                         f"states {stack[0]}..{stack[-1]}{hint}")
    match = re.fullmatch(r"(vision\.)?(-?\d*):(-?\d*)(?::(-?\d*))?", text)
    if match:
        stack = vision if match.group(1) or lm is None else main
        bounds = [int(part) if part else None for part in match.groups()[1:]]
        if bounds[2] == 0:
            raise ModelError(f"backbone {name!r}: layer slice {spec!r} has step 0")
        return list(stack[slice(*bounds)])
    stacks = f"language model 0..{num_lm}, " if num_lm is not None else ""
    raise ModelError(f"backbone {name!r}: unknown layer {spec!r}; layers are {stacks}vision.0..vision.{num_vision}"
                     + (f", {', '.join(extra)}" if extra else "") + " ('all', 'vision.all', 'a:b', 'vision.a:b')")
