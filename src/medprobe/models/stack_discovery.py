"""Where a Hugging Face model keeps its layer stacks, asked of the model rather than guessed from names.

Why: stacks used to be found by class-name suffixes (``*DecoderLayer``, ``*EncoderLayer``,
``*VisionBlock``) under three attribute names, which missed InternVL (``InternVLVisionLayer``),
Mllama (two vision stacks, two decoder-layer classes), Kosmos-2 (``Kosmos2TextBlock``), Fuyu and
Chameleon (no vision encoder at all) and more. Every fact used here is one transformers itself
states, and the contract test (``tests/models/test_vlm_families.py``) checks the result against the
model's own ``output_hidden_states`` for every image-text-to-text family that builds offline:

* the **language model** is ``get_decoder()`` (transformers' own lookup: ``language_model``,
  ``text_model``, ``decoder``, ...); when that is an encoder-decoder (Florence-2's BART) the stack
  that reads the prompt is its encoder (``get_encoder()``);
* the **vision encoder** is the sub-module built from the model's ``vision_config`` (the module
  ``get_image_features`` runs), else the sub-module under one of the names architectures use
  (:data:`VISION_ATTRIBUTES`);
* in either, the **stack** is the ``ModuleList`` of the layer classes the module records hidden
  states from (``_can_record_outputs["hidden_states"]``, which lists both of Mllama's decoder-layer
  classes), of the depth its config states (``num_hidden_layers`` / ``depth`` / ``num_layers``);
  a model that does not declare its layer classes falls back to lists of one class at that depth.
  Ties go to the list nearest the module (IDEFICS v1's decoder ``layers`` over its gated
  cross-attention blocks, which are not recorded classes anyway).

Further lists of the vision stack's layer classes inside the tower are extra vision stacks (Mllama's
``global_transformer``: ``vision_global.k``). Nothing found, or two equally good candidates, is a
:class:`~medprobe.errors.ModelError` naming them: never a guess. Works on meta-device models.
"""

from __future__ import annotations

from typing import Any, Sequence

from medprobe.errors import ModelError

#: attribute names of vision encoders, tried when no sub-module is built from ``vision_config``
VISION_ATTRIBUTES = ("vision_tower", "vision_model", "visual", "image_tower", "vision_encoder", "image_encoder",
                     "vision")
#: config fields that state a stack's depth, in the order they are read
DEPTH_FIELDS = ("num_hidden_layers", "depth", "num_layers", "n_layers")


def module_path(root: Any, target: Any) -> str:
    """Dotted path of ``target`` inside ``root`` (``"?"`` when it is not there)."""
    for path, module in root.named_modules():
        if module is target:
            return path
    return "?"


def config_depth(config: Any) -> int | None:
    """The number of layers a (sub-)config states, if any."""
    for field in DEPTH_FIELDS:
        value = getattr(config, field, None) if config is not None else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def recorded_layer_classes(module: Any) -> tuple[Any, ...]:
    """The classes (or class-name suffixes) ``module`` records ``hidden_states`` from, as transformers'
    ``_can_record_outputs`` declares them; empty for models that collect hidden states by hand."""
    specs = (getattr(module, "_can_record_outputs", None) or {}).get("hidden_states")
    if specs is None:
        return ()
    classes = []
    for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
        target = getattr(spec, "target_class", None) or getattr(spec, "class_name", None)
        classes.append(target if target is not None else spec)
    return tuple(classes)


def _is_layer(layer: Any, classes: Sequence[Any]) -> bool:
    return any(isinstance(layer, c) if isinstance(c, type) else type(layer).__name__.endswith(str(c)) for c in classes)


def _layer_lists(root: Any, classes: Sequence[Any], exclude: set[int]) -> list[tuple[str, Any]]:
    """``ModuleList``s under ``root``, outside the modules in ``exclude``, whose layers are all of
    ``classes`` (any one class when ``classes`` is empty)."""
    import torch

    found = []
    for path, module in root.named_modules():
        if id(module) in exclude or not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if classes:
            if all(_is_layer(layer, classes) for layer in module):
                found.append((path, module))
        elif len({type(layer) for layer in module}) == 1 and not isinstance(module[0], torch.nn.ModuleList):
            found.append((path, module))
    return found


def find_layer_list(root: Any, *, depth: int | None, exclude: set[int], what: str, name: str,
                    model: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """The layer list of ``root`` (see the module docstring) and the other lists of its layer classes."""
    classes = recorded_layer_classes(root)
    found = _layer_lists(root, classes, exclude)
    if not found and classes:  # the declared classes live in a nested model (e.g. a wrapped text model)
        found = _layer_lists(root, (), exclude)
    if depth is not None and any(len(layers) == depth for _, layers in found):
        chosen = [(path, layers) for path, layers in found if len(layers) == depth]
    else:
        chosen = found
    if not chosen:
        raise ModelError(f"backbone {name!r}: {type(model).__name__} has no recognisable {what} stack in "
                         f"{type(root).__name__} (no module list of "
                         f"{', '.join(getattr(c, '__name__', str(c)) for c in classes) or 'one layer class'}"
                         f"{f' with {depth} layers' if depth is not None else ''})")
    nearest = min(path.count(".") for path, _ in chosen)
    chosen = [(path, layers) for path, layers in chosen if path.count(".") == nearest]
    if len(chosen) > 1:
        listed = ", ".join(f"{module_path(model, m)} ({len(m)} x {type(m[0]).__name__})" for _, m in chosen)
        raise ModelError(f"backbone {name!r}: {type(model).__name__} has {len(chosen)} candidate {what} stacks "
                         f"({listed}); refusing to guess which one is the {what}")
    path, layers = chosen[0]
    type_of = {type(layer) for layer in layers}
    others = [(p, m) for p, m in found if m is not layers and {type(layer) for layer in m} <= type_of]
    return layers, others


def language_model_of(model: Any) -> Any:
    """The module that reads the prompt's tokens: ``get_decoder()``, or its encoder when that is an
    encoder-decoder language model (Florence-2's BART); None when the model has no language model."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model and not hasattr(model, "get_input_embeddings"):
        return None
    config = getattr(decoder, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(decoder, "get_encoder"):
        return decoder.get_encoder()
    return decoder


def vision_tower_of(model: Any) -> Any:
    """The vision encoder: the sub-module built from ``config.vision_config``, else one named as in
    :data:`VISION_ATTRIBUTES`; None when there is none (Fuyu, Chameleon)."""
    vision_config = getattr(getattr(model, "config", None), "vision_config", None)
    if vision_config is not None:
        built = [(path, module) for path, module in model.named_modules() if path
                 and (getattr(module, "config", None) is vision_config
                      or type(getattr(module, "config", None)) is type(vision_config))]
        outer = [(path, module) for path, module in built if not any(path.startswith(p + ".") for p, _ in built)]
        # two towers from one config (Video-LLaVA's image_tower and video_tower): the one named for images
        named = sorted(outer, key=lambda item: (item[0].split(".")[-1] not in VISION_ATTRIBUTES,
                                                VISION_ATTRIBUTES.index(item[0].split(".")[-1])
                                                if item[0].split(".")[-1] in VISION_ATTRIBUTES else 0))
        if named:
            return None if _is_image_tokenizer(named[0][1]) else named[0][1]
    for owner in (getattr(model, "base_model", model), model):
        for attribute in VISION_ATTRIBUTES:
            module = getattr(owner, attribute, None)
            if module is not None and hasattr(module, "named_modules") and not _is_image_tokenizer(module):
                return module
    return None


def _is_image_tokenizer(module: Any) -> bool:
    """An image tokenizer (a VQ autoencoder turning pixels into discrete tokens: Chameleon, Emu3,
    Apertus) is not a vision encoder: its conv stages hold feature maps, not a token sequence."""
    name = type(module).__name__
    return "Tokenizer" in name or "VQ" in name


def owner_of(root: Any, layers: Any) -> Any:
    """The innermost model (a module with a ``config``) under ``root`` that holds ``layers``: the
    module whose output is the stack's last hidden state (``OPTDecoder`` inside ``OPTForCausalLM``)."""
    owner = root
    for path, module in root.named_modules():
        if module is layers:
            break
    else:
        return root
    node = root
    for part in path.split(".")[:-1]:
        node = getattr(node, part)
        if getattr(node, "config", None) is not None and hasattr(node, "get_input_embeddings"):
            owner = node
    return owner


def text_config_of(model: Any, lm_module: Any) -> Any:
    """The config that states the language model's depth and width (``get_text_config(decoder=True)``)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config(decoder=True)
    return getattr(lm_module, "config", None)


def width_of(config: Any, layer: Any) -> int:
    """Hidden width from a config (``embed_dim`` / ``hidden_size`` / ``d_model``), else the layer's first weight."""
    for attribute in ("embed_dim", "hidden_size", "d_model"):
        value = getattr(config, attribute, None) if config is not None else None
        if isinstance(value, int):
            return value
    for parameter in layer.parameters():
        return int(parameter.shape[0])
    return 0


def extra_stack_name(path: str) -> str:
    """``vision_<name>`` for a further vision stack at ``path`` inside the tower (Mllama's
    ``global_transformer.layers`` -> ``vision_global``)."""
    head = path.split(".")[0].replace("_transformer", "").replace("transformer", "") or path.split(".")[0]
    return f"vision_{head.strip('_')}"


def ties_last_hidden_state(module: Any) -> bool:
    """Whether ``module`` reports its output (after any final norm) as its last hidden state, as
    transformers' ``capture_outputs`` does unless told otherwise (``tie_last_hidden_states=False``
    on CLIP/SigLIP towers, or the config's ``tie_last_hidden_states``); models that collect hidden
    states by hand report the last layer's output."""
    override = getattr(getattr(module, "config", None), "tie_last_hidden_states", None)
    if isinstance(override, bool):
        return override
    function = getattr(type(module), "forward", None)
    while function is not None:
        names = getattr(getattr(function, "__code__", None), "co_freevars", ())
        if "tie_last_hidden_states" in names:
            return bool(function.__closure__[names.index("tie_last_hidden_states")].cell_contents)
        function = getattr(function, "__wrapped__", None)
    return False


def records(module: Any, layers: Any) -> bool:
    """Whether ``module`` records the hidden states of ``layers`` (declares their class). Mllama's vision
    model inherits its decoder's declaration and records none of its own encoder layers."""
    return len(layers) > 0 and _is_layer(layers[0], recorded_layer_classes(module))


def recording_owner(root: Any, layers: Any) -> Any:
    """The innermost module under ``root`` holding ``layers`` that records their hidden states
    (``_can_record_outputs``), else the innermost model holding them (:func:`owner_of`)."""
    path = module_path(root, layers)
    owner, node = None, root
    if recorded_layer_classes(root):
        owner = root
    for part in path.split(".")[:-1] if path != "?" else []:
        node = getattr(node, part)
        if recorded_layer_classes(node):
            owner = node
    return owner if owner is not None else owner_of(root, layers)
