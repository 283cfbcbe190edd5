"""Hugging Face backbones by name: the ``hf:`` prefix and every preset of :mod:`medprobe.models.records`.

Why a module of its own: the backbone classes (:mod:`medprobe.models.hf`,
:mod:`medprobe.models.hf_clip`) say how a loaded model is read; this module says which names exist
and what they load. Every record with a ``loader`` is registered here, described from its record,
so a new checkpoint of a known family is one record and no code; a family loaded a new way adds
one entry to ``loaders`` in :func:`_register`. Importing it registers the names (the registry
imports it lazily); models load only when a backbone is built.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from medprobe.errors import ModelError
from medprobe.models.base import Backbone
from medprobe.models.hf import HFVisionLanguageBackbone
from medprobe.models.records import MODELS, ModelRecord
from medprobe.models.registry import factory_options, register_backbone

_VLM_OPTIONS = ("options: path, revision, prompt, prompt_style, noun, domain, pooling, vision_pooling, dtype, "
                "device_map, max_memory, offload_folder, quantization, trust_remote_code, download, cache_dir, "
                "padding_side")


def _build_vlm(
    source: str,
    *,
    name: str,
    kind: str,
    revision: str | None = None,
    prompt: str | None = None,
    prompt_style: str = "chat",
    noun: str | None = None,
    domain: str = "radiological",
    pooling: str = "last_token",
    vision_pooling: str = "mean",
    dtype: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, str] | None = None,
    offload_folder: str | None = None,
    quantization: str | None = None,
    trust_remote_code: bool = False,
    download: bool = False,
    cache_dir: str | None = None,
    padding_side: str | None = None,
) -> HFVisionLanguageBackbone:
    """Load a vision-language model (``kind``: ``"idefics"`` or ``"auto"``) and wrap it as a backbone."""
    from medprobe.models.hf_loading import load_hf_model

    loaded = load_hf_model(
        source, kind=kind, revision=revision, dtype=dtype, device_map=device_map, max_memory=max_memory,  # type: ignore[arg-type]
        offload_folder=offload_folder, quantization=quantization, trust_remote_code=trust_remote_code,
        download=download, cache_dir=cache_dir,
    )
    return HFVisionLanguageBackbone(loaded, name=name, prompt=prompt, prompt_style=prompt_style, noun=noun,
                                    domain=domain, pooling=pooling, vision_pooling=vision_pooling,
                                    padding_side=padding_side)


def idefics_preset(record: ModelRecord, path: str | None = None, **options: Any) -> HFVisionLanguageBackbone:
    """An IDEFICS v1 preset, prompted in its record's default style; ``path=`` points at a local copy."""
    options.setdefault("prompt_style", record.default_prompt_style)
    return _build_vlm(path or record.source, name=record.name, kind="idefics", **options)


def clip_preset(record: ModelRecord, path: str | None = None, **options: Any) -> Backbone:
    """A CLIP-family preset (:mod:`medprobe.models.hf_clip`); ``path=`` points at a local copy."""
    return _clip(record.name, path or record.source, **options)


def generic_hf_backbone(source: str, **options: Any) -> Backbone:
    """``hf:<folder-or-hub-id>``: a chat-template VLM (or IDEFICS v1), a CLIP model or an image encoder,
    routed by the ``backbone`` of its ``model_type``'s family record."""
    from medprobe.models.hf_loading import model_type_of
    from medprobe.models.records import family_of

    if not source:
        raise ModelError("backbone 'hf:' needs a model folder or hub id after the colon, e.g. hf:/models/smolvlm")
    resolve = {k: options[k] for k in ("revision", "download", "cache_dir") if k in options}
    build = {
        "vlm": lambda: _build_vlm(source, name=f"hf:{source}", kind="auto", **options),
        "clip": lambda: _clip(f"hf:{source}", source, **options),
        "image_encoder": lambda: _image_encoder(f"hf:{source}", source, **options),
    }
    return build[family_of(model_type_of(source, **resolve)).backbone]()


def _clip(name: str, source: str, **options: Any) -> Backbone:
    """A CLIP backbone; hf_clip is imported only when one is built."""
    from medprobe.models.hf_clip import clip_backbone

    return clip_backbone(name, source, **options)


def _image_encoder(name: str, source: str, **options: Any) -> Backbone:
    """An image-encoder backbone; hf_image_encoder is imported only when one is built."""
    from medprobe.models.hf_image_encoder import image_encoder_backbone

    return image_encoder_backbone(name, source, **options)


def image_encoder_preset(record: ModelRecord, path: str | None = None, **options: Any) -> Backbone:
    """An image-encoder preset (:mod:`medprobe.models.hf_image_encoder`); ``path=`` points at a local copy."""
    return _image_encoder(record.name, path or record.source, **options)


def _keyword_options(factory: Any) -> tuple[str, ...]:
    return ("path", *(n for n, p in inspect.signature(factory).parameters.items()
                      if p.kind is inspect.Parameter.KEYWORD_ONLY))


def _option_names() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Options of the VLM, CLIP and image-encoder presets, read from the factories so the lists cannot drift."""
    from medprobe.models.hf_clip import clip_backbone
    from medprobe.models.hf_image_encoder import image_encoder_backbone

    vlm = ("path", *(n for n in factory_options(_build_vlm, 1) or () if n not in ("name", "kind")))
    return vlm, _keyword_options(clip_backbone), _keyword_options(image_encoder_backbone)


def _register() -> None:
    """Register ``hf:`` and every record with a loader, each described from its record."""
    vlm_options, clip_options, encoder_options = _option_names()
    register_backbone(
        "hf:",
        generic_hf_backbone,
        "any Hugging Face image-text-to-text model with a chat template (Idefics2/3, SmolVLM, LLaVA, Qwen2-VL), "
        "CLIP checkpoint or image encoder (DINOv2/v3, ViT, SigLIP/SigLIP 2, CLIP vision, ConvNeXt, Swin), "
        f"from a folder or hub id: hf:<path-or-id>; {_VLM_OPTIONS}",
        family="huggingface",
        memory="about 2 bytes per parameter in bfloat16, 4 in float32",
        # CLIP checkpoints and image encoders reject the VLM-only ones
        options=tuple(dict.fromkeys(vlm_options + clip_options + encoder_options)),
    )
    loaders = {
        "idefics": (idefics_preset, vlm_options, lambda record: (
            f"{record.summary} ({record.source}), image + prompt, LM layers 0..L and vision.k; {_VLM_OPTIONS}")),
        "clip": (clip_preset, clip_options, lambda record: (
            f"{record.summary} [{record.source}]; zero-shot via class names; options: path, revision, "
            "vision_pooling, dtype, device_map, download")),
        "image_encoder": (image_encoder_preset, encoder_options, lambda record: (
            f"{record.summary} [{record.source}]; vision.0..{record.vision_layers} and image_embeds; options: "
            "path, revision, vision_pooling (cls, mean, cls+mean), dtype, device_map, download")),
    }
    for record in MODELS.values():
        if record.loader is None:
            continue
        factory, options, describe = loaders[record.loader]
        register_backbone(record.name, functools.partial(factory, record), describe(record), family="huggingface",
                          memory=record.memory, options=options)


_register()
