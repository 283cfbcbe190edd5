"""The whole ``hf:`` path on every image-text-to-text family with a tiny saved processor.

For each family of :data:`~medprobe.testing.tiny_processors.SAVERS` a tiny random model is saved with
its real processor class (PIL image processor, chat template or none), loaded with
``create_backbone("hf:DIR")`` and given two images of different shapes with two prompts of different
lengths, batched with padding on either side. Every language-model layer under every pooling must
equal the model's own ``output_hidden_states`` on each (image, prompt) alone, and every vision layer
(``mean``, and ``cls`` where the tower has a CLS token) the vision encoder's own hidden states over
that image's crops or tiles. References are transformers' outputs, computed from the processor's
inputs for one image, never from medprobe's code. Families without a saver say why
(:func:`~medprobe.testing.tiny_processors.why_not_saved`; README's family table shows it).

Run time (2 cores shared with other jobs, transformers 5.24, torch 2.13 CPU on one thread): the
default selection (41 families, both padding sides, and the refusals) 33 s wall; the 3 ``slow``
families 85 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from medprobe.errors import ModelError  # noqa: E402
from medprobe.models.imaging import to_pil  # noqa: E402
from medprobe.models.registry import create_backbone  # noqa: E402
from medprobe.testing.tiny_processors import FULL_PATH_LIMITS, NO_SAVER, SAVERS, why_not_saved  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tiny matrices: threads only add contention

PROMPTS = ("what can you see on this image ?", "describe the lesion")
SHAPES = ((20, 40), (50, 50))


def _pixels(inputs: Any) -> Any:
    """The crops of one image as the tower takes them: 5-D layouts lose their all-zero padding crops."""
    pixels = inputs["pixel_values"]
    if pixels.ndim == 5:
        pixels = pixels[0][~(pixels[0] == 0).flatten(1).all(-1)]
    return pixels


def _packed(tower: Any, inputs: Any) -> tuple:
    """Qwen-style towers: one image's patches packed in a sequence, split by ``grid_thw``."""
    return tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"], output_hidden_states=True).hidden_states


def _mllama(tower: Any, inputs: Any) -> dict[str, tuple]:
    """Mllama: the local and global encoders' own hidden states (their input, then each layer's output,
    as their outputs list them), cut to the image's real tiles and unpadded tokens, CLS first."""
    seen: dict[str, tuple] = {}

    def keep(stack: str) -> Callable:
        return lambda module, args, out: seen.__setitem__(stack, (args[0], *out.hidden_states))

    handles = [tower.transformer.register_forward_hook(keep("vision")),
               tower.global_transformer.register_forward_hook(keep("vision_global"))]
    try:
        tower(pixel_values=inputs["pixel_values"], aspect_ratio_ids=inputs["aspect_ratio_ids"],
              aspect_ratio_mask=inputs["aspect_ratio_mask"])
    finally:
        for handle in handles:
            handle.remove()
    real = inputs["aspect_ratio_mask"].reshape(-1).bool()
    return {stack: tuple(h.reshape(len(real), -1, h.shape[-1])[real][:, :tower.num_patches] for h in states)
            for stack, states in seen.items()}


@dataclass(frozen=True)
class Tower:
    """How to run a family's vision encoder on one image's processor inputs, the reference."""

    #: attribute path of the encoder in the model
    path: str = "model.vision_tower"
    #: every crop starts with a CLS token
    cls: bool = False
    #: ``call(tower, inputs) -> hidden_states`` (default: the crops as ``pixel_values``)
    call: Callable[[Any, Any], Any] | None = None

    def hidden_states(self, model: Any, inputs: Any) -> tuple:
        tower = model
        for part in self.path.split("."):
            tower = getattr(tower, part)
        with torch.no_grad():
            if self.call is not None:
                return self.call(tower, inputs)
            return tower(pixel_values=_pixels(inputs), output_hidden_states=True).hidden_states


#: the families' vision encoders (None: no vision encoder)
TOWERS: dict[str, Tower | None] = {
    "gemma3": Tower(),
    "paligemma": Tower(),
    "blip-2": Tower("vision_model", cls=True),
    "instructblip": Tower("vision_model", cls=True),
    "vipllava": Tower(cls=True),
    "llava_onevision": Tower(),
    "qwen2_5_vl": Tower("model.visual", call=_packed),
    "qwen2_vl": Tower("model.visual", call=_packed),
    "qwen3_vl": Tower("model.visual", call=_packed),
    "qwen3_vl_moe": Tower("model.visual", call=_packed),
    "qwen3_5": Tower("model.visual", call=_packed),
    "qwen3_5_moe": Tower("model.visual", call=_packed),
    "qwen4_exp": Tower("model.visual", call=_packed),
    "lfm3_vl": Tower(call=_packed),
    "exaone4_5": Tower("model.visual", call=_packed),
    "hyperclovax_vision_v2": Tower("model.vision_model", call=_packed),
    "cosmos3_edge": Tower("model.visual", call=_packed),
    "dots3_note": Tower("model.vision_tower", call=_packed),
    "ernie4_5_vl_moe": Tower("model.vision_tower", call=_packed),
    "internvl": Tower(cls=True),
    "aya_vision": Tower(),
    "janus": Tower("model.vision_model"),
    "deepseek_vl": Tower("model.vision_model"),
    "deepseek_vl_hybrid": Tower("model.vision_model"),
    "ovis2": Tower("model.vision_tower"),
    "glm4v": Tower("model.visual", call=_packed),
    "glm4v_moe": Tower("model.visual", call=_packed),
    "glm46v": Tower("model.visual", call=_packed),
    "glm5_next": Tower("model.visual", call=_packed),
    "hy_v4_vl": Tower(call=_packed),
    "paddleocr_vl": Tower("model.visual", call=lambda tower, inputs: tower(
        pixel_values=inputs["pixel_values"][None], grid_thw=inputs["image_grid_thw"],
        output_hidden_states=True).hidden_states),
    "video_llama_3": Tower("model.vision_model", call=lambda tower, inputs: tower(
        inputs["pixel_values"], grid_thw=inputs["image_grid_thw"], merge_sizes=inputs["image_merge_sizes"],
        output_hidden_states=True).hidden_states),
    "video_llava": Tower("model.image_tower", cls=True, call=lambda tower, inputs: tower(
        pixel_values=inputs["pixel_values_images"], output_hidden_states=True).hidden_states),
    "llava_next_video": Tower(cls=True),
    "qianfan_ocr": Tower(cls=True),
    "blip": Tower("vision_model", cls=True),
    "smolvlm": Tower("model.vision_model"),
    "granite_docling": Tower("model.vision_model"),
    "lighton_ocr": Tower("model.vision_encoder", call=lambda tower, inputs: tower(
        inputs["pixel_values"], image_sizes=inputs["image_sizes"], output_hidden_states=True).hidden_states),
    "florence2": None,
    "got_ocr2": Tower(),
    "pp_chart2table": Tower(),
    "kosmos-2": Tower("vision_model", cls=True),
    "mllama": Tower("model.vision_model", cls=True, call=_mllama),
}
#: families whose output leaves out the language model's hidden states: ``reference(model, inputs)``
LM_REFERENCE: dict[str, Callable[[Any, Any], tuple]] = {
    "florence2": lambda model, inputs: model(**inputs, decoder_input_ids=inputs["input_ids"][:, :1],
                                             output_hidden_states=True, use_cache=False).encoder_hidden_states,
    "blip": lambda model, inputs: model.text_decoder(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
        encoder_hidden_states=model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state,
        output_hidden_states=True).hidden_states,
}
#: families without a chat template: medprobe prompts them plainly
PLAIN = {"paligemma", "blip-2", "instructblip", "blip", "got_ocr2", "kosmos-2", "florence2"}
#: encoder-decoders, whose encoder numbers positions from the start of each row: padded on the right only
RIGHT_PADDED = {"florence2"}
#: families whose prompt holds no image tokens (images reach the text by cross-attention): no
#: image_mean / text_mean, refused with a clear error
NO_IMAGE_TOKENS = {"blip", "kosmos-2"}


def _lm_hidden_states(out: Any) -> tuple:
    """The language model's hidden states in a model's output (BLIP-2 nests them)."""
    nested = getattr(out, "language_model_outputs", None)
    return nested.hidden_states if nested is not None else out.hidden_states


def _image_ids(config: Any) -> list[int]:
    ids = [getattr(config, "image_token_id", None), getattr(config, "image_token_index", None)]
    return sorted({i for i in ids if isinstance(i, int)})


def _pool(hidden: Any, ids: Any, pooling: str, image_ids: list[int]) -> Any:
    hidden = hidden.flatten(1)  # several residual streams per token: side by side
    image = torch.isin(ids, torch.tensor(image_ids))
    select = {"last_token": torch.arange(len(ids)) == len(ids) - 1, "mean": torch.ones_like(image),
              "image_mean": image, "text_mean": ~image}[pooling]
    return hidden[select].float().mean(dim=0)


def _vision_pool(hidden: Any, pooling: str, cls: bool) -> Any:
    hidden = hidden.float()
    if hidden.ndim == 4:  # a spatial map (H, W) per crop
        hidden = hidden.flatten(1, 2)
    if hidden.ndim == 2:  # packed patches of one image
        return hidden.mean(0)
    if pooling == "cls":
        return hidden[:, 0].mean(0)
    return (hidden[:, 1:] if cls else hidden).flatten(0, 1).mean(0)


#: families whose check takes over ~5 s here (GOT-OCR2: 256 image tokens from a 64x64 patch map; GLM-5-Next's
#: decoder, ~25 s): -m slow
SLOW = {"got_ocr2", "pp_chart2table", "glm5_next"}


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("model_type", [pytest.param(family, marks=pytest.mark.slow) if family in SLOW else family
                                        for family in sorted(SAVERS)])
def test_family_through_hf_equals_its_own_hidden_states(tmp_path, model_type, side):
    SAVERS[model_type](tmp_path)
    if model_type in RIGHT_PADDED and side == "left":
        with pytest.raises(ModelError, match="pads on the right"):
            create_backbone(f"hf:{tmp_path}", padding_side=side, dtype="float32")
        return
    rng = np.random.default_rng(0)
    pair = [rng.random((*shape, 3)).astype(np.float32) for shape in SHAPES]
    backbone = create_backbone(f"hf:{tmp_path}", padding_side=side, dtype="float32")
    assert backbone.style == ("plain" if model_type in PLAIN else "chat")
    model, image_ids = backbone.model, _image_ids(backbone.model.config)
    alone = [backbone.encode([to_pil(image)], [prompt]) for image, prompt in zip(pair, PROMPTS)]
    assert alone[0]["input_ids"].shape[1] != alone[1]["input_ids"].shape[1]  # the batch is padded
    with torch.no_grad():
        reference = [LM_REFERENCE[model_type](model, inputs) if model_type in LM_REFERENCE else
                     _lm_hidden_states(model(**inputs, output_hidden_states=True, use_cache=False)) for inputs in alone]
    lm_layers = [str(k) for k in range(backbone.num_lm_layers + 1)]
    assert len(reference[0]) == len(lm_layers)
    for pooling in ("last_token", "mean", "image_mean", "text_mean"):
        if model_type in NO_IMAGE_TOKENS and pooling in ("image_mean", "text_mean"):
            with pytest.raises(ModelError, match="image token ids"):
                create_backbone(f"hf:{tmp_path}", pooling=pooling, dtype="float32")
            continue
        backbone.pooling = pooling
        features = backbone.extract_with_prompts(pair, list(PROMPTS), lm_layers)
        for k, layer in enumerate(lm_layers):
            expected = torch.stack([_pool(ref[k][0], inputs["input_ids"][0], pooling, image_ids)
                                    for ref, inputs in zip(reference, alone)])
            assert features[layer].shape == (len(pair), expected.shape[-1]), (layer, features[layer].shape)
            np.testing.assert_allclose(features[layer], expected.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{model_type} {side} {pooling} {layer}")

    tower = TOWERS[model_type]
    assert backbone.stacks.has_vision == (tower is not None)
    if tower is None:
        return
    vision_reference = [tower.hidden_states(model, inputs) for inputs in alone]
    vision_reference = [ref if isinstance(ref, dict) else {"vision": ref} for ref in vision_reference]
    stacks = {stack: len(backbone.stacks.layers_of(stack)) for stack in ("vision", *backbone.stacks.extra)}
    assert {stack: len(states) - 1 for stack, states in vision_reference[0].items()} == stacks
    vision_layers = [f"{stack}.{k}" for stack, depth in stacks.items() for k in range(depth + 1)]
    for pooling in ("mean", "cls") if tower.cls else ("mean",):
        backbone.vision_pooling = pooling
        features = backbone.extract_with_prompts(pair, list(PROMPTS), vision_layers)
        for layer in vision_layers:
            stack, k = layer.rsplit(".", 1)
            expected = torch.stack([_vision_pool(ref[stack][int(k)], pooling, tower.cls) for ref in vision_reference])
            assert features[layer].shape == (len(pair), expected.shape[-1]), (layer, features[layer].shape)
            np.testing.assert_allclose(features[layer], expected.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{model_type} {side} {pooling} {layer}")


def test_every_family_has_a_saver_or_a_reason():
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    families = set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
    assert set(SAVERS) <= families and set(TOWERS) == set(SAVERS) and not set(NO_SAVER) & set(SAVERS)
    assert set(FULL_PATH_LIMITS) == NO_IMAGE_TOKENS | RIGHT_PADDED  # what the README says of them
    assert all(why_not_saved(family) for family in families - set(SAVERS))


def test_the_reasons_for_no_saver_still_hold():
    from transformers import FuyuImageProcessorPil, FuyuProcessor

    from medprobe.testing.tiny_models import tiny_tokenizer

    processor = FuyuProcessor(image_processor=FuyuImageProcessorPil(size={"height": 56, "width": 56}),
                              tokenizer=tiny_tokenizer(("|SPEAKER|", "|NEWLINE|", "<0x04>")))
    with pytest.raises(TypeError):  # once it works, write save_tiny_fuyu
        processor(images=[to_pil(np.zeros((28, 28, 3), np.float32))], text=["describe"], return_tensors="pt")



@pytest.mark.parametrize("model_type", ["t5gemma2", "udop", "pix2struct"])
def test_an_encoder_decoder_read_by_its_decoder_is_refused_up_front(model_type):
    """T5Gemma 2, UDOP, Pix2Struct: ``get_decoder()`` is a plain decoder that needs decoder inputs; refused
    with a ModelError naming the family before anything runs (Florence-2, read by its encoder, is not)."""
    from pathlib import Path

    from medprobe.models.hf import HFVisionLanguageBackbone
    from medprobe.models.hf_loading import LoadedModel
    from medprobe.testing.tiny_families import build_tiny_family

    loaded = LoadedModel(model=build_tiny_family(model_type), processor=object(), source=f"tiny-{model_type}",
                         directory=Path("."), revision=None, commit=None, dtype="float32", quantization=None)
    with pytest.raises(ModelError, match=f"{model_type}.*encoder-decoder whose language-model stack is its decoder"):
        HFVisionLanguageBackbone(loaded, name=model_type)
