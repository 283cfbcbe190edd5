"""Tiny random models *with their real processors* of the image-text-to-text families, saved to disk.

Why: ``hf:DIR`` runs the family's own processor (its PIL image processor: no torchvision), chat
template or plain prompt, and model together; only a saved pair tests that whole path (image-token
expansion, crops and tiles, positions, padding). Each ``save_tiny_<family>(directory)`` writes a
model whose config agrees with its processor -- vocabulary, image token ids, image size and patch
size, so every image becomes as many tokens as the model expects -- built from the family's shrunk
default config (:func:`~medprobe.testing.tiny_saving.shrunk_config`) with small images (28-56 px,
14 px patches); the packed-patch layouts (Qwen, GLM) are in :mod:`medprobe.testing.tiny_packed_processors`.
:data:`SAVERS` maps ``model_type`` to its saver; the contract test
(``tests/models/test_hf_full_path.py``) runs each through ``create_backbone("hf:DIR")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from medprobe.testing import tiny_packed_processors
from medprobe.testing.tiny_models import tiny_tokenizer
from medprobe.testing.tiny_saving import chat_template, save_pair, shrunk_config, text_fields


# ------------------------------------------------------------------------------------------ families
def save_tiny_gemma3(directory: str | Path) -> Path:
    """Gemma 3: SigLIP tower (56 px, 16 patches) average-pooled to 4 soft tokens between BOI/EOI."""
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    tok = tiny_tokenizer(named={"boi_token": "<start_of_image>", "image_token": "<image_soft_token>",
                                "eoi_token": "<end_of_image>"})
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 56, "width": 56}),
                                tokenizer=tok, image_seq_length=4, chat_template=chat_template("<start_of_image>"))
    config = shrunk_config("gemma3", text_config=text_fields(tok), vision_config={"image_size": 56, "patch_size": 14},
                           mm_tokens_per_image=4, image_token_index=tok.image_token_id,
                           boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id)
    return save_pair(directory, config, processor)


def save_tiny_paligemma(directory: str | Path) -> Path:
    """PaliGemma: no chat template (medprobe falls back to the plain prompt); the processor puts the
    ``<image>`` tokens (28 px, 4 patches) and BOS before the prompt itself."""
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    tok = tiny_tokenizer(named={"image_token": "<image>"})
    image_processor = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    image_processor.image_seq_length = 4
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    config = shrunk_config("paligemma", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14},
                           image_token_index=tok.image_token_id, vocab_size=len(tok), projection_dim=32,
                           hidden_size=32)
    return save_pair(directory, config, processor)


def save_tiny_blip_2(directory: str | Path) -> Path:
    """BLIP-2: no chat template (plain prompt); the processor puts the Q-Former's 4 query tokens first."""
    from transformers import Blip2Processor, BlipImageProcessorPil

    tok = tiny_tokenizer()  # the processor adds its "<image>" token (with a named one it fails, transformers 5.24)
    processor = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": 28, "width": 28}),
                               tokenizer=tok, num_query_tokens=4)
    config = shrunk_config("blip-2", text_config=text_fields(tok), vision_config={"image_size": 28, "patch_size": 14},
                           qformer_config={"encoder_hidden_size": 32}, num_query_tokens=4,
                           image_token_index=tok.convert_tokens_to_ids("<image>"))
    return save_pair(directory, config, processor)


def save_tiny_instructblip(directory: str | Path) -> Path:
    """InstructBLIP: as BLIP-2, with the prompt also given to the Q-Former (its own tokenizer)."""
    from transformers import BlipImageProcessorPil, InstructBlipProcessor

    tok = tiny_tokenizer()  # the processor adds its "<image>" token (with a named one it fails, transformers 5.24)
    qformer_tok = tiny_tokenizer(add_bos=False)
    processor = InstructBlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 28, "width": 28}),
                                      tokenizer=tok, qformer_tokenizer=qformer_tok, num_query_tokens=4)
    config = shrunk_config("instructblip", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14},
                           qformer_config={"encoder_hidden_size": 32, "vocab_size": len(qformer_tok)},
                           num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    return save_pair(directory, config, processor)


def save_tiny_vipllava(directory: str | Path) -> Path:
    """VipLLaVA: CLIP tower (28 px, CLS + 4 patches) read at two layers, LLaVA's processor."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tok = tiny_tokenizer(named={"image_token": "<image>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1, chat_template=chat_template("<image>"))
    config = shrunk_config("vipllava", text_config=text_fields(tok), vision_config={"image_size": 28, "patch_size": 14},
                           vision_feature_layer=[-2, -1], image_token_index=tok.image_token_id)
    return save_pair(directory, config, processor)


def save_tiny_llava_onevision(directory: str | Path) -> Path:
    """LLaVA-OneVision: SigLIP tower on 28 px crops of a 28/56 px any-resolution grid."""
    from transformers import LlavaOnevisionImageProcessorPil

    from medprobe.models.hf_loading import processor_without_video

    tok = tiny_tokenizer(named={"image_token": "<image>", "video_token": "<video>"})
    pinpoints = [[28, 56], [56, 28], [56, 56]]
    processor = processor_without_video("llava_onevision")(  # torchvision-free: no video processor
        image_processor=LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                                        image_grid_pinpoints=pinpoints),
        tokenizer=tok, num_image_tokens=4, vision_feature_select_strategy="full",
        chat_template=chat_template("<image>"))
    config = shrunk_config("llava_onevision", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14}, image_grid_pinpoints=pinpoints,
                           image_token_index=tok.image_token_id, video_token_index=tok.video_token_id)
    return save_pair(directory, config, processor)


def save_tiny_internvl(directory: str | Path) -> Path:
    """InternVL: 56 px tiles (up to 4, plus a thumbnail when split) of 16 patches, pixel-shuffled to 4 tokens."""
    from transformers import GotOcr2ImageProcessorPil

    from medprobe.models.hf_loading import processor_without_video

    tok = tiny_tokenizer(named={"start_image_token": "<img>", "end_image_token": "</img>",
                                "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    image_processor = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True,
                                               min_patches=1, max_patches=4)
    processor = processor_without_video("internvl")(  # torchvision-free: no video processor
        image_processor=image_processor, tokenizer=tok, image_seq_length=4,
        chat_template=chat_template("<IMG_CONTEXT>"))
    config = shrunk_config("internvl", text_config=text_fields(tok),
                           vision_config={"image_size": [56, 56], "patch_size": [14, 14]},
                           image_token_id=tok.context_image_token_id, image_seq_length=4)
    return save_pair(directory, config, processor)


def save_tiny_aya_vision(directory: str | Path) -> Path:
    """Aya Vision: SigLIP tower on 56 px tiles (up to 4, plus a thumbnail), 2x2 pixel shuffle."""
    from transformers import AyaVisionProcessor, GotOcr2ImageProcessorPil

    names = ("<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL")
    tok = tiny_tokenizer(names)
    image_processor = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True,
                                               min_patches=1, max_patches=4)
    processor = AyaVisionProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14, img_size=56,
                                   downsample_factor=2, chat_template=chat_template("<image>"))
    config = shrunk_config("aya_vision", text_config=text_fields(tok),
                           vision_config={"image_size": 56, "patch_size": 14},
                           downsample_factor=2, image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"))
    return save_pair(directory, config, processor)


def save_tiny_mllama(directory: str | Path) -> Path:
    """Mllama (Llama 3.2 Vision): 28 px tiles (up to 4 by aspect ratio) through local and global vision
    stacks, read by cross-attention layers of the decoder (layer 1 of 3)."""
    from transformers import MllamaImageProcessorPil, MllamaProcessor

    tok = tiny_tokenizer(("<|image|>", "<|python_tag|>"))
    processor = MllamaProcessor(image_processor=MllamaImageProcessorPil(size={"height": 28, "width": 28},
                                                                        max_image_tiles=4),
                                tokenizer=tok, chat_template=chat_template("<|image|>"))
    config = shrunk_config(
        "mllama", text_config=text_fields(tok, num_hidden_layers=3, cross_attention_layers=[1]),
        vision_config={"image_size": 28, "patch_size": 14, "max_num_tiles": 4, "num_hidden_layers": 2,
                       "num_global_layers": 1, "intermediate_layers_indices": [0], "vision_output_dim": 64},
        image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    return save_pair(directory, config, processor)


def save_tiny_janus(directory: str | Path) -> Path:
    """Janus: SigLIP tower (28 px, 4 patches) for understanding; its VQ generation head is not read."""
    from transformers import JanusImageProcessorPil, JanusProcessor

    tok = tiny_tokenizer(named={"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>",
                                "eoi_token": "<end_of_image>"})
    processor = JanusProcessor(image_processor=JanusImageProcessorPil(size={"height": 28, "width": 28}),
                               tokenizer=tok, num_image_tokens=4, chat_template=chat_template("<image_placeholder>"))
    config = shrunk_config("janus", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14, "num_image_tokens": 4},
                           image_token_id=tok.image_token_id)
    return save_pair(directory, config, processor)


def save_tiny_deepseek_vl(directory: str | Path) -> Path:
    """DeepSeek-VL: SigLIP tower (28 px, 4 patches), MLP aligner, LLaMA decoder."""
    from transformers import DeepseekVLImageProcessorPil, DeepseekVLProcessor

    tok = tiny_tokenizer(named={"image_token": "<image_placeholder>"})
    processor = DeepseekVLProcessor(image_processor=DeepseekVLImageProcessorPil(size={"height": 28, "width": 28}),
                                    tokenizer=tok, num_image_tokens=4,
                                    chat_template=chat_template("<image_placeholder>"))
    config = shrunk_config("deepseek_vl", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14},
                           image_token_id=tok.image_token_id)
    return save_pair(directory, config, processor)


def save_tiny_deepseek_vl_hybrid(directory: str | Path) -> Path:
    """DeepSeek-VL hybrid: SigLIP tower (28 px, 4 patches) beside a SAM-style high-resolution tower
    (64 px, 16 px patches) whose features join the same 4 image tokens; LLaMA decoder. ``vision.k``
    is the SigLIP tower's (the one built from ``vision_config``)."""
    from transformers import DeepseekVLHybridImageProcessorPil, DeepseekVLHybridProcessor

    tok = tiny_tokenizer(named={"image_token": "<image_placeholder>"})
    pixels = DeepseekVLHybridImageProcessorPil(size={"height": 28, "width": 28},
                                               high_res_size={"height": 64, "width": 64})
    processor = DeepseekVLHybridProcessor(image_processor=pixels, tokenizer=tok, num_image_tokens=4,
                                          chat_template=chat_template("<image_placeholder>"))
    config = shrunk_config("deepseek_vl_hybrid", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14},
                           high_res_vision_config={"image_size": 64, "patch_size": 16, "global_attn_indexes": [1],
                                                   "window_size": 2, "output_channels": 16, "mlp_dim": 64},
                           image_token_id=tok.image_token_id)
    return save_pair(directory, config, processor)


def save_tiny_ovis2(directory: str | Path) -> Path:
    """Ovis2: AIMv2-style tower on 28 px crops (up to 4, plus the whole image), visual-token table."""
    from transformers import Ovis2ImageProcessorPil, Ovis2Processor

    indicators = ("<IMG_START>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>")
    tok = tiny_tokenizer(("<image>", "<IMG_ATOM>", *indicators))
    image_processor = Ovis2ImageProcessorPil(size={"height": 28, "width": 28}, crop_to_patches=True, min_patches=1,
                                             max_patches=4)
    processor = Ovis2Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                               chat_template=chat_template("<image>"))
    config = shrunk_config("ovis2", text_config=text_fields(tok), vision_config={"image_size": 28, "patch_size": 14},
                           image_token_id=tok.convert_tokens_to_ids("<IMG_ATOM>"),
                           visual_indicator_token_ids=tok.convert_tokens_to_ids(list(indicators)))
    return save_pair(directory, config, processor)


def save_tiny_video_llava(directory: str | Path) -> Path:
    """Video-LLaVA: CLIP image tower (28 px, CLS + 4 patches; a video tower beside it, not read)."""
    from transformers import VideoLlavaImageProcessor

    from medprobe.models.hf_loading import processor_without_video

    tok = tiny_tokenizer(named={"image_token": "<image>", "video_token": "<video>"})
    image_processor = VideoLlavaImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = processor_without_video("video_llava")(  # torchvision-free: no video processor
        image_processor=image_processor, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=chat_template("<image>"))
    config = shrunk_config("video_llava", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14},
                           image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
                           image_seq_length=4)
    return save_pair(directory, config, processor)


def save_tiny_llava_next_video(directory: str | Path) -> Path:
    """LLaVA-NeXT-Video: LLaVA-NeXT's 28 px crops on a 28/56 px grid, for images."""
    from transformers import LlavaNextImageProcessorPil

    from medprobe.models.hf_loading import processor_without_video

    tok = tiny_tokenizer(named={"image_token": "<image>", "video_token": "<video>"})
    pinpoints = [[28, 56], [56, 28], [56, 56]]
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                 image_grid_pinpoints=pinpoints)
    processor = processor_without_video("llava_next_video")(  # torchvision-free: no video processor
        image_processor=image_processor, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=chat_template("<image>"))
    config = shrunk_config("llava_next_video", text_config=text_fields(tok),
                           vision_config={"image_size": 28, "patch_size": 14}, image_grid_pinpoints=pinpoints,
                           image_token_index=tok.image_token_id, video_token_index=tok.video_token_id)
    return save_pair(directory, config, processor)


def save_tiny_qianfan_ocr(directory: str | Path) -> Path:
    """Qianfan-OCR: InternVL's layout (56 px tiles of 16 patches, pixel-shuffled to 4 tokens)."""
    from transformers import GotOcr2ImageProcessorPil, QianfanOCRProcessor

    tok = tiny_tokenizer(("<image>",), named={"start_image_token": "<img>", "end_image_token": "</img>",
                                              "context_image_token": "<IMG_CONTEXT>"})
    image_processor = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True,
                                               min_patches=1, max_patches=4)
    processor = QianfanOCRProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                                    chat_template=chat_template("<image>"))
    config = shrunk_config("qianfan_ocr", text_config=text_fields(tok),
                           vision_config={"image_size": [56, 56], "patch_size": [14, 14]},
                           image_token_id=tok.context_image_token_id, image_seq_length=4)
    return save_pair(directory, config, processor)


def save_tiny_blip(directory: str | Path) -> Path:
    """BLIP (captioning): ViT tower (28 px, CLS + 4 patches) read by the BERT-style text decoder's
    cross-attention; no image tokens in the prompt, no chat template (plain prompt)."""
    from transformers import BlipImageProcessorPil, BlipProcessor

    tok = tiny_tokenizer(add_bos=False)
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 28, "width": 28}), tokenizer=tok)
    config = shrunk_config("blip", text_config=text_fields(tok, sep_token_id=tok.eos_token_id),
                           vision_config={"image_size": 28, "patch_size": 14})
    return save_pair(directory, config, processor)


def save_tiny_lighton_ocr(directory: str | Path) -> Path:
    """LightOnOCR: Pixtral tower on images at their own aspect ratio (up to 56 px, 14 px patches, one
    packed sequence for all images), 2x2 merge."""
    from transformers import LightOnOcrProcessor, PixtralImageProcessorPil

    tok = tiny_tokenizer(named={"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]",
                                "image_end_token": "[IMG_END]"})
    processor = LightOnOcrProcessor(image_processor=PixtralImageProcessorPil(size={"longest_edge": 56}, patch_size=14),
                                    tokenizer=tok, patch_size=14, spatial_merge_size=2,
                                    chat_template=chat_template("[IMG]"))
    config = shrunk_config("lighton_ocr", text_config=text_fields(tok),
                           vision_config={"image_size": 56, "patch_size": 14, "head_dim": 16},
                           spatial_merge_size=2, image_token_id=tok.image_token_id)
    return save_pair(directory, config, processor)


def save_tiny_got_ocr2(directory: str | Path) -> Path:
    """GOT-OCR2: SAM-style windowed ViT (128 px in 2 px patches: a 64x64 map), two stride-2 convolutions
    to the 256 image tokens its processor always writes; no chat template (plain prompt)."""
    from transformers import GotOcr2ImageProcessorPil, GotOcr2Processor

    tok = tiny_tokenizer(("<img>", "</img>", "<imgpad>", "<|im_start|>", "<|im_end|>"))
    processor = GotOcr2Processor(image_processor=GotOcr2ImageProcessorPil(size={"height": 128, "width": 128}),
                                 tokenizer=tok)
    config = shrunk_config("got_ocr2", text_config=text_fields(tok),
                           vision_config={"image_size": 128, "patch_size": 2, "global_attn_indexes": [1],
                                          "window_size": 8, "mlp_dim": 64, "output_channels": 32},
                           image_token_index=tok.convert_tokens_to_ids("<imgpad>"), image_seq_length=256)
    return save_pair(directory, config, processor)


def save_tiny_pp_chart2table(directory: str | Path) -> Path:
    """PP-Chart2Table: GOT-OCR2's model (as :func:`save_tiny_got_ocr2`); its chat template writes the 256
    image tokens, its processor expands nothing."""
    from transformers import PPChart2TableImageProcessorPil, PPChart2TableProcessor

    tok = tiny_tokenizer(("<img>", "</img>", "<imgpad>", "<|im_start|>", "<|im_end|>"))
    pixels = PPChart2TableImageProcessorPil(size={"height": 128, "width": 128})
    processor = PPChart2TableProcessor(image_processor=pixels, tokenizer=tok,
                                       chat_template=chat_template("<img>" + "<imgpad>" * 256 + "</img>"))
    config = shrunk_config("pp_chart2table", text_config=text_fields(tok),
                           vision_config={"image_size": 128, "patch_size": 2, "global_attn_indexes": [1],
                                          "window_size": 8, "mlp_dim": 64, "output_channels": 32},
                           image_token_index=tok.convert_tokens_to_ids("<imgpad>"), image_seq_length=256)
    return save_pair(directory, config, processor)


def save_tiny_kosmos_2(directory: str | Path) -> Path:
    """Kosmos-2: CLIP tower (28 px, CLS + 4 patches) resampled to the 64 image positions its processor
    writes (marked by ``image_embeds_position_mask``, no image token id); no chat template (plain)."""
    from transformers import CLIPImageProcessorPil, Kosmos2Processor

    tok = tiny_tokenizer(pad="<pad>")
    processor = Kosmos2Processor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 28},
                                                                       crop_size={"height": 28, "width": 28}),
                                 tokenizer=tok, num_patch_index_tokens=4)
    config = shrunk_config("kosmos-2", text_config=text_fields(tok, embed_dim=32, ffn_dim=64, attention_heads=2),
                           vision_config={"image_size": 28, "patch_size": 14}, latent_query_num=64)
    return save_pair(directory, config, processor)


def save_tiny_florence2(directory: str | Path) -> Path:
    """Florence-2: DaViT tower (64 px, downsampled 32x to 2x2, plus a pooled token: 5 image tokens) in
    front of a BART encoder-decoder, whose encoder reads the prompt; no chat template (plain)."""
    from transformers import CLIPImageProcessorPil, Florence2Processor

    tok = tiny_tokenizer(named={"image_token": "<image>"}, add_bos=False)
    pixels = CLIPImageProcessorPil(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64})
    pixels.image_seq_length = 5
    processor = Florence2Processor(image_processor=pixels, tokenizer=tok)
    config = shrunk_config("florence2", text_config=text_fields(tok, d_model=32),
                           vision_config={"embed_dim": [8, 16, 16, 32], "num_heads": [1, 2, 2, 2],
                                          "num_groups": [1, 2, 2, 2], "depths": [1, 1, 1, 1], "projection_dim": 32,
                                          "window_size": 2},
                           image_token_id=tok.image_token_id)
    return save_pair(directory, config, processor)


def save_tiny_smolvlm(directory: str | Path) -> Path:
    """SmolVLM: Idefics3's layout (SigLIP tower on 32 px, 8 px patches, pixel shuffle by 2 to 4 image
    tokens per view); images are split into a grid of crops plus a global view, so images of
    different shapes give prompts of different lengths. Its processor needs ``num2words``."""
    from transformers import SmolVLMImageProcessorPil

    from medprobe.models.hf_loading import processor_without_video

    size, patch, scale = 32, 8, 2
    grid_tokens = tuple(f"<row_{r}_col_{c}>" for r in range(1, 4) for c in range(1, 4))
    tok = tiny_tokenizer(grid_tokens, named={
        "image_token": "<image>", "fake_image_token": "<fake_token_around_image>", "video_token": "<video>",
        "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"})
    image_processor = SmolVLMImageProcessorPil(do_image_splitting=True, size={"longest_edge": 2 * size},
                                               max_image_size={"longest_edge": size})
    processor = processor_without_video("smolvlm")(  # torchvision-free: no video processor
        image_processor=image_processor, tokenizer=tok, video_processor=None,
        image_seq_len=(size // patch) ** 2 // scale**2,
        chat_template=chat_template("<image>"))
    config = shrunk_config("smolvlm", text_config=text_fields(tok), scale_factor=scale,
                           vision_config={"image_size": size, "patch_size": patch},
                           image_token_id=tok.image_token_id)
    return save_pair(directory, config, processor)


def save_tiny_granite_docling(directory: str | Path) -> Path:
    """Granite-Docling: SmolVLM-like tiles (32 px, 8 px patches, up to 4 plus a global view) through a
    SigLIP-style tower whose connector pixel-shuffles by 2 to 4 tokens per tile (coarse route only) and
    feeds deep-stack features of tower layer 0 into the decoder."""
    from transformers import GraniteDoclingImageProcessorPil, GraniteDoclingProcessor

    size, patch, scale = 32, 8, 2
    grid_tokens = tuple(f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5))
    tok = tiny_tokenizer(("<fake_token_around_image>", "<global-img>", *grid_tokens), named={"image_token": "<image>"})
    processor = GraniteDoclingProcessor(
        image_processor=GraniteDoclingImageProcessorPil(size={"height": size, "width": size}, max_patches=4),
        tokenizer=tok, image_seq_len=(size // patch) ** 2 // scale**2, chat_template=chat_template("<image>"))
    config = shrunk_config("granite_docling", text_config=text_fields(tok),
                           vision_config={"image_size": size, "patch_size": patch, "scale_factor": scale,
                                          "use_fine_route": False, "deepstack_visual_indexes": [0]},
                           image_token_id=tok.image_token_id)
    return save_pair(directory, config, processor)


#: ``{model_type: save_tiny_<family>}``
SAVERS: dict[str, Callable[[str | Path], Path]] = {
    name[len("save_tiny_"):].replace("blip_2", "blip-2").replace("kosmos_2", "kosmos-2"): saver
    for name, saver in {**dict(globals()), **vars(tiny_packed_processors)}.items() if name.startswith("save_tiny_")
}

#: families the full-path test holds to less than every pooling on either padding side, and why
FULL_PATH_LIMITS: dict[str, str] = {
    "blip": "no image tokens (cross-attention): image_mean / text_mean refused",
    "kosmos-2": "no image token id (a position mask): image_mean / text_mean refused",
    "florence2": "encoder-decoder: right padding only, left refused",
}
#: families with a processor here but no saver, and why (checked in tests/models/test_hf_full_path.py);
#: :func:`why_not_saved` finds the other reasons (no processor, or one that needs torchvision) by itself
NO_SAVER: dict[str, str] = {
    "fuyu": "transformers' Fuyu processor fails with its PIL image processor (patchify_image)",
    "aria": "its processor's call default (max_image_size 980) overrides the saved size: 980 px images, too slow",
    "t5gemma2": "encoder-decoder whose language-model stack is its decoder (needs decoder inputs): refused by hf:",
    "udop": "encoder-decoder whose language-model stack is its decoder (needs decoder inputs): refused by hf:",
    "pix2struct": "encoder-decoder whose language-model stack is its decoder (needs decoder inputs): refused by hf:",
    "minicpmv4_6": "its processor reads its video processor's settings when built, and that needs torchvision",
    "minicpmv4_7": "its processor reads its video processor's settings when built, and that needs torchvision",
    "git": "image embeddings are prepended to the tokens (hidden states longer than input_ids): refused",
    "shieldgemma2": "a safety classifier: its processor writes its own policy prompts, ignoring the text: refused",
}


def why_not_saved(model_type: str) -> str | None:
    """Why ``model_type`` has no saver (None when it has one): :data:`NO_SAVER`, transformers registers no
    processor for it, its processor or image processor needs torchvision, or none is written yet."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.utils.import_utils import DummyObject

    if model_type in SAVERS:
        return None
    if model_type in NO_SAVER:
        return NO_SAVER[model_type]
    processor = PROCESSOR_MAPPING_NAMES.get(model_type)
    if processor is None:
        return "no processor in transformers' auto mapping"
    image_processors = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    if not image_processors:
        return "no image processor in transformers' auto mapping"
    if isinstance(getattr(transformers, processor, None), DummyObject) or "pil" not in image_processors:
        return "its processor needs torchvision, not installed here"
    return "no tiny processor written yet"

