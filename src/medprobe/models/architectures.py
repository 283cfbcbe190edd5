"""Published architecture numbers of the models medprobe names, as data, and meta-device builds of them.

Why: the real checkpoints are 0.3-160 GB and not available offline, yet which module list holds
the decoder layers, how many hidden states there are, how wide they are and whether a model fits
on the visible GPUs are all questions about the *architecture*, which its ``config.json`` fixes.
Each entry below is the architecture part of the model's published ``config.json`` on the Hugging
Face hub (cited per entry; tokenizer/training fields that do not change the module tree are left
out). :func:`meta_model` builds the real module tree with accelerate's ``init_empty_weights``:
every parameter lives on the ``meta`` device, so building even IDEFICS-80B takes no memory and
needs no weights and no tokenizer files.

Written from the model cards and config files of the cited repositories, not copied from them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medprobe.errors import ModelError


@dataclass(frozen=True)
class Architecture:
    """One published architecture: the hub repository it describes, and its config fields."""

    name: str
    #: the hub repository whose config.json these numbers are from
    repo: str
    #: ``model_type`` of the top-level config
    model_type: str
    #: architecture fields of that config.json (nested dicts for text/vision/perceiver sub-configs)
    config: dict[str, Any]
    #: the parameter count the model card states, for sanity checks
    published_params: float
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())


def _idefics_v1(hidden: int, intermediate: int, layers: int, heads: int, qk_norms: bool) -> dict[str, Any]:
    # IDEFICS v1 = LLaMA decoder + OpenCLIP ViT-H/14 (laion/CLIP-ViT-H-14-laion2B-s32B-b79K) + a
    # 6-block perceiver resampler with 64 latents; gated cross-attention before every 4th decoder layer.
    return {
        "vocab_size": 32000, "additional_vocab_size": 2, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6, "cross_layer_interval": 4, "qk_layer_norms": qk_norms, "use_resampler": True,
        "tie_word_embeddings": False, "alpha_type": "float",
        "vision_config": {"embed_dim": 1280, "image_size": 224, "intermediate_size": 5120, "patch_size": 14,
                          "num_hidden_layers": 32, "num_attention_heads": 16, "hidden_act": "gelu"},
        "perceiver_config": {"use_resampler": True, "resampler_n_latents": 64, "resampler_depth": 6,
                             "resampler_n_heads": 16, "resampler_head_dim": 96,
                             "qk_layer_norms_perceiver": qk_norms},
    }


# CLIP ViT-B/32: openai/clip-vit-base-patch32 config.json; vinid/plip ships the same architecture.
_CLIP_B32 = {
    "projection_dim": 512,
    "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                    "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"},
}
# SigLIP-so400m/14 vision tower used by Idefics2/3 and SmolVLM-2.2B (hidden 1152, 27 layers, MLP 4304).
_SIGLIP_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                  "num_attention_heads": 16, "patch_size": 14}


def _qwen2_vl(hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int, tied: bool) -> dict[str, Any]:
    # Qwen2-VL: 675M-parameter ViT (32 blocks, width 1280, 14 px patches, 2x2 merge) + Qwen2 decoder (28 layers).
    return {
        "text_config": {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
                        "num_hidden_layers": 28, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": tied,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                            "mrope_section": [16, 24, 24]}},
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": hidden, "num_heads": 16, "mlp_ratio": 4,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "tie_word_embeddings": tied,
    }


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    # HuggingFaceM4/idefics-9b (and -instruct) config.json: LLaMA-7B decoder, 8.9B parameters in all.
    Architecture("idefics-9b", "HuggingFaceM4/idefics-9b", "idefics", _idefics_v1(4096, 11008, 32, 32, False), 8.9e9),
    Architecture("idefics-9b-instruct", "HuggingFaceM4/idefics-9b-instruct", "idefics",
                 _idefics_v1(4096, 11008, 32, 32, False), 8.9e9),
    # HuggingFaceM4/idefics-80b (and -instruct) config.json: LLaMA-65B decoder with q/k layer norms, 80B in all.
    Architecture("idefics-80b", "HuggingFaceM4/idefics-80b", "idefics", _idefics_v1(8192, 22016, 80, 64, True), 80e9),
    Architecture("idefics-80b-instruct", "HuggingFaceM4/idefics-80b-instruct", "idefics",
                 _idefics_v1(8192, 22016, 80, 64, True), 80e9),
    Architecture("clip-b32", "openai/clip-vit-base-patch32", "clip", _CLIP_B32, 151e6),
    Architecture("plip", "vinid/plip", "clip", _CLIP_B32, 151e6, notes="CLIP ViT-B/32 fine-tuned on pathology"),
    # HuggingFaceM4/idefics2-8b config.json: Mistral-7B decoder, SigLIP-so400m tower (980 px), perceiver 64 latents.
    Architecture("idefics2-8b", "HuggingFaceM4/idefics2-8b", "idefics2", {
        "image_token_id": 32001,
        "text_config": {"model_type": "mistral", "vocab_size": 32003, "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "max_position_embeddings": 32768, "sliding_window": 4096, "rms_norm_eps": 1e-5},
        "vision_config": {**_SIGLIP_SO400M, "image_size": 980},
        "perceiver_config": {"resampler_n_latents": 64, "resampler_depth": 3, "resampler_n_heads": 16,
                             "resampler_head_dim": 96, "num_key_value_heads": 4, "hidden_act": "silu"},
    }, 8.4e9),
    # HuggingFaceM4/Idefics3-8B-Llama3 config.json: Llama-3.1-8B decoder, SigLIP-so400m (364 px), pixel shuffle 2.
    Architecture("idefics3-8b", "HuggingFaceM4/Idefics3-8B-Llama3", "idefics3", {
        "image_token_id": 128257, "scale_factor": 2,
        "text_config": {"model_type": "llama", "vocab_size": 128259, "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5},
        "vision_config": {**_SIGLIP_SO400M, "image_size": 364},
    }, 8.5e9),
    # HuggingFaceTB/SmolVLM-256M-Instruct config.json: SmolLM2-135M decoder, 93M SigLIP-B/16 tower (512 px).
    Architecture("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "idefics3", {
        "image_token_id": 49190, "scale_factor": 4,
        "text_config": {"model_type": "llama", "vocab_size": 49280, "hidden_size": 576, "intermediate_size": 1536,
                        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "patch_size": 16, "image_size": 512},
    }, 256e6, notes="untied LM head: 256M parameters as the model card counts them"),
    # HuggingFaceTB/SmolVLM-Instruct config.json (2.2B): SmolLM2-1.7B decoder, SigLIP-so400m (384 px), shuffle 3.
    Architecture("smolvlm-2.2b", "HuggingFaceTB/SmolVLM-Instruct", "idefics3", {
        "image_token_id": 49153, "scale_factor": 3,
        "text_config": {"model_type": "llama", "vocab_size": 49155, "hidden_size": 2048, "intermediate_size": 8192,
                        "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "max_position_embeddings": 16384, "rms_norm_eps": 1e-5},
        "vision_config": {**_SIGLIP_SO400M, "image_size": 384},
    }, 2.25e9),
    # llava-hf/llava-1.5-7b-hf config.json: Vicuna-7B (LLaMA) decoder, CLIP ViT-L/14-336 tower, 2-layer MLP.
    Architecture("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "llava", {
        "image_token_index": 32000, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu",
        "text_config": {"model_type": "llama", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14, "image_size": 336,
                          "projection_dim": 768, "hidden_act": "quick_gelu"},
    }, 7.06e9),
    # Qwen/Qwen2-VL-2B-Instruct and Qwen/Qwen2-VL-7B-Instruct config.json.
    Architecture("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl",
                 _qwen2_vl(1536, 8960, 12, 2, 151936, True), 2.21e9),
    Architecture("qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl",
                 _qwen2_vl(3584, 18944, 28, 4, 152064, False), 8.29e9),
)}


def architecture(name: str) -> Architecture:
    """The published architecture registered as ``name`` (a preset name such as ``idefics-80b``)."""
    if name not in ARCHITECTURES:
        raise ModelError(f"no published architecture is recorded for {name!r}; known: {sorted(ARCHITECTURES)} "
                         "(for another model give its folder: its config.json is enough)")
    return ARCHITECTURES[name]


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
    """The transformers class medprobe loads for a config (as :func:`~medprobe.models.hf_loading.load_hf_model`)."""
    import transformers

    if config.model_type == "idefics":
        return transformers.IdeficsForVisionText2Text
    if config.model_type == "clip":
        return transformers.CLIPModel
    return transformers.AutoModelForImageTextToText


def meta_model(config: Any, *, name: str) -> Any:
    """The model of ``config`` with every weight on the meta device: the real module tree, no memory."""
    from accelerate import init_empty_weights

    model_class = model_class_for(config)
    try:
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
    entry = architecture(name)
    return meta_model(build_config(entry.model_type, entry.config), name=name)


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
    entry = architecture(name)
    return build_config(entry.model_type, entry.config)


def stacks_for_backbone(name: str, options: dict[str, Any] | None = None) -> Any:
    """The :class:`~medprobe.models.stacks.LayerStacks` of a backbone, on a meta-device model."""
    from medprobe.models.stacks import find_stacks

    config = config_for_backbone(name, options)
    model = meta_model(config, name=name)
    return find_stacks(model, name, language=config.model_type != "clip")
