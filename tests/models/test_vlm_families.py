"""Contract test over every image-text-to-text family transformers registers (enumerated, not picked).

For each ``model_type`` in ``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES``, a tiny random instance is
built from its shrunk default config (:mod:`medprobe.testing.tiny_families`) and the stacks medprobe
finds (:func:`~medprobe.models.stacks.find_stacks`) are read with medprobe's own hooks
(:func:`~medprobe.models.torch_hooks.run_hooked`, what the backbones extract with), then compared
with transformers' own outputs:

* language model: every hidden state equals ``output_hidden_states`` of a text-only forward of the
  whole model (or of the language model alone where the model insists on images), count and values;
* vision encoder: every hidden state equals the encoder's own ``output_hidden_states`` on pixels
  shaped from its config.

The families that cannot be checked here are listed below with the reason, and the test checks the
reason still holds (a family that starts to build fails the test until it is moved out of the list).
The full processor path (``create_backbone("hf:DIR")``, every pooling, batches padded on either
side) is tested on every family with a tiny processor saver in ``tests/models/test_hf_full_path.py``,
on IDEFICS v1, Idefics2/3 and LLaVA in ``tests/models/test_hf_backbones.py``, and on LLaVA-NeXT here
(:func:`test_llava_next_through_hf_equals_its_own_hidden_states`); :data:`FULL_PATH` names them all.

Run time (2 cores shared with other jobs, transformers 5.24, torch 2.13 CPU, torch on one thread:
the tiny matrices gain nothing from threads, which only wait on each other): the default selection
(90 families) 31 s wall at a load average of ~4; the 12 ``slow`` families (``-m slow``) 37 s.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES  # noqa: E402

from medprobe.models.stacks import find_stacks  # noqa: E402
from medprobe.models.torch_hooks import run_hooked  # noqa: E402
from medprobe.testing.tiny_families import build_tiny_family, text_inputs, tower_call  # noqa: E402
from medprobe.testing.tiny_processors import FULL_PATH_LIMITS, SAVERS, why_not_saved  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tiny matrices: threads only add contention

FAMILIES = sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
RTOL = 1e-6
#: the transformers version the lists below and the README table were written for (README's test
#: block installs it). Under another version a family may be new, gone, or start to build: there the
#: test still checks exactness of every stack it finds, but holds no family to this version's lists.
LISTS_WRITTEN_FOR = "5.24.0"
SAME_VERSION = transformers.__version__ == LISTS_WRITTEN_FOR
#: the families transformers 5.24.0 registers (what the lists were written against)
FAMILIES_OF_THE_LISTS = frozenset({
    "apertus1p5", "aria", "aya_vision", "blip", "blip-2", "chameleon", "cohere2_vision", "cohere_compass",
    "cosmos3_edge", "cosmos3_omni", "deepseek_ocr2", "deepseek_vl", "deepseek_vl_hybrid", "diffusion_gemma",
    "dots3_note", "emu3", "ernie4_5_vl_moe", "evolla", "exaone4_5", "fast_vlm", "florence2", "fuyu", "gemma3",
    "gemma3n", "gemma4", "gemma4_unified", "git", "glm46v", "glm4v", "glm4v_moe", "glm5_next", "glm_ocr", "glmga",
    "got_ocr2", "granite4_vision", "granite_docling", "hunyuan_vl", "hy_v4_vl", "hyperclovax_vision_v2", "idefics",
    "idefics2", "idefics3", "inkling2", "inkling2_loop", "inkling_mm_model", "instructblip", "instructblipvideo",
    "internvl", "janus", "kimi_k25", "kosmos-2", "kosmos-2.5", "lfm2_vl", "lfm3_vl", "lighton_ocr", "llama4",
    "llava", "llava_next", "llava_next_video", "llava_onevision", "minicpm_ocr", "minicpmv4_6", "minicpmv4_7",
    "minimax_m3_vl", "mistral3", "mistral4", "mistral_large4", "mllama", "molmo2", "muse_glimmer", "muse_spark",
    "nemotron_h_omni", "ovis2", "paddleocr_vl", "paligemma", "perception_lm", "pi0", "pix2struct", "pp_chart2table",
    "pp_formulanet", "qianfan_ocr", "qwen2_5_omni_thinker", "qwen2_5_vl", "qwen2_vl", "qwen3_5", "qwen3_5_moe",
    "qwen3_omni_moe_thinker", "qwen3_vl", "qwen3_vl_moe", "qwen4_exp", "shieldgemma2", "smolvlm", "step3p7",
    "t5gemma2", "udop", "unlimited_ocr", "video_llama_3", "video_llava", "vipllava", "vision-encoder-decoder"
})

_TIMM = "needs the timm package (TimmWrapperModel vision tower), not installed here"
#: families whose tiny instance cannot be built here, with the reason (checked: building still fails)
CANNOT_BUILD = {
    "chameleon": "default config cannot be built (AttributeError in its VQ-VAE config defaults)",
    "cohere_compass": "default config broken (KeyError 'full_attention' in its layer types)",
    "deepseek_ocr2": "default config broken (None where a list is expected)",
    "diffusion_gemma": "default config broken (a None size)",
    "emu3": "default config cannot be built (AttributeError in its VQ-VAE config defaults)",
    "evolla": "a protein-text model registered here; AutoModelForImageTextToText refuses its config",
    "fast_vlm": _TIMM,
    "gemma3n": _TIMM,
    "gemma4": "default config broken (cache-producing and cache-using layer types differ)",
    "gemma4_unified": "default config broken (cache-producing and cache-using layer types differ)",
    "granite4_vision": "default config broken (None where a list is expected)",
    "hunyuan_vl": "default config broken (None rope parameter)",
    "perception_lm": _TIMM,
}
#: families not built at all, with the reason
NOT_RUN = {
    "inkling_mm_model": "its shrunk default config still builds a model too large for this machine (killed for memory)",
}
#: families whose language model cannot run on text alone here, with the reason (checked: it still fails)
NO_TEXT_FORWARD = {
    "idefics": "its decoder requires images (pixel_values or perceiver embeddings); tested in test_hf_backbones",
    "pix2struct": "the decoder's prompt shape depends on rendered patches; no text-only forward",
    "ernie4_5_vl_moe": "its 3-D rope positions do not fit the shrunk config (stack of unequal sizes)",
    "step3p7": "default config lacks sliding_window",
    "t5gemma2": "encoder-decoder: the decoder needs encoder states and the model images",
}
#: families whose vision encoder cannot be run from its config alone (it needs processor-made inputs)
VISION_INPUTS = {
    "dots3_note": "the tower takes pre-merged patch features, not pixels",
    "idefics": "its tower returns no hidden states; checked layer by layer in test_hf_backbones",
    "got_ocr2": "image size of the default config is 1024 px (slow); its tower is a SAM-style ViT",
    "inkling2": "the tower takes packed patches with positions",
    "inkling2_loop": "the tower takes packed patches with positions",
    "kimi_k25": "the tower takes packed, pre-flattened patches",
    "kosmos-2.5": "the tower takes flattened patches (Pix2Struct style)",
    "lfm2_vl": "the tower needs a spatial-shape tensor",
    "lighton_ocr": "Pixtral tower: needs image_sizes",
    "llama4": "the tower needs unfolded patches",
    "minicpm_ocr": "the tower needs target sizes",
    "minicpmv4_6": "the tower needs target sizes",
    "minicpmv4_7": "the tower needs target sizes",
    "mistral3": "Pixtral tower: needs image_sizes",
    "mistral_large4": "Pixtral tower: needs image_sizes",
    "mllama": "the tower needs aspect-ratio ids and masks (tiles)",
    "molmo2": "the tower takes pre-cropped patches",
    "muse_glimmer": "the tower takes pre-flattened patches",
    "muse_spark": "the tower takes pre-flattened patches",
    "paddleocr_vl": "the tower takes packed patches with position ids",
    "pix2struct": "the encoder takes flattened patches",
    "unlimited_ocr": "a SAM + CLIP tower whose inputs the processor makes",
    "video_llama_3": "the tower needs merge sizes",
}
#: families without a vision stack, and why (the language model is still probeable)
NO_VISION_STACK = {
    "apertus1p5": "images are tokenised by a VQ image tokenizer; no vision encoder",
    "florence2": "hierarchical DaViT tower (4 stages of different widths); no single layer stack",
    "fuyu": "image patches are projected straight into the decoder; no vision encoder",
    "mistral4": "no vision encoder in the default config",
    "pi0": "a robot policy whose PaliGemma vision encoder is not a sub-module built from vision_config",
    "udop": "images enter the T5 encoder as patch embeddings; no separate vision encoder",
    "vision-encoder-decoder": "the default config has no vision encoder config",
}
#: families whose check takes over ~2 s here (build or large default image sizes): run with -m slow
SLOW = {"apertus1p5", "blip", "emu3", "florence2", "glm5_next", "janus", "lighton_ocr", "mistral3", "mistral_large4",
        "pp_chart2table", "got_ocr2", "dots3_note"}


def _params() -> list:
    return [pytest.param(family, marks=pytest.mark.slow) if family in SLOW else family for family in FAMILIES]


@pytest.mark.skipif(not SAME_VERSION, reason=f"the lists describe transformers {LISTS_WRITTEN_FOR}")
def test_the_lists_name_only_registered_families():
    listed = {*CANNOT_BUILD, *NOT_RUN, *NO_TEXT_FORWARD, *VISION_INPUTS, *NO_VISION_STACK, *SLOW}
    assert listed <= set(FAMILIES), sorted(listed - set(FAMILIES))
    assert not set(CANNOT_BUILD) & set(NOT_RUN)


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.float().reshape(expected.shape), expected.float()
    return float((got - expected).abs().max() / expected.abs().max().clamp(min=1e-12))


def _text_reference(model, stacks, inputs):
    """``(call, hidden_states)``: the whole model's text-only forward, else the language model's."""
    errors = []
    for module in (model, stacks.lm_module):
        try:
            with torch.no_grad():
                out = module(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        except Exception as error:  # noqa: BLE001 -- the reason is reported below
            errors.append(f"{type(module).__name__}: {type(error).__name__}: {error}")
            continue
        hidden = out.get("encoder_hidden_states") if stacks.lm_module is not model.get_decoder() else None
        return (lambda: module(**inputs, use_cache=False)), hidden or out.get("hidden_states")
    raise AssertionError("; ".join(errors))


@pytest.mark.parametrize("model_type", _params())
def test_every_family_gives_exact_language_and_vision_layers(model_type):
    if model_type in NOT_RUN:
        pytest.skip(NOT_RUN[model_type])
    if model_type in CANNOT_BUILD:
        try:
            model = build_tiny_family(model_type)
        except Exception:  # noqa: BLE001 -- any failure; the reason is in CANNOT_BUILD
            return
        assert not SAME_VERSION, f"{model_type} builds now: move it out of CANNOT_BUILD"
    else:
        model = build_tiny_family(model_type)
    stacks = find_stacks(model, model_type)
    assert stacks.num_lm_layers > 0
    if SAME_VERSION or model_type in NO_VISION_STACK:
        assert stacks.has_vision == (model_type not in NO_VISION_STACK), stacks.describe()

    inputs = text_inputs()
    if model_type not in FAMILIES_OF_THE_LISTS:  # new since the lists were written: exact where it runs
        try:
            _text_reference(model, stacks, inputs)
        except AssertionError as error:
            pytest.skip(f"{model_type} is new since transformers {LISTS_WRITTEN_FOR} and has no text-only "
                        f"forward here ({error}); add it to the lists")
    if model_type in NO_TEXT_FORWARD:
        with pytest.raises(AssertionError):
            _text_reference(model, stacks, inputs)
    else:
        forward, reference = _text_reference(model, stacks, inputs)
        keys = [("lm", k) for k in range(stacks.num_lm_layers + 1)]
        assert len(reference) == len(keys), f"{model_type}: {len(reference)} hidden states, {len(keys)} found"
        captured = run_hooked(stacks, keys, forward, name=model_type)
        for key in keys:
            assert _relative_error(captured[key], reference[key[1]]) < RTOL, (model_type, key)

    if not stacks.has_vision or model_type in VISION_INPUTS:
        return
    call = tower_call(stacks.vision_module)
    assert call is not None, f"{model_type}: no tower input could be made from its config"
    with torch.no_grad():
        reference = call(output_hidden_states=True, return_dict=True).hidden_states
    keys = [("vision", k) for k in range(stacks.num_vision_layers + 1)]
    assert len(reference) == len(keys)
    captured = run_hooked(stacks, keys, call, name=model_type)
    for key in keys:
        assert _relative_error(captured[key], reference[key[1]]) < RTOL, (model_type, key)


#: families whose whole ``hf:`` path (processor, every pooling, batches padded on either side) is
#: tested: in tests/models/test_hf_backbones.py, LLaVA-NeXT below, every family with a saver of
#: :mod:`medprobe.testing.tiny_processors` in tests/models/test_hf_full_path.py
FULL_PATH = {"idefics", "idefics2", "idefics3", "llava", "llava_next", *SAVERS}


def support_table() -> str:
    """The README's table of supported families, made from the lists above (what this file tests)."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for family in FAMILIES:
        if family in CANNOT_BUILD or family in NOT_RUN:
            continue
        lm = "found, not run here" if family in NO_TEXT_FORWARD and family not in FULL_PATH else "exact"
        if family in NO_VISION_STACK:
            vision = "none"
        elif family in VISION_INPUTS and family not in FULL_PATH:
            vision = "found, not run here"
        else:
            vision = "exact"
        full = "exact, every pooling, padded batches" if family in FULL_PATH else f"not tested: {why_not_saved(family)}"
        if family in FULL_PATH_LIMITS:
            full = f"exact; {FULL_PATH_LIMITS[family]}"
        rows.setdefault((lm, vision, full), []).append(family)
    order = sorted(rows, key=lambda key: (not key[2].startswith("exact"), key[2] != "exact, every pooling, padded batches",
                                          key[0] != "exact",
                                          key[1] != "exact", key[1], key[2]))
    lines = ["| families (`model_type`) | language-model layers `0..L` | vision layers `vision.k` | "
             "`hf:` extraction through the processor |", "|---|---|---|---|"]
    lines += [f"| {', '.join(rows[key])} | {' | '.join(key)} |" for key in order]
    return "\n".join(lines)


@pytest.mark.skipif(not SAME_VERSION, reason=f"the README table describes transformers {LISTS_WRITTEN_FOR}")
def test_the_readme_table_is_what_this_file_tests():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert support_table() in readme, "regenerate the README table with tests/test_vlm_families.support_table()"
    for family, reason in {**CANNOT_BUILD, **NOT_RUN}.items():
        assert f"`{family}`" in readme, family


# ------------------------------------------------------------------------------ LLaVA-NeXT through hf:
_LLAVA_NEXT_PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def _save_tiny_llava_next(directory) -> None:
    """A tiny LLaVA-NeXT with its PIL image processor (28 px crops on a 28/56 px grid) and a chat template."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessorPil, LlavaNextProcessor)

    from medprobe.testing.tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer(("<image>",))
    template = ("{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
                "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                   image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1, chat_template=template)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=28, patch_size=14, hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=2, num_attention_heads=2, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS,
        vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)


def _pool_by_hand(hidden: torch.Tensor, ids: torch.Tensor, pooling: str, image_id: int) -> torch.Tensor:
    image = ids == image_id
    select = {"last_token": torch.arange(len(ids)) == len(ids) - 1, "mean": torch.ones_like(image),
              "image_mean": image, "text_mean": ~image}[pooling]
    return hidden[select].mean(dim=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_llava_next_through_hf_equals_its_own_hidden_states(tmp_path, side):
    """``create_backbone("hf:DIR")`` on LLaVA-NeXT (PIL image processor, chat template): two images of
    different shapes (3 and 5 crops, so different prompt lengths), batched with padding on ``side``;
    every LM layer and pooling equals the model's own ``output_hidden_states`` on each image alone,
    every vision layer the CLIP tower's own hidden states pooled over that image's crops."""
    import numpy as np

    from medprobe.models.imaging import to_pil
    from medprobe.models.registry import create_backbone

    _save_tiny_llava_next(tmp_path)
    rng = np.random.default_rng(0)
    pair = [rng.random((20, 40, 3)).astype(np.float32), rng.random((50, 50, 3)).astype(np.float32)]
    backbone = create_backbone(f"hf:{tmp_path}", padding_side=side)
    assert backbone.style == "chat"
    model, image_id = backbone.model, backbone.model.config.image_token_id
    lm_layers = [str(k) for k in range(backbone.num_lm_layers + 1)]
    vision_layers = [f"vision.{k}" for k in range(backbone.num_vision_layers + 1)]
    alone = [backbone.encode([to_pil(image)], [backbone.prompt]) for image in pair]
    assert alone[0]["input_ids"].shape[1] != alone[1]["input_ids"].shape[1]  # the batch is padded
    assert [tuple(inputs["pixel_values"].shape[:2]) for inputs in alone] == [(1, 3), (1, 5)]
    with torch.no_grad():
        lm_reference = [model(**inputs, output_hidden_states=True, use_cache=False).hidden_states for inputs in alone]
        tower = model.model.vision_tower
        crops = [inputs["pixel_values"][0][:n] for inputs, n in zip(alone, (3, 5))]  # base image + 1x2 / 2x2 crops
        vision_reference = [tower(pixel_values=c, output_hidden_states=True).hidden_states for c in crops]
    for pooling in ("last_token", "mean", "image_mean", "text_mean"):
        backbone.pooling = pooling
        features = backbone.extract(pair, lm_layers)
        for k, layer in enumerate(lm_layers):
            expected = torch.stack([_pool_by_hand(ref[k][0], inputs["input_ids"][0], pooling, image_id)
                                    for ref, inputs in zip(lm_reference, alone)])
            np.testing.assert_allclose(features[layer], expected.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{side} {pooling} {layer}")
    for pooling in ("mean", "cls"):
        backbone.vision_pooling = pooling
        features = backbone.extract(pair, vision_layers)
        for k, layer in enumerate(vision_layers):
            expected = torch.stack([ref[k][:, 0].mean(0) if pooling == "cls" else ref[k][:, 1:].flatten(0, 1).mean(0)
                                    for ref in vision_reference])
            np.testing.assert_allclose(features[layer], expected.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{side} {pooling} {layer}")
