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
(``tests/models/test_model_records.py``) check every record against the model it builds.

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
    #: which backbone class reads it (``medprobe.models.hf_presets`` routes ``hf:`` models by this):
    #: ``"vlm"`` (prompted image-text-to-text), ``"clip"`` (image-text dual encoder), ``"image_encoder"``
    backbone: str = "vlm"
    #: for ``backbone == "image_encoder"``: where its layers are and how its tokens are laid out
    encoder: ImageEncoder | None = None


FAMILIES: dict[str, ModelFamily] = {f.model_type: f for f in (
    # IDEFICS v1: pixels reach the text through gated cross-attention from 64 perceiver latents; in
    # the text, an image is the 3-token slot <fake_token_around_image><image><fake_token_around_image>.
    ModelFamily("idefics", "IDEFICS v1", model_class="IdeficsForVisionText2Text", processor_class="IdeficsProcessor",
                prompt_styles=IDEFICS_PROMPT_STYLES, study_nouns=STUDY_NOUNS, vision_cls=True, image_tokens=3,
                tiny="idefics"),
    ModelFamily("clip", "CLIP", model_class="CLIPModel", processor_class="CLIPProcessor", language_model=False,
                prompt_styles=(), vision_cls=True, tiny="clip", backbone="clip"),
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


# ---------------------------------------------------------------------------------------------- image encoders
# (issue 23, point 5) Pure image encoders as backbones, and the presets whose geometry is recorded here.
@dataclass(frozen=True)
class ImageEncoder:
    """How :mod:`medprobe.models.hf_image_encoder` reads one image-encoder architecture.

    Why data: the encoders differ only in where their blocks are and how their tokens are laid out
    (a CLS token, register tokens after it, feature maps instead of tokens); one backbone class
    reads all of them from this, and the tests check every entry against the model's own
    ``output_hidden_states`` (``tests/models/test_image_encoders.py``)."""

    #: dotted path (from the loaded model) of the module list whose block k - 1 outputs hidden state k
    stack: str
    #: the sequence starts with a CLS token (``cls`` / ``cls+mean`` pooling are then available)
    cls_token: bool = False
    #: config attribute counting the register tokens that follow the CLS token (left out of ``mean``)
    registers: str | None = None
    #: the sub-config the tower is built from when the checkpoint is a dual encoder (SigLIP's ``vision_config``)
    config_key: str | None = None
    #: ``image_embeds``: ``"pooler_output"`` (the model's own pooled / projected output) or ``"cls"``
    #: (the CLS token of ``last_hidden_state``, i.e. after the final norm, for ViTs without a trained pooler)
    embedding: str = "pooler_output"
    #: extra ``from_pretrained`` keywords (ViT: no randomly initialised pooler)
    load_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _encoder(model_type: str, title: str, model_class: str, tiny: str, encoder: ImageEncoder) -> ModelFamily:
    return ModelFamily(model_type, title, model_class=model_class, processor_class="AutoImageProcessor",
                       language_model=False, prompt_styles=(), vision_cls=encoder.cls_token, tiny=tiny,
                       backbone="image_encoder", encoder=encoder)


_VIT_TOWER = "encoder.layers"  # CLIP / SigLIP vision towers (transformers 5.x module tree)
IMAGE_ENCODER_FAMILIES: dict[str, ModelFamily] = {f.model_type: f for f in (
    _encoder("dinov2", "DINOv2", "Dinov2Model", "dinov2", ImageEncoder("encoder.layer", cls_token=True)),
    _encoder("dinov2_with_registers", "DINOv2 with registers", "Dinov2WithRegistersModel", "dinov2_registers",
             ImageEncoder("encoder.layer", cls_token=True, registers="num_register_tokens")),
    _encoder("dinov3_vit", "DINOv3 ViT", "DINOv3ViTModel", "dinov3_vit",
             ImageEncoder("model.layer", cls_token=True, registers="num_register_tokens")),
    _encoder("dinov3_convnext", "DINOv3 ConvNeXt", "DINOv3ConvNextModel", "dinov3_convnext",
             ImageEncoder("model.stages")),
    _encoder("vit", "ViT", "ViTModel", "vit", ImageEncoder("layers", cls_token=True, embedding="cls",
                                                          load_options=MappingProxyType({"add_pooling_layer": False}))),
    _encoder("siglip", "SigLIP (vision tower)", "SiglipVisionModel", "siglip",
             ImageEncoder(_VIT_TOWER, config_key="vision_config")),
    _encoder("siglip_vision_model", "SigLIP vision model", "SiglipVisionModel", "siglip_vision",
             ImageEncoder(_VIT_TOWER)),
    _encoder("siglip2", "SigLIP 2 (vision tower)", "Siglip2VisionModel", "siglip2",
             ImageEncoder(_VIT_TOWER, config_key="vision_config")),
    _encoder("clip_vision_model", "CLIP vision model", "CLIPVisionModel", "clip_vision",
             ImageEncoder(_VIT_TOWER, cls_token=True)),
    _encoder("convnext", "ConvNeXt", "ConvNextModel", "convnext", ImageEncoder("encoder.stages")),
    _encoder("convnextv2", "ConvNeXt V2", "ConvNextV2Model", "convnextv2", ImageEncoder("encoder.stages")),
    _encoder("swin", "Swin Transformer", "SwinModel", "swin", ImageEncoder("encoder.layers")),
    _encoder("swinv2", "Swin Transformer V2", "Swinv2Model", "swinv2", ImageEncoder("encoder.layers")),
)}
FAMILIES.update(IMAGE_ENCODER_FAMILIES)


def _dinov2(hidden: int, layers: int, heads: int, swiglu: bool = False, image_size: int = 518) -> dict[str, Any]:
    # facebook/dinov2-{small,base,large,giant} config.json: ViT/14, 518 px position grid, MLP ratio 4
    # (giant: SwiGLU MLP), layerscale 1.0, no register tokens.
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads, "mlp_ratio": 4,
            "patch_size": 14, "image_size": image_size, "layer_norm_eps": 1e-6, "layerscale_value": 1.0,
            "qkv_bias": True, "use_swiglu_ffn": swiglu}


def _siglip_so400m(image_size: int) -> dict[str, Any]:
    # google/siglip-so400m-patch14-384 config.json: text and vision towers both 1152 wide, 27 layers,
    # MLP 4304, 16 heads; the preset builds (and loads) only the vision tower (SiglipVisionModel).
    tower = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
    return {"text_config": dict(tower), "vision_config": {**tower, "patch_size": 14, "image_size": image_size}}


_ENCODER = {"lm_layers": None, "lm_width": None, "loader": "image_encoder"}
IMAGE_ENCODER_MODELS: dict[str, ModelRecord] = {r.name: r for r in (
    # microsoft/rad-dino config.json (and rad-dino-maira-2's): Dinov2Model, ViT-B/14, 518 px; model card:
    # DINOv2 trained on chest X-rays, its image processor resizes and centre-crops to 518 px.
    ModelRecord("rad-dino", "microsoft/rad-dino", "dinov2", _dinov2(768, 12, 12), 86.6e6, vision_layers=12,
                vision_width=768, summary="RAD-DINO: DINOv2 ViT-B/14 for chest X-rays", memory="~0.35 GB in float32",
                **_ENCODER),
    # owkin/phikon config.json: ViTModel, ViT-B/16 at 224 px (iBOT on 40M pan-cancer histology tiles);
    # the model card reads the CLS token of last_hidden_state, which is this preset's image_embeds.
    ModelRecord("phikon", "owkin/phikon", "vit", {
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "patch_size": 16, "image_size": 224, "layer_norm_eps": 1e-12, "qkv_bias": True,
    }, 85.8e6, vision_layers=12, vision_width=768, summary="Phikon: iBOT ViT-B/16 for histology",
        memory="~0.35 GB in float32", **_ENCODER),
    # owkin/phikon-v2: model card and paper (arXiv 2409.09173): DINOv2 ViT-L on 460M histology tiles, 224 px,
    # 1024-wide, 24 layers. NOT verified here against its config.json (no copy was reachable): the patch
    # size (16, per the paper's "ViT-L/16") and the absence of register tokens are from the paper.
    ModelRecord("phikon-v2", "owkin/phikon-v2", "dinov2", _dinov2(1024, 24, 16, image_size=224) | {"patch_size": 16},
                303e6, vision_layers=24, vision_width=1024, summary="Phikon-v2: DINOv2 ViT-L/16 for histology",
                memory="~1.2 GB in float32", notes="patch size from the paper, config.json not verified", **_ENCODER),
    ModelRecord("dinov2-s", "facebook/dinov2-small", "dinov2", _dinov2(384, 12, 6), 22.1e6, vision_layers=12,
                vision_width=384, summary="DINOv2 ViT-S/14", memory="~0.09 GB in float32", **_ENCODER),
    ModelRecord("dinov2-b", "facebook/dinov2-base", "dinov2", _dinov2(768, 12, 12), 86.6e6, vision_layers=12,
                vision_width=768, summary="DINOv2 ViT-B/14", memory="~0.35 GB in float32", **_ENCODER),
    ModelRecord("dinov2-l", "facebook/dinov2-large", "dinov2", _dinov2(1024, 24, 16), 304e6, vision_layers=24,
                vision_width=1024, summary="DINOv2 ViT-L/14", memory="~1.2 GB in float32", **_ENCODER),
    ModelRecord("dinov2-g", "facebook/dinov2-giant", "dinov2", _dinov2(1536, 40, 24, swiglu=True), 1.14e9,
                vision_layers=40, vision_width=1536, summary="DINOv2 ViT-g/14", memory="~4.5 GB in float32",
                **_ENCODER),
    # google/medsiglip-448 model card: the SigLIP-so400m architecture (400M vision + 400M text encoder) at
    # 448 px, trained on medical images. The tower numbers are so400m's (config.json not verified here).
    ModelRecord("medsiglip-448", "google/medsiglip-448", "siglip", _siglip_so400m(448), 429e6, vision_layers=27,
                vision_width=1152, summary="MedSigLIP-448: SigLIP so400m vision tower for medical images",
                memory="~1.7 GB in float32 (vision tower)", **_ENCODER),
    ModelRecord("siglip-so400m", "google/siglip-so400m-patch14-384", "siglip", _siglip_so400m(384), 428e6,
                vision_layers=27, vision_width=1152, summary="SigLIP so400m/14 vision tower at 384 px",
                memory="~1.7 GB in float32 (vision tower)", **_ENCODER),
)}
MODELS.update(IMAGE_ENCODER_MODELS)


# ---------------------------------------------------------------------------------------------- VLM geometry
# (issue 23, point 5) Modern VLMs recorded for ``medprobe layers`` / ``medprobe plan`` only (no ``loader``: load
# them as ``hf:<source>``). Numbers from the cited config.json files, read from public mirrors of them; a
# record says where a number could not be checked. Their model types have no family record yet, so they
# take the generic chat-template family.
def _qwen_text(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
               **more: Any) -> dict[str, Any]:
    return {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-6, **more}


_GEMMA3_4B = {
    # google/gemma-3-4b-it config.json (mirrored as mlx-community/gemma-3-4b-it-bf16, unsloth/gemma-3-4b-pt):
    # Gemma 3 decoder 2560 wide, 34 layers, 8 heads / 4 KV heads of 256; SigLIP-so400m tower at 896 px, no head.
    "mm_tokens_per_image": 256, "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
    "text_config": {"vocab_size": 262208, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 1024,
                    "query_pre_attn_scalar": 256, "max_position_embeddings": 131072},
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                      "num_attention_heads": 16, "patch_size": 14, "image_size": 896, "vision_use_head": False},
}
_VLM_GEOMETRY = {"loader": None}
VLM_GEOMETRY_MODELS: dict[str, ModelRecord] = {r.name: r for r in (
    # Qwen/Qwen2.5-VL-7B-Instruct config.json (and the Qwen AWQ copy): Qwen2.5-7B decoder; its vision_config
    # states hidden_size 1280 and patch 14, the rest are Qwen2_5_VLVisionConfig's defaults (32 blocks, MLP
    # 3420, 16 heads, windowed attention except blocks 7/15/23/31, out_hidden_size 3584).
    ModelRecord("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", {
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "tie_word_embeddings": False,
        "text_config": _qwen_text(3584, 18944, 28, 28, 4, 152064, max_position_embeddings=128000,
                                  tie_word_embeddings=False,
                                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                   "mrope_section": [16, 24, 24]}),
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                          "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
                          "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
    }, 8.29e9, 28, 3584, 32, 1280, **_VLM_GEOMETRY),
    # Qwen/Qwen3-VL-8B-Instruct config.json (read from a fine-tune's copy, Steinate/Cortex, and the GGUF
    # metadata Ollama publishes): Qwen3-8B decoder (36 layers, 4096 wide, head_dim 128); 27-block SigLIP-2-style
    # tower 1152 wide, 16 px patches, DeepStack features from blocks 8/16/24.
    ModelRecord("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl", {
        "image_token_id": 151655, "video_token_id": 151656, "tie_word_embeddings": False,
        "text_config": _qwen_text(4096, 12288, 36, 32, 8, 151936, head_dim=128, max_position_embeddings=262144,
                                  rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                                   "mrope_section": [24, 20, 20], "mrope_interleaved": True}),
        "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                          "out_hidden_size": 4096, "patch_size": 16, "spatial_merge_size": 2,
                          "temporal_patch_size": 2, "num_position_embeddings": 2304,
                          "deepstack_visual_indexes": [8, 16, 24]},
    }, 8.77e9, 36, 4096, 27, 1152, **_VLM_GEOMETRY),
    ModelRecord("gemma-3-4b", "google/gemma-3-4b-it", "gemma3", _GEMMA3_4B, 4.30e9, 34, 2560, 27, 1152,
                **_VLM_GEOMETRY),
    # google/medgemma-4b-it model card: Gemma 3 4B with a medically tuned SigLIP tower; same geometry
    # (its config.json not checked here beyond the model card's statement).
    ModelRecord("medgemma-4b", "google/medgemma-4b-it", "gemma3", _GEMMA3_4B, 4.30e9, 34, 2560, 27, 1152,
                notes="geometry of gemma-3-4b per the model card", **_VLM_GEOMETRY),
    # OpenGVLab/InternVL3-8B-hf: InternViT-300M (24 layers, 1024 wide, 448 px, patch 14) + Qwen2.5-7B decoder,
    # pixel shuffle 0.5. Numbers from the InternVL3-38B-hf / tiny internvl configs' layout and the InternVL3
    # model card (InternViT-300M-448px-V2.5 + Qwen2.5-7B); the 8B config.json itself was not reachable here.
    ModelRecord("internvl3-8b", "OpenGVLab/InternVL3-8B-hf", "internvl", {
        "downsample_ratio": 0.5, "image_seq_length": 256, "image_token_id": 151667, "projector_hidden_act": "gelu",
        "tie_word_embeddings": False,  # Qwen2.5-7B's LM head is its own matrix
        "text_config": _qwen_text(3584, 18944, 28, 28, 4, 151674, model_type="qwen2", max_position_embeddings=32768,
                                  tie_word_embeddings=False),
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                          "num_attention_heads": 16, "image_size": [448, 448], "patch_size": [14, 14]},
    }, 7.94e9, 28, 3584, 24, 1024, notes="config.json of the 8B checkpoint not verified", **_VLM_GEOMETRY),
    # meta-llama/Llama-3.2-11B-Vision(-Instruct) config.json: 40 decoder layers (32 self-attention + 8
    # cross-attention at 3, 8, ..., 38); vision encoder 32 local + 8 global layers, 1280 wide, 560 px tiles.
    ModelRecord("llama-3.2-11b-vision", "meta-llama/Llama-3.2-11B-Vision-Instruct", "mllama", {
        "image_token_index": 128256,
        "text_config": {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38], "max_position_embeddings": 131072,
                        "rms_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                          "num_global_layers": 8, "num_attention_heads": 16, "image_size": 560, "patch_size": 14,
                          "max_num_tiles": 4, "vision_output_dim": 7680,
                          "intermediate_layers_indices": [3, 7, 15, 23, 30]},
    }, 10.67e9, 40, 4096, 32, 1280, notes="vision layers: the 32 local ones; 8 global layers follow",
        **_VLM_GEOMETRY),
    # llava-hf/llava-onevision-qwen2-7b-ov-hf config.json: Qwen2-7B decoder; SigLIP-so400m tower with its last
    # layer dropped (26 layers, as the repository's discussion #4 notes), 384 px, anyres tiles.
    ModelRecord("llava-onevision-7b", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava_onevision", {
        "image_token_index": 151646, "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
        "text_config": _qwen_text(3584, 18944, 28, 28, 4, 152128, model_type="qwen2"),
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                          "num_hidden_layers": 26, "num_attention_heads": 16, "patch_size": 14, "image_size": 384,
                          "vision_use_head": False},
    }, 8.03e9, 28, 3584, 26, 1152, notes="vocab 152128 not checked against the config.json", **_VLM_GEOMETRY),
    # HuggingFaceTB/SmolVLM2-2.2B-Instruct: SmolVLM-Instruct's geometry (SmolLM2-1.7B decoder, SigLIP-so400m
    # at 384 px, pixel shuffle 3) as model type smolvlm; config.json not reachable here, numbers per the model
    # card and the SmolVLM-2.2B record above.
    ModelRecord("smolvlm2-2.2b", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "smolvlm", {
        "image_token_id": 49190, "scale_factor": 3,
        "text_config": {"model_type": "llama", "vocab_size": 49280, "hidden_size": 2048, "intermediate_size": 8192,
                        "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "max_position_embeddings": 16384, "rms_norm_eps": 1e-5},
        "vision_config": {**_SIGLIP_SO400M, "image_size": 384},
    }, 2.25e9, 24, 2048, 27, 1152, notes="config.json not verified", **_VLM_GEOMETRY),
)}
MODELS.update(VLM_GEOMETRY_MODELS)
