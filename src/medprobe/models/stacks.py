"""A model's layer stacks (language model, vision encoder), the hooks that read them, and layer specs.

Why by structure: the decoder stack used to be "the longest ``layers`` list", and on IDEFICS-9B
(32 LLaMA decoder layers, 32 ViT-H/14 encoder layers) the vision encoder, registered first, won
the tie, so vision-tower activations were labelled as language-model layers. The stacks are now
found by asking the model (:mod:`medprobe.models.stack_discovery`): its decoder (``get_decoder()``),
its vision encoder (the module built from ``vision_config``), the layer classes each records
``hidden_states`` from and the depth their configs state. A model without a vision encoder (Fuyu,
Chameleon) has a language-model stack only; a dual encoder (CLIP) a vision stack only; Mllama has
two vision stacks (``vision.k``: the local transformer, ``vision_global.k``: the global one).

Layer names: ``"k"`` is hidden state k of the language model, ``"vision.k"`` of the vision encoder,
``"<stack>.k"`` of a further vision stack; k = 0 is the input of the stack's first layer.
Everything here also works on a meta-device model (no weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from medprobe.errors import ModelError
from medprobe.models import stack_discovery as discovery
from medprobe.models.stack_discovery import VISION_ATTRIBUTES  # noqa: F401 -- re-exported

#: how a vision-stack hidden state becomes one vector per image: patch-token mean, or the CLS token
VISION_POOLINGS = ("mean", "cls")


@dataclass
class LayerStacks:
    """The language-model and vision layer lists of one model, with the paths they were found at.

    ``vision_layers`` is None for a model without a vision encoder, ``lm_layers`` for one without
    a language model; ``extra`` holds further vision stacks ``{name: (path, layers)}``."""

    name: str
    vision_module: Any
    vision_layers: Any
    vision_path: str
    vision_width: int
    lm_module: Any = None
    lm_layers: Any = None
    lm_path: str = ""
    lm_width: int = 0
    extra: dict[str, tuple[str, Any]] = field(default_factory=dict)
    #: the module whose output is the vision stack's last hidden state when the tower ties it
    vision_owner: Any = None
    #: why a model with a vision sub-module has no vision stack (a hierarchical tower such as Florence-2's DaViT)
    vision_note: str = ""

    @property
    def num_lm_layers(self) -> int:
        return len(self.lm_layers) if self.lm_layers is not None else 0

    @property
    def num_vision_layers(self) -> int:
        return len(self.vision_layers) if self.vision_layers is not None else 0

    @property
    def has_vision(self) -> bool:
        return self.vision_layers is not None

    def layers_of(self, stack: str) -> Any:
        """The layer list of ``stack`` (``"lm"``, ``"vision"`` or an extra stack's name)."""
        if stack == "lm":
            return self.lm_layers
        if stack == "vision":
            return self.vision_layers
        return self.extra[stack][1]

    def hidden_states(self) -> dict[str, tuple[str, int]]:
        """``{layer name: (stack, k)}`` for every hidden state, vision stacks first (they run first):
        ``"vision.k"`` is hidden state k of the ``"vision"`` stack, ``"k"`` that of the ``"lm"`` stack.

        The one place the layer names of a model are made; backbones and ``medprobe plan`` read the
        stack and index of a layer from here instead of parsing its name."""
        names = {f"vision.{k}": ("vision", k) for k in range(self.num_vision_layers + 1) if self.has_vision}
        for stack, (_, layers) in self.extra.items():
            names.update({f"{stack}.{k}": (stack, k) for k in range(len(layers) + 1)})
        if self.lm_layers is not None:
            names.update({str(k): ("lm", k) for k in range(self.num_lm_layers + 1)})
        return names

    def extra_names(self) -> list[str]:
        """Layer names of the extra vision stacks (``vision_global.0`` ...), for layer specs."""
        return [layer for layer, (stack, _) in self.hidden_states().items() if stack not in ("lm", "vision")]

    def describe(self) -> list[str]:
        """One line per stack: hidden-state range, width, and the hooked module list with its class."""
        lines = []
        if self.lm_layers is not None:
            classes = " / ".join(dict.fromkeys(type(layer).__name__ for layer in self.lm_layers))
            lines.append(f"language model: hidden states 0..{self.num_lm_layers} (layer names "
                         f"'0'..'{self.num_lm_layers}'), width {self.lm_width}; {self.num_lm_layers} x {classes} at "
                         f"{self.lm_path}")
        if self.has_vision:
            lines.append(f"vision: hidden states 0..{self.num_vision_layers} (layer names 'vision.0'..'vision."
                         f"{self.num_vision_layers}'), width {self.vision_width}; {self.num_vision_layers} x "
                         f"{type(self.vision_layers[0]).__name__} at {self.vision_path}")
        else:
            lines.append(f"vision: no vision layers: {self.vision_note}" if self.vision_note else
                         "vision: no separable vision encoder (images enter the language model directly)")
        for stack, (path, layers) in self.extra.items():
            lines.append(f"{stack}: hidden states 0..{len(layers)} (layer names '{stack}.0'..'{stack}.{len(layers)}');"
                         f" {len(layers)} x {type(layers[0]).__name__} at {path}")
        return lines


def vision_module_of(model: Any, name: str) -> Any:
    """The vision encoder of ``model`` (:func:`~medprobe.models.stack_discovery.vision_tower_of`), or an error."""
    tower = discovery.vision_tower_of(model)
    if tower is None:
        raise ModelError(f"backbone {name!r}: {type(model).__name__} has no vision encoder (no sub-module built "
                         f"from its vision_config, none named {', '.join(VISION_ATTRIBUTES)})")
    return tower


def find_stacks(model: Any, name: str, *, language: bool = True) -> LayerStacks:
    """The vision stack(s) and (with ``language``) the language-model stack of ``model``, asked of the
    model (:mod:`medprobe.models.stack_discovery`). A model needs at least one of the two."""
    vision = discovery.vision_tower_of(model)
    stacks = LayerStacks(name=name, vision_module=vision, vision_layers=None, vision_path="", vision_width=0)
    if vision is not None:
        vision_config = getattr(vision, "config", None) or getattr(model.config, "vision_config", None)
        try:
            layers, others = discovery.find_layer_list(vision, depth=discovery.config_depth(vision_config),
                                                       exclude=set(), what="vision-encoder", name=name, model=model)
        except ModelError as error:
            if not language:
                raise
            stacks.vision_note = str(error)  # the language model is still probeable
            layers, others = None, []
    if vision is not None and layers is not None:
        stacks.vision_layers = layers
        stacks.vision_owner = discovery.recording_owner(vision, layers)
        stacks.vision_path = discovery.module_path(model, layers)
        stacks.vision_width = discovery.width_of(vision_config, layers[0])
        for path, extra in others:
            stacks.extra[discovery.extra_stack_name(path)] = (discovery.module_path(model, extra), extra)
    if not language:
        if vision is None:
            vision_module_of(model, name)  # raises
        return stacks
    decoder = discovery.language_model_of(model)
    if decoder is None:
        missing = "" if vision is not None else (f"no vision sub-module (none built from a vision_config, none named "
                                                  f"{', '.join(VISION_ATTRIBUTES)}) and ")
        raise ModelError(f"backbone {name!r}: {type(model).__name__} has {missing}no language-model decoder "
                         "(get_decoder)")
    exclude = {id(module) for module in vision.modules()} if vision is not None else set()
    text_config = discovery.text_config_of(model, decoder)
    is_encoder = decoder is not getattr(model, "get_decoder", lambda: None)()
    depth = getattr(text_config, "encoder_layers", None) if is_encoder else discovery.config_depth(text_config)
    lm_layers, _ = discovery.find_layer_list(decoder, depth=depth, exclude=exclude, what="language-model decoder",
                                             name=name, model=model)
    stacks.lm_module = discovery.recording_owner(decoder, lm_layers)
    stacks.lm_layers = lm_layers
    stacks.lm_path = discovery.module_path(model, lm_layers)
    stacks.lm_width = discovery.width_of(text_config, lm_layers[0])
    return stacks


# ---------------------------------------------------------------------------------------------- hooks
@dataclass(frozen=True)
class HookPoint:
    """Where hidden state ``key`` (``("lm", k)`` / ``("vision", k)``) is read: the input of
    ``module`` (``before``) or its output."""

    key: tuple[str, int]
    module: Any
    before: bool


def hook_points(stacks: LayerStacks, lm: Sequence[int], vision: Sequence[int],
                extra: dict[str, Sequence[int]] | None = None) -> list[HookPoint]:
    """The modules to hook for LM hidden states ``lm``, vision hidden states ``vision`` and those of
    the extra vision stacks (``{stack: ks}``): ``k = 0`` is the input of the stack's first layer,
    ``k`` the output of layer ``k - 1``; the last LM hidden state is the decoder's output (after the
    final norm), as transformers reports it unless the decoder says otherwise
    (``tie_last_hidden_states: false``)."""
    points = []
    owner = stacks.vision_owner
    # a tower that records its layers reports its (normed) output as the last hidden state; one that does
    # not (Mllama's) leaves them to the encoder, whose last state is the last layer's output
    vision_tied = (owner is not None and discovery.records(owner, stacks.vision_layers)
                   and discovery.ties_last_hidden_state(owner))
    for k in vision:
        layers = stacks.vision_layers
        if k == len(layers) and vision_tied:  # e.g. Ovis2: hidden_states[-1] is the tower's normed output
            points.append(HookPoint(("vision", k), stacks.vision_owner, False))
        else:
            points.append(HookPoint(("vision", k), layers[0] if k == 0 else layers[k - 1], k == 0))
    for stack, ks in (extra or {}).items():
        layers = stacks.layers_of(stack)
        points += [HookPoint((stack, k), layers[0] if k == 0 else layers[k - 1], k == 0) for k in ks]
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


def stop_key(lm: Sequence[int], vision: Sequence[int],
             extra: dict[str, Sequence[int]] | None = None) -> tuple[str, int]:
    """The hidden state after which the forward pass stops: the deepest LM one requested (the
    vision encoder runs before the LM), else the deepest of the last vision stack requested."""
    if lm:
        return ("lm", max(lm))
    for stack, ks in reversed(list((extra or {}).items())):
        if ks:
            return (stack, max(ks))
    return ("vision", max(vision))


# ---------------------------------------------------------------------------------------------- layer specs
def resolve_layer_spec(name: str, spec: Any, *, num_lm: int | None, num_vision: int | None,
                       extra: Sequence[str] = (), default: Sequence[str] = ()) -> list[str]:
    """Layer names for a run file's ``layers:`` value, over a model's two stacks (``num_lm`` /
    ``num_vision`` None: the model has no such stack).

    * ``None``: ``default``; a list: the union of its items, in order;
    * ``"all"``: the language-model hidden states ``"0"``..``"L"`` (what the study probed); on a
      model without a language model (CLIP) every vision layer plus ``extra`` (``image_embeds``);
    * ``"vision.all"``, ``"vision.k"``, ``"vision.a:b"``: the vision stack (negative from its end);
    * ``k``, ``"k"``, ``"a:b"``: the language model (the vision stack when there is none);
    * a name in ``extra``.

    An index out of range for its stack but valid for the other is an error that says so.
    """
    lm = [str(k) for k in range(num_lm + 1)] if num_lm is not None else None
    vision = [f"vision.{k}" for k in range(num_vision + 1)] if num_vision is not None else []
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
        if not stack:
            raise ModelError(f"backbone {name!r}: layer {spec!r}: this model has no vision encoder; its layers are "
                             f"the language model's 0..{num_lm}")
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
    stacks = [f"language model 0..{num_lm}"] if num_lm is not None else []
    stacks += [f"vision.0..vision.{num_vision}"] if num_vision is not None else []
    raise ModelError(f"backbone {name!r}: unknown layer {spec!r}; layers are {', '.join(stacks)}"
                     + (f", {', '.join(extra)}" if extra else "") + " ('all', 'vision.all', 'a:b', 'vision.a:b')")
