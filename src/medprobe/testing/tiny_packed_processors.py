"""Tiny savers of the families whose vision tower packs every image's patches into one sequence.

Qwen2-VL and the families built on its layout (Qwen2.5-VL, Qwen3-VL, Qwen3.5, LFM3-VL, EXAONE 4.5,
HyperCLOVA X, PaddleOCR-VL, VideoLLaMA3, Cosmos3-Edge) and GLM-4V's: ``grid_thw`` says how many
patches each image has, M-RoPE positions come from the processor's token types. Their processors
take a video processor, which needs torchvision; the savers save what a torchvision-free load sees.
Collected with the others in :data:`medprobe.testing.tiny_processors.SAVERS`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from medprobe.testing.tiny_models import tiny_tokenizer
from medprobe.testing.tiny_saving import chat_template, save_pair, shrunk_config, text_fields


_QWEN_SPECIALS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                  "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}


def _save_qwen(directory: str | Path, model_type: str, patch: int, image_processor: str = "Qwen2VLImageProcessorPil",
               **vision: Any) -> Path:
    """Qwen-VL layouts (Qwen2-VL and the families built on it): their processors need torchvision (video),
    so the tokenizer (with the chat template) and the PIL image processor are saved apart, as a
    torchvision-free load sees them."""
    import transformers

    processor_class = getattr(transformers, image_processor)
    tok = tiny_tokenizer(("<|im_start|>", "<|im_end|>"), named=_QWEN_SPECIALS, bos="<|endoftext|>",
                         eos="<|im_end|>", pad="<|endoftext|>", add_bos=False)
    tok.chat_template = chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    own = vision.pop("own_merging", False)  # the image processor's own merge and temporal sizes
    temporal = vision.get("temporal_patch_size", 2)
    merging = {} if own else {"merge_size": 2, **({"temporal_patch_size": temporal} if temporal else {})}
    pixels = processor_class(min_pixels=(2 * patch) ** 2, max_pixels=(6 * patch) ** 2, patch_size=patch, **merging)
    config = shrunk_config(model_type, text_config=text_fields(tok), vision_config={"patch_size": patch, **vision},
                           image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
                           vision_start_token_id=tok.vision_start_token_id,
                           vision_end_token_id=tok.vision_end_token_id)
    return save_pair(directory, config, tok, pixels)


def save_tiny_qwen2_vl(directory: str | Path) -> Path:
    """Qwen2-VL: packed 14 px patches, 2x2 merge, M-RoPE decoder."""
    return _save_qwen(directory, "qwen2_vl", 14)


def save_tiny_qwen2_5_vl(directory: str | Path) -> Path:
    """Qwen2.5-VL: window-attention tower on packed 14 px patches, 2x2 merge, M-RoPE decoder."""
    return _save_qwen(directory, "qwen2_5_vl", 14, fullatt_block_indexes=[1], window_size=56)


def save_tiny_qwen3_vl(directory: str | Path) -> Path:
    """Qwen3-VL: packed 16 px patches, deep-stack features from tower layer 0 into the decoder."""
    return _save_qwen(directory, "qwen3_vl", 16, deepstack_visual_indexes=[0])


def save_tiny_qwen3_vl_moe(directory: str | Path) -> Path:
    """Qwen3-VL-MoE: Qwen3-VL with a mixture-of-experts decoder."""
    return _save_qwen(directory, "qwen3_vl_moe", 16, deepstack_visual_indexes=[0])


def save_tiny_qwen3_5(directory: str | Path) -> Path:
    """Qwen3.5: Qwen3-VL's tower and processor, hybrid linear/full-attention decoder."""
    return _save_qwen(directory, "qwen3_5", 16)


def save_tiny_qwen3_5_moe(directory: str | Path) -> Path:
    """Qwen3.5-MoE: Qwen3.5 with a mixture-of-experts decoder."""
    return _save_qwen(directory, "qwen3_5_moe", 16)


def save_tiny_qwen4_exp(directory: str | Path) -> Path:
    """Qwen4 (experimental): Qwen3-VL's processor."""
    return _save_qwen(directory, "qwen4_exp", 16)


def save_tiny_lfm3_vl(directory: str | Path) -> Path:
    """LFM3-VL: Qwen2-VL's image processor and placeholders."""
    return _save_qwen(directory, "lfm3_vl", 16)


def save_tiny_exaone4_5(directory: str | Path) -> Path:
    """EXAONE 4.5: Qwen2-VL's image processor and placeholders."""
    return _save_qwen(directory, "exaone4_5", 14)


def save_tiny_hyperclovax_vision_v2(directory: str | Path) -> Path:
    """HyperCLOVA X Vision v2: Qwen2-VL's image processor and placeholders."""
    return _save_qwen(directory, "hyperclovax_vision_v2", 14)


def save_tiny_paddleocr_vl(directory: str | Path) -> Path:
    """PaddleOCR-VL: a Qwen-VL layout with its own PIL image processor and NaViT-style tower."""
    return _save_qwen(directory, "paddleocr_vl", 14, "PaddleOCRVLImageProcessorPil", own_merging=True)


def save_tiny_video_llama_3(directory: str | Path) -> Path:
    """VideoLLaMA3: a Qwen-VL layout with its own PIL image processor."""
    return _save_qwen(directory, "video_llama_3", 14, "VideoLlama3ImageProcessorPil", own_merging=True)


def save_tiny_cosmos3_edge(directory: str | Path) -> Path:
    """Cosmos3-Edge: a Qwen-VL layout with its own PIL image processor."""
    return _save_qwen(directory, "cosmos3_edge", 16, "Cosmos3EdgeImageProcessorPil", temporal_patch_size=None)


def _save_glm(directory: str | Path, model_type: str, image_processor: str) -> Path:
    """GLM-4V layouts: packed 14 px patches (2x2 merge, images 28-84 px), 3-D RoPE decoder."""
    import transformers

    from medprobe.models.hf_loading import processor_without_video

    tok = tiny_tokenizer(("<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>"),
                         named={"image_token": "<|image|>", "video_token": "<|video|>"})
    pixels = getattr(transformers, image_processor)(size={"shortest_edge": 28 * 28, "longest_edge": 84 * 84},
                                                    patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = processor_without_video(model_type)(  # torchvision-free: no video processor
        image_processor=pixels, tokenizer=tok,
        chat_template=chat_template("<|begin_of_image|><|image|><|end_of_image|>"))
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_start_token_id", "<|begin_of_image|>"), ("image_end_token_id", "<|end_of_image|>"),
        ("video_start_token_id", "<|begin_of_video|>"), ("video_end_token_id", "<|end_of_video|>"))}
    config = shrunk_config(model_type, text_config=text_fields(tok), vision_config={"image_size": 56, "patch_size": 14},
                           image_token_id=tok.image_token_id, video_token_id=tok.video_token_id, **ids)
    return save_pair(directory, config, processor)


def save_tiny_glm4v(directory: str | Path) -> Path:
    """GLM-4V."""
    return _save_glm(directory, "glm4v", "Glm4vImageProcessorPil")


def save_tiny_glm4v_moe(directory: str | Path) -> Path:
    """GLM-4V-MoE (GLM-4.5V): GLM-4V with a mixture-of-experts decoder."""
    return _save_glm(directory, "glm4v_moe", "Glm4vImageProcessorPil")


def save_tiny_glm46v(directory: str | Path) -> Path:
    """GLM-4.6V: GLM-4V's layout with its own image processor."""
    return _save_glm(directory, "glm46v", "Glm46VImageProcessorPil")


def save_tiny_glm5_next(directory: str | Path) -> Path:
    """GLM-5-Next: GLM-4V's layout with its own image processor."""
    return _save_glm(directory, "glm5_next", "Glm5NextImageProcessorPil")


def save_tiny_hy_v4_vl(directory: str | Path) -> Path:
    """Hunyuan V4-VL: a Qwen-VL layout with its own PIL image processor."""
    return _save_qwen(directory, "hy_v4_vl", 16, "HYV4VLImageProcessorPil", own_merging=True)



def save_tiny_dots3_note(directory: str | Path) -> Path:
    """dots3_note: Qwen2-VL's PIL image processor (14 px patches, 2x2 merge, no temporal patching) in front of
    a packed-patch MoE tower; an audio tower beside it, not read. Its shrunk default config is inconsistent
    (adapter widths, audio head size, per-layer lists of the full depth), so the saver sets those and cuts
    the saved per-layer lists to the shrunk depth."""
    import transformers

    from medprobe.models.hf_loading import processor_without_video
    from medprobe.testing.tiny_families import tiny_config

    tok = tiny_tokenizer(("<|imgpad|>", "<|video_pad|>", "<|audio_comp_pad|>", "<|img|>", "<|endofimg|>"))
    pixels = transformers.Qwen2VLImageProcessorPil(min_pixels=28**2, max_pixels=84**2, patch_size=14, merge_size=2,
                                                   temporal_patch_size=1)
    processor = processor_without_video("dots3_note")(  # torchvision-free: no video processor
        image_processor=pixels, tokenizer=tok, feature_extractor=transformers.Dots3NoteFeatureExtractor(),
        chat_template=chat_template("<|img|><|imgpad|><|endofimg|>"))
    config = tiny_config("dots3_note")  # not rebuilt from a dict: its per_layer_config keeps full-depth indices
    for name, value in text_fields(tok).items():
        setattr(config.text_config, name, value)
    config.image_token_id, config.video_token_id, config.audio_token_id = tok.convert_tokens_to_ids(
        ["<|imgpad|>", "<|video_pad|>", "<|audio_comp_pad|>"])
    config.vision_config.adapter_in_dim = config.vision_config.adapter_out_dim = config.text_config.hidden_size
    config.audio_config.adapter_input_size = config.audio_config.adapter_out_dim = config.text_config.hidden_size
    config.audio_config.head_dim = 16
    path = save_pair(directory, config, processor)
    saved = json.loads((path / "config.json").read_text())
    for sub in ("text_config", "vision_config"):
        values, depth = saved[sub], saved[sub]["num_hidden_layers"]
        for key in [key for key in values if key.endswith("layer_types")]:
            values[key] = values[key][:depth]
        values["per_layer_config"] = {k: v for k, v in (values.get("per_layer_config") or {}).items()
                                      if int(k) < depth} or None
    (path / "config.json").write_text(json.dumps(saved, indent=2))
    return path


def save_tiny_ernie4_5_vl_moe(directory: str | Path) -> Path:
    """ERNIE 4.5-VL-MoE: packed 14 px patches (2x2 merge, images 28-84 px), 3-D RoPE MoE decoder. Its
    processor reads its video processor (torchvision) when saved, so the tokenizer (with the chat
    template) and the PIL image processor are saved apart, as for the Qwen layouts. The shrunk default's
    M-RoPE sections are uneven in height and width, which its rotary code cannot stack: [3, 3, 2] here."""
    import transformers

    named = {"image_token": "<|IMAGE_PLACEHOLDER|>", "image_start_token": "<|IMAGE_START|>",
             "image_end_token": "<|IMAGE_END|>", "video_token": "<|VIDEO_PLACEHOLDER|>",
             "video_start_token": "<|VIDEO_START|>", "video_end_token": "<|VIDEO_END|>"}
    tok = tiny_tokenizer(named=named)
    tok.chat_template = chat_template("<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>")
    pixels = transformers.Ernie4_5_VLMoeImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 84 * 84},
                                                          patch_size=14, merge_size=2)
    rope = {"rope_theta": 500000.0, "rope_type": "default", "mrope_section": [3, 3, 2]}
    config = shrunk_config("ernie4_5_vl_moe", text_config=text_fields(tok, rope_parameters=rope),
                           **{f"{name}_id": getattr(tok, f"{name}_id") for name in named})
    return save_pair(directory, config, tok, pixels)
