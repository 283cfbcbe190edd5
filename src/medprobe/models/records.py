"""What medprobe knows about each Hugging Face model, as data: one frozen record per family and per model.

Why: the facts about one model used to be spread over six places (three preset shapes in
``hf.py``, ``architectures.py``, token counts in ``plan.py``, the tiny test builders), so adding a
model meant editing all of them and forgetting one went unnoticed. Here, as in open_clip's
``model_configs/*.json`` and timm's ``PretrainedCfg``, each model is one record and every other
module reads it:

* :class:`ModelFamily`, keyed by transformers' ``model_type`` (what a ``config.json`` says), holds
  what is true of every checkpoint of that architecture, including ``hf:<folder>`` models nobody
  recorded: the transformers classes that load it, the prompt styles it takes, how many tokens one
  image becomes (read by :mod:`medprobe.plan`), and the tiny random copy the tests build
  (:mod:`medprobe.testing.tiny_models`).
* :class:`ModelRecord`, keyed by the preset name, holds one published checkpoint: its hub
  repository, the architecture part of its ``config.json`` (built on the meta device by
  :mod:`medprobe.models.architectures`), the layer counts and widths its model card states, the
  memory note ``medprobe backbones`` shows, and, for a registered preset, the loader that builds it
  (:mod:`medprobe.models.hf` registers every record with a ``loader``).

Adding a checkpoint of a known family is adding one :class:`ModelRecord`; a new architecture adds
one :class:`ModelFamily` too (and loader code only if it is loaded a new way). The contract tests
(``tests/test_model_records.py``) check every record against the model it builds.

Architecture numbers are written from the model cards and ``config.json`` files of the cited
repositories (tokenizer/training fields that do not change the module tree are left out), not
copied from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from medprobe.errors import ModelError

#: every prompt style an IDEFICS v1 model takes (:mod:`medprobe.models.hf` documents them)
IDEFICS_PROMPT_STYLES = ("study", "study-verbatim", "study-general", "chat", "plain")
#: the noun the study's prompt used for each of its tasks (peterhan91/Multimodal-Probes, ``activation.py``)
STUDY_NOUNS: Mapping[str, str] = MappingProxyType({
    "t1": "histological picture", "t2": "histological picture", "t3": "skin image", "t4": "skin image",
    "t5": "eye fundus image", "t6": "eye fundus image", "t7": "chest radiological image",
    "t8": "knee radiological image",
})


@dataclass(frozen=True)
class ModelFamily:
    """One architecture (transformers ``model_type``): how it loads, is prompted and tokenises an image."""

    model_type: str
    title: str
    #: the transformers classes medprobe loads it with
    model_class: str = "AutoModelForImageTextToText"
    processor_class: str = "AutoProcessor"
    #: False for image-text dual encoders (CLIP): only a vision stack, no prompt
    language_model: bool = True
    #: prompt styles it takes; chat-template models take only ``chat`` (rendered by their own template)
    prompt_styles: tuple[str, ...] = ("chat",)
    #: the study's per-task nouns, for families the study prompted
    study_nouns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: the vision tower prepends a CLS token to its patch tokens
    vision_cls: bool = False
    #: language-model tokens one image becomes: a fixed count, or the rule that counts them from the
    #: config: ``"patches"`` (one per patch), ``"perceiver_latents"``, ``"pixel_shuffle"`` (patches /
    #: scale_factor^2), ``"spatial_merge"`` (patches / spatial_merge_size^2), ``"none"``
    image_tokens: int | str = "none"
    #: image side assumed for dynamic-resolution towers (the config fixes none), in pixels
    image_side: int | None = None
    #: what else the token count assumes, for ``medprobe plan``
    token_assumption: str = ""
    #: key of its tiny random test model in :data:`medprobe.testing.tiny_models.BUILDERS` (``build_tiny_<key>``)
    tiny: str | None = None


FAMILIES: dict[str, ModelFamily] = {f.model_type: f for f in (
    # IDEFICS v1: pixels reach the text through gated cross-attention from 64 perceiver latents; in
    # the text, an image is the 3-token slot <fake_token_around_image><image><fake_token_around_image>.
    ModelFamily("idefics", "IDEFICS v1", model_class="IdeficsForVisionText2Text", processor_class="IdeficsProcessor",
                prompt_styles=IDEFICS_PROMPT_STYLES, study_nouns=STUDY_NOUNS, vision_cls=True, image_tokens=3,
                tiny="idefics"),
    ModelFamily("clip", "CLIP", model_class="CLIPModel", processor_class="CLIPProcessor", language_model=False,
                prompt_styles=(), vision_cls=True, tiny="clip"),
    ModelFamily("llava", "LLaVA", vision_cls=True, image_tokens="patches", tiny="llava"),
    ModelFamily("idefics2", "Idefics2", image_tokens="perceiver_latents",
                token_assumption="one crop per image (no image splitting)", tiny="idefics2"),
    ModelFamily("idefics3", "Idefics3 / SmolVLM", image_tokens="pixel_shuffle",
                token_assumption="one crop per image (no image splitting)", tiny="idefics3"),
    ModelFamily("qwen2_vl", "Qwen2-VL", image_tokens="spatial_merge", image_side=448, tiny="qwen2vl"),
)}
#: what medprobe assumes of an ``hf:`` model whose ``model_type`` has no family here
GENERIC_FAMILY = ModelFamily("*", "image-text-to-text model with a chat template")


def family_of(model_type: str) -> ModelFamily:
    """The family of a ``config.json``'s ``model_type`` (the generic chat-template family if unknown)."""
    return FAMILIES.get(model_type, GENERIC_FAMILY)


@dataclass(frozen=True)
class ModelRecord:
    """One published checkpoint: where it is, its architecture, and how medprobe registers it."""

    name: str
    #: the hub repository whose config.json and model card these numbers are from
    source: str
    #: ``model_type`` of the top-level config: the key of its :class:`ModelFamily`
    model_type: str
    #: architecture fields of that config.json (nested dicts for text/vision/perceiver sub-configs)
    config: Mapping[str, Any]
    #: the parameter count the model card states
    published_params: float
    #: decoder layers and width of the language model (None for CLIP), and of the vision tower
    lm_layers: int | None
    lm_width: int | None
    vision_layers: int
    vision_width: int
    #: how :mod:`medprobe.models.hf` builds it as a preset (``"idefics"``, ``"clip"``); None: the
    #: architecture is recorded for ``medprobe plan`` / ``layers`` only (load it as ``hf:<source>``)
    loader: str | None = None
    #: first words of its ``medprobe backbones`` description
    summary: str = ""
    #: approximate weight memory, for the docs and ``medprobe backbones``
    memory: str = ""
    #: the prompt style its preset uses unless a run file says otherwise
    default_prompt_style: str | None = None
    notes: str = ""

    @property
    def family(self) -> ModelFamily:
        return family_of(self.model_type)


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


_IDEFICS_9B_MEMORY = "~18 GB in bfloat16 (8.9B params); ~9.2 GB 8-bit (medprobe plan)"
_IDEFICS_80B_MEMORY = "~160 GB in bfloat16 (80B params); ~81 GB 8-bit; spread with device_map='auto' (medprobe plan)"
_CLIP_MEMORY = "~0.6 GB in float32 (151M params)"

MODELS: dict[str, ModelRecord] = {r.name: r for r in (
    # HuggingFaceM4/idefics-9b (and -instruct) config.json: LLaMA-7B decoder, 8.9B parameters in all. The
    # base models get the study's prompt by default, the instruct models their chat turns.
    ModelRecord("idefics-9b", "HuggingFaceM4/idefics-9b", "idefics", _idefics_v1(4096, 11008, 32, 32, False), 8.9e9,
                32, 4096, 32, 1280, loader="idefics", summary="IDEFICS v1", memory=_IDEFICS_9B_MEMORY,
                default_prompt_style="study"),
    ModelRecord("idefics-9b-instruct", "HuggingFaceM4/idefics-9b-instruct", "idefics",
                _idefics_v1(4096, 11008, 32, 32, False), 8.9e9, 32, 4096, 32, 1280, loader="idefics",
                summary="IDEFICS v1", memory=_IDEFICS_9B_MEMORY, default_prompt_style="chat"),
    # HuggingFaceM4/idefics-80b (and -instruct) config.json: LLaMA-65B decoder with q/k layer norms, 80B in all.
    ModelRecord("idefics-80b", "HuggingFaceM4/idefics-80b", "idefics", _idefics_v1(8192, 22016, 80, 64, True), 80e9,
                80, 8192, 32, 1280, loader="idefics", summary="IDEFICS v1", memory=_IDEFICS_80B_MEMORY,
                default_prompt_style="study"),
    ModelRecord("idefics-80b-instruct", "HuggingFaceM4/idefics-80b-instruct", "idefics",
                _idefics_v1(8192, 22016, 80, 64, True), 80e9, 80, 8192, 32, 1280, loader="idefics",
                summary="IDEFICS v1", memory=_IDEFICS_80B_MEMORY, default_prompt_style="chat"),
    ModelRecord("clip-b32", "openai/clip-vit-base-patch32", "clip", _CLIP_B32, 151e6, None, None, 12, 768,
                loader="clip", summary="OpenAI CLIP ViT-B/32 image tower (vision.0..12, image_embeds)",
                memory=_CLIP_MEMORY),
    # vinid/plip model card: CLIP ViT-B/32 fine-tuned on pathology image-text pairs from medical Twitter.
    ModelRecord("plip", "vinid/plip", "clip", _CLIP_B32, 151e6, None, None, 12, 768, loader="clip",
                summary="PLIP: CLIP ViT-B/32 fine-tuned on pathology image-text pairs (vision.0..12, image_embeds)",
                memory=_CLIP_MEMORY, notes="CLIP ViT-B/32 fine-tuned on pathology"),
    # HuggingFaceM4/idefics2-8b config.json: Mistral-7B decoder, SigLIP-so400m tower (980 px), perceiver 64 latents.
    ModelRecord("idefics2-8b", "HuggingFaceM4/idefics2-8b", "idefics2", {
        "image_token_id": 32001,
        "text_config": {"model_type": "mistral", "vocab_size": 32003, "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "max_position_embeddings": 32768, "sliding_window": 4096, "rms_norm_eps": 1e-5},
        "vision_config": {**_SIGLIP_SO400M, "image_size": 980},
        "perceiver_config": {"resampler_n_latents": 64, "resampler_depth": 3, "resampler_n_heads": 16,
                             "resampler_head_dim": 96, "num_key_value_heads": 4, "hidden_act": "silu"},
    }, 8.4e9, 32, 4096, 27, 1152),
    # HuggingFaceM4/Idefics3-8B-Llama3 config.json: Llama-3.1-8B decoder, SigLIP-so400m (364 px), pixel shuffle 2.
    ModelRecord("idefics3-8b", "HuggingFaceM4/Idefics3-8B-Llama3", "idefics3", {
        "image_token_id": 128257, "scale_factor": 2,
        "text_config": {"model_type": "llama", "vocab_size": 128259, "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5},
        "vision_config": {**_SIGLIP_SO400M, "image_size": 364},
    }, 8.5e9, 32, 4096, 27, 1152),
    # HuggingFaceTB/SmolVLM-256M-Instruct config.json: SmolLM2-135M decoder, 93M SigLIP-B/16 tower (512 px).
    ModelRecord("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "idefics3", {
        "image_token_id": 49190, "scale_factor": 4,
        "text_config": {"model_type": "llama", "vocab_size": 49280, "hidden_size": 576, "intermediate_size": 1536,
                        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "patch_size": 16, "image_size": 512},
    }, 256e6, 30, 576, 12, 768, notes="untied LM head: 256M parameters as the model card counts them"),
    # HuggingFaceTB/SmolVLM-Instruct config.json (2.2B): SmolLM2-1.7B decoder, SigLIP-so400m (384 px), shuffle 3.
    ModelRecord("smolvlm-2.2b", "HuggingFaceTB/SmolVLM-Instruct", "idefics3", {
        "image_token_id": 49153, "scale_factor": 3,
        "text_config": {"model_type": "llama", "vocab_size": 49155, "hidden_size": 2048, "intermediate_size": 8192,
                        "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "max_position_embeddings": 16384, "rms_norm_eps": 1e-5},
        "vision_config": {**_SIGLIP_SO400M, "image_size": 384},
    }, 2.25e9, 24, 2048, 27, 1152),
    # llava-hf/llava-1.5-7b-hf config.json: Vicuna-7B (LLaMA) decoder, CLIP ViT-L/14-336 tower, 2-layer MLP.
    ModelRecord("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "llava", {
        "image_token_index": 32000, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu",
        "text_config": {"model_type": "llama", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14, "image_size": 336,
                          "projection_dim": 768, "hidden_act": "quick_gelu"},
    }, 7.06e9, 32, 4096, 24, 1024),
    # Qwen/Qwen2-VL-2B-Instruct and Qwen/Qwen2-VL-7B-Instruct config.json.
    ModelRecord("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl", _qwen2_vl(1536, 8960, 12, 2, 151936, True),
                2.21e9, 28, 1536, 32, 1280),
    ModelRecord("qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl", _qwen2_vl(3584, 18944, 28, 4, 152064, False),
                8.29e9, 28, 3584, 32, 1280),
)}


def model_record(name: str) -> ModelRecord:
    """The record of ``name`` (a preset name such as ``idefics-80b``)."""
    if name not in MODELS:
        raise ModelError(f"no published architecture is recorded for {name!r}; known: {sorted(MODELS)} "
                         "(for another model give its folder: its config.json is enough)")
    return MODELS[name]


def vlm_presets() -> dict[str, ModelRecord]:
    """Registered presets that take a prompt (a language model reads the image): ``{name: record}``."""
    return {name: r for name, r in MODELS.items() if r.loader and r.family.language_model}
