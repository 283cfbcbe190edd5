"""Hugging Face backbones on tiny saved models of every family (IDEFICS v1, LLaVA, Idefics2/3,
Qwen2-VL, CLIP), loaded through the registry exactly as real weights would be.

References are transformers' own outputs (``output_hidden_states=True``, ``logits_per_image``)
computed here from the processor's inputs, never medprobe's code paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads its constants

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from medprobe.errors import ModelError  # noqa: E402
from medprobe.models.hf import DEFAULT_PROMPT, DEFAULT_PROMPTS, HFVisionLanguageBackbone  # noqa: E402
from medprobe.models.hf_clip import ClipBackbone, zero_shot_scores  # noqa: E402
from medprobe.models.imaging import to_pil  # noqa: E402
from medprobe.models.registry import create_backbone, list_backbones  # noqa: E402

import medprobe.testing.tiny_models as tiny_models  # noqa: E402

VLM_FAMILIES = ("idefics", "llava", "idefics2", "idefics3", "qwen2vl")
ATOL = 1e-5


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-hf")
    models = tiny_models.build_all(root)
    models["idefics3-split"] = tiny_models.build_tiny_idefics3(root / "idefics3-split", image_splitting=True)
    return models


@pytest.fixture(scope="session")
def equal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every VLM family with as many vision layers as language-model layers (IDEFICS-9B: 32 and 32)."""
    return tiny_models.build_equal_depth(tmp_path_factory.mktemp("tiny-equal-depth"), depth=tiny_models.LM_LAYERS)


def vlm(tiny: dict[str, Path], family: str, **options) -> HFVisionLanguageBackbone:
    """Build through the registry: the IDEFICS preset with ``path=``, the others as ``hf:<folder>``."""
    if family == "idefics":
        return create_backbone("idefics-9b", path=str(tiny["idefics"]), **options)
    return create_backbone(f"hf:{tiny[family]}", **options)


def images(*shapes: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((h, w, 3)).astype(np.float32) for h, w in shapes]


def image_token_ids(backbone: HFVisionLanguageBackbone) -> list[int]:
    """Image positions as the model defines them, read from its config / tokenizer (not medprobe)."""
    config = backbone.model.config
    if backbone.style == "idefics":
        return [backbone.tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<fake_token_around_image>")]
    return [config.image_token_id]


def reference_pool(hidden: torch.Tensor, input_ids: torch.Tensor, pooling: str, image_ids: list[int]) -> np.ndarray:
    """Pooling over an unpadded batch, written independently of medprobe's implementation."""
    image = torch.isin(input_ids, torch.tensor(image_ids))
    rows = []
    for b in range(hidden.shape[0]):
        if pooling == "last_token":
            rows.append(hidden[b, -1])
        elif pooling == "mean":
            rows.append(hidden[b].mean(0))
        elif pooling == "image_mean":
            rows.append(hidden[b, image[b]].mean(0))
        else:
            rows.append(hidden[b, ~image[b]].mean(0))
    return torch.stack(rows).float().numpy()


# ------------------------------------------------------------------------------ registry
def test_presets_are_registered_with_memory_notes():
    entries = {entry.name: entry for entry in list_backbones()}
    for name in ("idefics-9b", "idefics-9b-instruct", "idefics-80b", "idefics-80b-instruct", "clip-b32", "plip", "hf:"):
        assert name in entries, name
        assert entries[name].memory and entries[name].family == "huggingface"
    assert "160 GB" in entries["idefics-80b"].memory and "18 GB" in entries["idefics-9b"].memory


def test_default_prompts():
    assert DEFAULT_PROMPT == "What can you see on this radiological image?"
    for domain in ("radiological", "histological", "dermatological", "dermatoscopic", "fundus"):
        assert DEFAULT_PROMPTS[domain] == f"What can you see on this {domain} image?"


def test_to_pil_rounds_and_expands_grey():
    pil = to_pil(np.array([[0.0, 0.5], [1.0, 2.0]], np.float32))  # grey, one value out of range
    assert pil.mode == "RGB" and np.asarray(pil)[..., 0].tolist() == [[0, 128], [255, 255]]
    with pytest.raises(ModelError, match="expected an"):
        to_pil(np.zeros((4, 4, 2), np.float32))


# ------------------------------------------------------------------------------ layers
def test_layer_names_and_index_resolution(tiny):
    backbone = vlm(tiny, "llava")
    L, V = tiny_models.LM_LAYERS, tiny_models.VISION_LAYERS
    assert backbone.layer_names() == [f"vision.{k}" for k in range(V + 1)] + [str(k) for k in range(L + 1)]
    assert backbone.resolve_layers("all") == [str(k) for k in range(L + 1)]  # the LM only, as the study probed
    assert backbone.resolve_layers("vision.all") == [f"vision.{k}" for k in range(V + 1)]
    assert backbone.default_layers() == [str(L)]
    assert backbone.resolve_layers(-1) == [str(L)]
    assert backbone.resolve_layers(0) == ["0"]
    assert backbone.resolve_layers("vision.-1") == [f"vision.{V}"]
    assert backbone.resolve_layers("1:3") == ["1", "2"]
    assert backbone.resolve_layers("vision.1:") == [f"vision.{k}" for k in range(1, V + 1)]
    assert backbone.resolve_layers([-1, "vision.0", "3"]) == [str(L), "vision.0"]
    with pytest.raises(ModelError, match="out of range"):
        backbone.resolve_layers(L + 1)
    with pytest.raises(ModelError, match="unknown layer"):
        backbone.extract(images((32, 32)), ["lm.1"])


@pytest.mark.parametrize("depths", ["tiny", "equal"])
@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_every_lm_layer_matches_transformers_hidden_states(request, family, depths):
    backbone = vlm(request.getfixturevalue(depths), family)
    assert backbone.num_vision_layers == (tiny_models.LM_LAYERS if depths == "equal" else tiny_models.VISION_LAYERS)
    pair = images((32, 32), (32, 32), seed=1)  # same size + same prompt: no padding in the reference
    layers = [str(k) for k in range(tiny_models.LM_LAYERS + 1)]
    inputs = backbone.encode([to_pil(image) for image in pair], [backbone.prompt] * 2)
    assert bool(inputs["attention_mask"].all())
    with torch.no_grad():
        reference = backbone.model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    assert len(reference) == len(layers)
    ids = image_token_ids(backbone)
    for pooling in ("last_token", "mean", "image_mean", "text_mean"):
        backbone.pooling = pooling  # pooling happens after the forward pass; no need to reload
        features = backbone.extract(pair, layers)
        for k, layer in enumerate(layers):
            expected = reference_pool(reference[k], inputs["input_ids"], pooling, ids)
            np.testing.assert_allclose(features[layer], expected, atol=ATOL, err_msg=f"{family} {pooling} layer {k}")
    assert not np.allclose(features["1"], features[str(tiny_models.LM_LAYERS)])  # layers really differ


def _vision_reference(backbone: HFVisionLanguageBackbone, family: str, inputs) -> list[torch.Tensor]:
    """Per-layer vision-tower tokens as transformers returns them (or, for IDEFICS v1, whose tower
    does not return them, the tower re-run with k encoder layers and no post-layernorm)."""
    model = backbone.model
    with torch.no_grad():
        if family == "llava":
            return list(model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states)
        if family == "qwen2vl":
            return list(model(**inputs, output_hidden_states=True).image_outputs.hidden_states)
        if family in ("idefics2", "idefics3"):
            pixels = inputs["pixel_values"].flatten(0, 1)
            return list(model.model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states)
        tower = model.model.vision_model
        full, norm = tower.encoder.layers, tower.post_layernorm
        outputs = []
        try:
            tower.post_layernorm = torch.nn.Identity()
            for k in range(len(full) + 1):
                tower.encoder.layers = torch.nn.ModuleList(list(full)[:k])
                outputs.append(tower(pixel_values=inputs["pixel_values"].flatten(0, 1)).last_hidden_state)
        finally:
            tower.encoder.layers, tower.post_layernorm = full, norm
        return outputs


@pytest.mark.parametrize("depths", ["tiny", "equal"])
@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_every_vision_layer_matches_the_tower(request, family, depths):
    tiny = request.getfixturevalue(depths)
    pair = images((32, 32), (32, 32), seed=2)  # square: no padded patches, one crop per image
    for pooling in ("mean", "cls"):
        if pooling == "cls" and family not in ("idefics", "llava"):
            with pytest.raises(ModelError, match="no CLS token"):
                vlm(tiny, family, vision_pooling="cls")
            continue
        backbone = vlm(tiny, family, vision_pooling=pooling)
        layers = backbone.resolve_layers("vision.all")
        features = backbone.extract(pair, layers)
        inputs = backbone.encode([to_pil(image) for image in pair], [backbone.prompt] * 2)
        reference = _vision_reference(backbone, family, inputs)
        assert len(reference) == len(layers)
        for k, layer in enumerate(layers):
            hidden = reference[k].float()
            if family == "qwen2vl":  # packed patches of both images
                expected = torch.stack([part.mean(0) for part in hidden.split(inputs["image_grid_thw"].prod(-1).tolist())])
            elif pooling == "cls":
                expected = hidden[:, 0]
            else:
                expected = hidden[:, 1:].mean(1) if family in ("idefics", "llava") else hidden.mean(1)
            np.testing.assert_allclose(features[layer], expected.numpy(), atol=ATOL, err_msg=f"{family} {layer}")


@pytest.mark.parametrize("family, shapes", [
    ("idefics3-split", [(40, 64), (16, 64)]),  # 2x2 vs 1x2 crops (+ global view): padding crops
    ("idefics2", [(40, 64), (64, 16)]),  # aspect ratio kept: padded pixels, hence padded patches
])
def test_vision_pooling_follows_the_models_own_crop_and_patch_rules(tiny, family, shapes):
    backbone = vlm(tiny, family)
    batch = images(*shapes, seed=3)
    inputs = backbone.encode([to_pil(image) for image in batch], [backbone.prompt] * 2)
    pixels, pixel_mask = inputs["pixel_values"], inputs["pixel_attention_mask"]
    real = (pixels != 0).flatten(2).any(-1)  # padding crops are all zero (the models' rule)
    counts = real.sum(1).tolist()
    patch = backbone.model.config.vision_config.patch_size
    covered = pixel_mask[real].unfold(1, patch, patch).unfold(2, patch, patch).sum((-1, -2))
    # a patch counts if any pixel is real (Idefics3) / all pixels are real (Idefics2)
    valid = (covered > 0 if family.startswith("idefics3") else covered == patch * patch).flatten(1)
    assert counts[0] != counts[1] if family.startswith("idefics3") else not bool(valid.all())
    with torch.no_grad():
        hidden = backbone.model.model.get_image_features(
            pixel_values=pixels, pixel_attention_mask=pixel_mask, output_hidden_states=True).hidden_states
    last = f"vision.{tiny_models.VISION_LAYERS}"
    features = backbone.extract(batch, ["vision.0", last])
    for layer, states in (("vision.0", hidden[0]), (last, hidden[-1])):
        expected = [states[rows][valid[rows]].mean(0) for rows in torch.arange(len(states)).split(counts)]
        np.testing.assert_allclose(features[layer], torch.stack(expected).numpy(), atol=ATOL)


def test_regression_idefics_v1_with_equal_depths_reads_the_decoder(equal):
    """Issue 17: with 32 decoder and 32 vision layers (IDEFICS-9B) the longest-list rule hooked the
    vision tower: intermediate LM layers failed ("do not line up with the input ids") or, when the
    prompt was as long as the vision sequence, silently returned vision activations as LM layers."""
    backbone = vlm(equal, "idefics")
    model = backbone.model
    assert backbone.stacks.lm_layers is model.model.layers
    assert backbone.stacks.vision_layers is model.model.vision_model.encoder.layers
    assert len(model.model.layers) == len(model.model.vision_model.encoder.layers)
    pair = images((32, 32), (32, 32), seed=11)
    inputs = backbone.encode([to_pil(image) for image in pair], [backbone.prompt] * 2)
    with torch.no_grad():
        reference = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    layers = backbone.resolve_layers("all")
    assert layers == [str(k) for k in range(len(reference))]
    features = backbone.extract(pair, layers)
    for k, layer in enumerate(layers):
        np.testing.assert_allclose(features[layer], reference[k][:, -1].numpy(), atol=ATOL, err_msg=layer)


# ------------------------------------------------------------------------------ batching
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", [*VLM_FAMILIES, "idefics3-split"])
def test_batched_equals_one_at_a_time(tiny, family, side):
    batch = images((40, 50), (84, 60), (28, 28), seed=4)
    prompts = ["what can you see ?", "describe the lesion in this chest x-ray image , left or right ?", DEFAULT_PROMPT]
    backbone = vlm(tiny, family, padding_side=side)
    layers = backbone.layer_names()
    inputs = backbone.encode([to_pil(image) for image in batch], prompts)
    lengths = inputs["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) == 3
    pad_column = 0 if side == "left" else -1
    assert not bool(inputs["attention_mask"][:, pad_column].all())  # padding really is on that side
    for pooling in ("last_token", "mean", "image_mean", "text_mean"):
        backbone.pooling = pooling
        together = backbone.extract_with_prompts(batch, prompts, layers)
        for i in range(len(batch)):
            alone = backbone.extract_with_prompts(batch[i:i + 1], prompts[i:i + 1], layers)
            for layer in layers:
                np.testing.assert_allclose(together[layer][i], alone[layer][0], atol=ATOL,
                                           err_msg=f"{family} {side} {pooling} sample {i} layer {layer}")


# ------------------------------------------------------------------------------ compute only what is read
def _count_calls(modules) -> tuple[list[int], list]:
    counts = [0] * len(modules)
    handles = [m.register_forward_hook(lambda *a, i=i: counts.__setitem__(i, counts[i] + 1)) for i, m in enumerate(modules)]
    return counts, handles


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_forward_stops_after_the_deepest_requested_layer(equal, family):
    backbone = vlm(equal, family)  # equal depths: the LM hooks must not land on the vision tower
    lm_layers, vision_layers = list(backbone.stacks.lm_layers), list(backbone.stacks.vision_layers)
    lm_counts, h1 = _count_calls(lm_layers)
    vision_counts, h2 = _count_calls(vision_layers)
    head_counts, h3 = _count_calls([backbone.model.lm_head])
    batch = images((32, 32), (32, 32))
    try:
        backbone.extract(batch, ["0", "1"])
        assert lm_counts == [1, 0, 0] and head_counts == [0]
        backbone.extract(batch, [str(len(lm_layers))])  # the last layer: all blocks + final norm, no head
        assert lm_counts == [2, 1, 1] and head_counts == [0]
        before = list(vision_counts)
        backbone.extract(batch, ["vision.1"])  # vision only: the language model never runs
        assert lm_counts == [2, 1, 1] and head_counts == [0]
        assert vision_counts == [before[0] + 1, *before[1:]]
    finally:
        for handle in h1 + h2 + h3:
            handle.remove()


# ------------------------------------------------------------------------------ big-model dispatch
OFFLOAD_MAPS = {
    "llava": {"model.vision_tower": "cpu", "model.multi_modal_projector": "disk",
              "model.language_model.embed_tokens": "cpu", "model.language_model.rotary_emb": "cpu",
              "model.language_model.layers.0": "cpu", "model.language_model.layers.1": "disk",
              "model.language_model.layers.2": "disk", "model.language_model.norm": "disk", "lm_head": "disk"},
    "idefics": {"model.embed_tokens": "cpu", "model.vision_model": "disk", "model.perceiver_resampler": "cpu",
                "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
                "model.gated_cross_attn_layers": "disk", "model.norm": "cpu", "lm_head": "disk"},
}


@pytest.mark.parametrize("family", sorted(OFFLOAD_MAPS))
def test_features_are_identical_when_the_model_is_split_over_cpu_and_disk(tiny, family, tmp_path):
    batch = images((40, 50), (84, 60), seed=5)
    prompts = ["what can you see ?", "describe the lesion ."]
    plain = vlm(tiny, family)
    layers = plain.layer_names()
    expected = plain.extract_with_prompts(batch, prompts, layers)
    spread = vlm(tiny, family, device_map=OFFLOAD_MAPS[family], offload_folder=str(tmp_path))
    assert "disk" in set(spread.model.hf_device_map.values())
    assert any(p.device.type == "meta" for p in spread.model.parameters())  # weights really are offloaded
    for request in (layers, ["1"], ["vision.1"], layers):  # early stops leave the dispatch hooks intact
        got = spread.extract_with_prompts(batch, prompts, request)
        for layer in request:
            np.testing.assert_allclose(got[layer], expected[layer], atol=ATOL, err_msg=f"{family} {layer}")


def test_bfloat16_weights_give_float32_features_close_to_float32(tiny):
    batch = images((40, 50), (84, 60), seed=8)
    exact = vlm(tiny, "llava").extract(batch, ["vision.1", "2"])
    backbone = vlm(tiny, "llava", dtype="bfloat16")
    assert backbone.model.dtype == torch.bfloat16 and backbone.fingerprint()["dtype"] == "bfloat16"
    half = backbone.extract(batch, ["vision.1", "2"])
    for layer in ("vision.1", "2"):
        assert half[layer].dtype == np.float32
        np.testing.assert_allclose(half[layer], exact[layer], atol=0.1, rtol=0.05)
        assert not np.array_equal(half[layer], exact[layer])  # really computed in bfloat16


# ------------------------------------------------------------------------------ CLIP
def test_clip_layers_match_transformers(tiny):
    batch = images((40, 50), (32, 32), (60, 30), seed=6)
    for pooling in ("cls", "mean"):
        backbone = create_backbone("clip-b32", path=str(tiny["clip"]), vision_pooling=pooling)
        assert isinstance(backbone, ClipBackbone)
        layers = backbone.layer_names()
        assert layers[-1] == "image_embeds" and backbone.default_layers() == ["image_embeds"]
        assert backbone.resolve_layers(-1) == [f"vision.{tiny_models.VISION_LAYERS}"]
        features = backbone.extract(batch, layers)
        pixels = backbone.processor(images=[to_pil(image) for image in batch], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = backbone.model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
            embeds = backbone.model.get_image_features(pixel_values=pixels).pooler_output
        for k in range(tiny_models.VISION_LAYERS + 1):
            expected = hidden[k][:, 0] if pooling == "cls" else hidden[k][:, 1:].mean(1)
            np.testing.assert_allclose(features[f"vision.{k}"], expected.numpy(), atol=ATOL)
        np.testing.assert_allclose(features["image_embeds"], embeds.numpy(), atol=ATOL)
    counts, handles = _count_calls(list(backbone._layers) + [backbone.model.vision_model.post_layernorm])
    try:
        backbone.extract(batch, ["vision.1"])  # stops after the first encoder layer
        assert counts == [1, 0, 0]
    finally:
        for handle in handles:
            handle.remove()


def test_zero_shot_equals_clip_logits_per_image_softmax(tiny):
    backbone = create_backbone(f"hf:{tiny['clip']}")  # a CLIP folder given as hf: becomes a CLIP backbone
    assert isinstance(backbone, ClipBackbone)
    batch = images((40, 50), (32, 32), (60, 30), (50, 50), seed=7)
    classes = ["chest x-ray", "brain mri", "lung ct"]
    scores = zero_shot_scores(backbone, batch, classes, template="a {} image", batch_size=3)
    inputs = backbone.processor(text=[f"a {c} image" for c in classes], images=[to_pil(i) for i in batch],
                                return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = backbone.model(**inputs).logits_per_image.softmax(-1).numpy()
    assert scores.shape == (4, 3)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)
    assert np.ptp(scores) > 0.05  # the tiny model does discriminate, so the comparison means something
    with pytest.raises(ModelError, match="must contain"):
        zero_shot_scores(backbone, batch, classes, template="an image")
    with pytest.raises(ModelError, match="no prompt"):
        create_backbone(f"hf:{tiny['clip']}", prompt="what is this?")


# ------------------------------------------------------------------------------ fingerprints
def test_fingerprint_records_prompt_template_pooling_and_files(tiny):
    base = vlm(tiny, "idefics3")
    fingerprint = base.fingerprint()
    json.dumps(fingerprint)
    assert fingerprint["prompt"] == DEFAULT_PROMPT
    assert DEFAULT_PROMPT in fingerprint["rendered_prompt"] and "<image>" in fingerprint["rendered_prompt"]
    assert fingerprint["rendered_prompt"].endswith("Assistant:")  # generation prompt added
    assert fingerprint["dtype"] == "float32" and fingerprint["files"]["model.safetensors"].startswith("size:")
    assert vlm(tiny, "idefics3").fingerprint() == fingerprint
    variants = [
        vlm(tiny, "idefics3", prompt="describe the image ."),
        vlm(tiny, "idefics3", domain="histological"),
        vlm(tiny, "idefics3", pooling="image_mean"),
        vlm(tiny, "idefics3", vision_pooling="mean", pooling="mean"),
    ]
    prints = [json.dumps(v.fingerprint(), sort_keys=True) for v in variants]
    assert len({json.dumps(fingerprint, sort_keys=True), *prints}) == 5
    assert "histological" in variants[1].fingerprint()["rendered_prompt"]
    # same weights, different model family folder -> different file signatures
    assert vlm(tiny, "llava").fingerprint()["files"] != fingerprint["files"]


def _idefics_tokens(backbone) -> list[str]:
    encoded = backbone.encode([to_pil(images((32, 32))[0])], [backbone.prompt])["input_ids"][0]
    return backbone.tokenizer.convert_ids_to_tokens(encoded)


def test_idefics_instruct_preset_uses_the_chat_interleaving(tiny):
    backbone = create_backbone("idefics-9b-instruct", path=str(tiny["idefics"]), prompt="describe the image .")
    assert backbone.prompt_style == "chat"
    assert _idefics_tokens(backbone) == ["<s>", "user", ":", "<fake_token_around_image>", "<image>",
                                         "<fake_token_around_image>", "describe", "the", "image", ".",
                                         "<end_of_utterance>", "assistant", ":"]


IMAGE_SLOT = ["<fake_token_around_image>", "<image>", "<fake_token_around_image>"]


@pytest.mark.parametrize("style, verb", [("study", "see"), ("study-verbatim", "seen")])
def test_base_idefics_gets_the_studys_prompt_image_first(tiny, style, verb):
    backbone = create_backbone("idefics-9b", path=str(tiny["idefics"]), prompt_style=style,
                               noun="histological picture")
    assert backbone.prompt == f"What can you {verb} on this histological picture?"
    assert _idefics_tokens(backbone) == ["<s>", *IMAGE_SLOT, "question", ":", "what", "can", "you", verb, "on",
                                         "this", "histological", "picture", "?", "answer", ":"]
    # the study's own call: the processor's defaults on [image, text]
    text = f"Question: What can you {verb} on this histological picture? Answer:"
    study = backbone.processor(text=[[to_pil(images((32, 32))[0]), text]], return_tensors="pt")["input_ids"][0]
    assert backbone.prompt_token_ids() == study.tolist()
    fingerprint = backbone.fingerprint()
    assert fingerprint["prompt_style"] == style and fingerprint["prompt_token_ids"] == study.tolist()
    assert "histological picture" in fingerprint["rendered_prompt"]  # (the tiny tokenizer lower-cases)


def test_study_prompt_is_the_base_preset_default_and_styles_change_the_cache_key(tiny):
    default = vlm(tiny, "idefics")  # the idefics-9b preset
    assert default.prompt_style == "study"
    assert default.prompt == "What can you see on this radiological image?"  # "<domain> image" without a noun
    plain = vlm(tiny, "idefics", prompt_style="plain")
    assert _idefics_tokens(plain) == ["<s>", *IMAGE_SLOT, "what", "can", "you", "see", "on", "this",
                                      "radiological", "image", "?"]
    prints = {json.dumps(vlm(tiny, "idefics", prompt_style=style).fingerprint(), sort_keys=True)
              for style in ("study", "study-verbatim", "chat", "plain")}
    assert len(prints) == 4
    with pytest.raises(ModelError, match=r"'idefics-9b'.*unknown prompt_style 'studdy'"):
        vlm(tiny, "idefics", prompt_style="studdy")
    with pytest.raises(ModelError, match=r"prompt_style 'study' is for IDEFICS v1.*use prompt_style: chat"):
        vlm(tiny, "llava", prompt_style="study")


# ------------------------------------------------------------------------------ loading policy
def test_trust_remote_code_off_and_safetensors_required_by_default(tiny, monkeypatch):
    calls: dict[str, dict] = {}
    for cls_name in ("AutoModelForImageTextToText", "AutoProcessor"):
        cls = getattr(transformers, cls_name)
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _name=cls_name, _original=original, **kwargs):
            calls[_name] = kwargs
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    vlm(tiny, "llava")
    assert calls["AutoModelForImageTextToText"]["trust_remote_code"] is False
    assert calls["AutoModelForImageTextToText"]["use_safetensors"] is True
    assert calls["AutoProcessor"]["trust_remote_code"] is False
    vlm(tiny, "llava", trust_remote_code=True)
    assert calls["AutoModelForImageTextToText"]["trust_remote_code"] is True


def test_missing_models_give_clear_errors(tiny, tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        create_backbone(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(ModelError, match="no config.json"):
        create_backbone("idefics-9b", path=str(tmp_path))
    with pytest.raises(ModelError, match=r"'HuggingFaceM4/idefics-9b' not found locally.*hf download"):
        create_backbone("idefics-9b", cache_dir=str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        create_backbone("clip-b32", cache_dir=str(tmp_path / "empty-cache"), download=True)
    with pytest.raises(ModelError, match="is a 'llava' model"):
        create_backbone("clip-b32", path=str(tiny["llava"]))
    with pytest.raises(ModelError, match="hub ids only"):
        create_backbone("idefics-9b", path=str(tiny["idefics"]), revision="main")
    with pytest.raises(ModelError, match="unknown pooling"):
        vlm(tiny, "llava", pooling="max")
    with pytest.raises(ModelError, match="unknown dtype"):
        vlm(tiny, "llava", dtype="int8")


@pytest.mark.skipif(__import__("importlib").util.find_spec("bitsandbytes") is not None,
                    reason="bitsandbytes is installed")
def test_quantization_without_bitsandbytes_is_a_clear_error(tiny):
    with pytest.raises(ModelError, match=r"model '.*llava'.*quantization='8bit' needs the bitsandbytes.*pip install"):
        vlm(tiny, "llava", quantization="8bit")


def test_config_of_another_architecture_than_the_weights_is_a_clear_error(tiny, tmp_path):
    """An hf: folder whose config.json is LLaVA's but whose weights are Idefics3's."""
    folder = tmp_path / "mixed"
    shutil.copytree(tiny["idefics3"], folder)
    shutil.copy(Path(tiny["llava"]) / "config.json", folder / "config.json")
    with pytest.raises(ModelError, match=r"model '.*mixed'.*(config.json in .* describes a 'llava' model.*"
                                         r"weights missing|config.json: 'llava')"):
        create_backbone(f"hf:{folder}")


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() > 7, reason="this machine has 8 GPUs")
def test_a_device_map_naming_a_missing_gpu_is_a_clear_error(tiny):
    with pytest.raises(ModelError, match=r"model '.*llava'.*device_map = 'cuda:7' names GPU 7, but this machine has"):
        vlm(tiny, "llava", device_map="cuda:7")
    with pytest.raises(ModelError, match=r"device_map\['model.vision_tower'\] = 7 names GPU 7"):
        vlm(tiny, "llava", device_map={"model.vision_tower": 7, "lm_head": "cpu"})
    with pytest.raises(ModelError, match=r"max_memory key 7 = 7 names GPU 7"):
        vlm(tiny, "llava", device_map="auto", max_memory={7: "1GB", "cpu": "1GB"})
    with pytest.raises(ModelError, match=r"device_map = 'gpu-zero' is not a device"):
        vlm(tiny, "llava", device_map="gpu-zero")


def test_hub_id_loads_from_the_hugging_face_cache(tiny, tmp_path):
    """A hub-cache layout (refs/main -> snapshot of symlinks to sha256-named blobs), offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--HuggingFaceM4--idefics-9b-instruct"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in Path(tiny["idefics"]).iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, repo / "blobs" / digest)
        (snapshot / file.name).symlink_to(Path("../../blobs") / digest)
    backbone = create_backbone("idefics-9b-instruct", cache_dir=str(tmp_path))
    fingerprint = backbone.fingerprint()
    assert fingerprint["source"] == "HuggingFaceM4/idefics-9b-instruct" and fingerprint["commit"] == commit
    weights = hashlib.sha256((Path(tiny["idefics"]) / "model.safetensors").read_bytes()).hexdigest()
    assert fingerprint["files"]["model.safetensors"] == f"sha256:{weights}"
    reference = vlm(tiny, "idefics", prompt_style="chat").extract(images((32, 32)), ["2"])  # the instruct default
    np.testing.assert_array_equal(backbone.extract(images((32, 32)), ["2"])["2"], reference["2"])
