"""Meta-device builds of the recorded architectures, and of any model folder's config.json.

Why: the real checkpoints are 0.3-160 GB and not available offline, yet which module list holds
the decoder layers, how many hidden states there are, how wide they are and whether a model fits
on the visible GPUs are all questions about the *architecture*, which its ``config.json`` fixes.
The numbers of the models medprobe names are data in :mod:`medprobe.models.records`;
:func:`meta_model` builds the real module tree with accelerate's ``init_empty_weights``: every
parameter lives on the ``meta`` device, so building even IDEFICS-80B takes no memory and needs no
weights and no tokenizer files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from medprobe.errors import ModelError
from medprobe.models.records import family_of, model_record


def build_config(model_type: str, fields: dict[str, Any]) -> Any:
    """A transformers config object of ``model_type`` from config.json-style ``fields``."""
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(model_type, **copy.deepcopy(fields))
    except (ValueError, TypeError, KeyError) as error:
        raise ModelError(f"cannot build a {model_type!r} config from its fields: {error}") from error


def read_config(directory: str | Path, *, name: str) -> Any:
    """The config of a local model folder, from its config.json alone (no weights, no tokenizer)."""
    path = Path(directory) / "config.json"
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"backbone {name!r}: cannot read {path}: {error}") from error
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise ModelError(f"backbone {name!r}: {path} has no model_type; is it a Hugging Face model folder?")
    return build_config(str(model_type), fields)


def model_class_for(config: Any) -> Any:
    """The transformers class medprobe loads for a config (its family's, as
    :func:`~medprobe.models.hf_loading.load_hf_model` does)."""
    import transformers

    return getattr(transformers, family_of(config.model_type).model_class)


def meta_model(config: Any, *, name: str) -> Any:
    """The model of ``config`` with every weight on the meta device: the real module tree, no memory.

    An image encoder is built as medprobe loads it (a dual encoder's vision tower only)."""
    from accelerate import init_empty_weights

    model_class = model_class_for(config)
    try:
        if family_of(config.model_type).encoder is not None:
            from medprobe.models.hf_image_encoder import build_meta_encoder

            return build_meta_encoder(config, name)
        with init_empty_weights():
            if model_class.__name__.startswith("Auto"):
                model = model_class.from_config(config)
            else:
                model = model_class(config)
        # outside init_empty_weights, whose patched register_parameter would re-create the tied weight
        model.tie_weights()  # tied heads share the embedding, as after from_pretrained
        return model.eval()
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelError(f"backbone {name!r}: cannot build a {config.model_type!r} model from its config: "
                         f"{type(error).__name__}: {error}") from error


def meta_model_of(name: str) -> Any:
    """The meta-device model of a recorded architecture (``medprobe layers idefics-80b`` without weights)."""
    record = model_record(name)
    return meta_model(build_config(record.model_type, dict(record.config)), name=name)


def config_for_backbone(name: str, options: dict[str, Any] | None = None) -> Any:
    """The architecture config of a run file's backbone, from config.json alone.

    ``hf:<folder-or-hub-id>`` and a preset with ``path:`` read that folder's config.json (a hub id
    is looked up in the local Hugging Face cache only); a preset without ``path:`` uses its
    recorded architecture, so no file of the model needs to be present.
    """
    options = dict(options or {})
    if name.startswith("hf:") or options.get("path"):
        from medprobe.models.hf_loading import resolve_model_dir

        source = options.get("path") or name[len("hf:"):]
        resolve = {k: options[k] for k in ("revision", "cache_dir") if k in options and not options.get("path")}
        directory, _ = resolve_model_dir(source, **resolve)
        return read_config(directory, name=name)
    record = model_record(name)
    return build_config(record.model_type, dict(record.config))


def stacks_of(model: Any, config: Any, name: str) -> Any:
    """The :class:`~medprobe.models.stacks.LayerStacks` of a (meta) model built from ``config``: an image
    encoder's block list from its family record, a VLM's / CLIP's stacks found by structure."""
    if family_of(config.model_type).encoder is not None:
        from medprobe.models.hf_image_encoder import encoder_stacks

        return encoder_stacks(model, config.model_type, name)
    from medprobe.models.stacks import find_stacks

    return find_stacks(model, name, language=family_of(config.model_type).language_model)


def stacks_for_backbone(name: str, options: dict[str, Any] | None = None) -> Any:
    """The :class:`~medprobe.models.stacks.LayerStacks` of a backbone, on a meta-device model."""
    config = config_for_backbone(name, options)
    return stacks_of(meta_model(config, name=name), config, name)
