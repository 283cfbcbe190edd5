"""Crops and tiles mapped back to their images (:mod:`medprobe.models.vision_tokens`), per family layout.

For each layout the model's own ``get_image_features`` runs on a tiny random instance
(:mod:`medprobe.testing.tiny_families`, image side shrunk so a crop is a few patches) with
``pixel_values`` built by hand the way the family's processor lays them out:

* Aya Vision: 4-D, the crops of all images concatenated (image b's share of the image tokens says
  how many are its);
* InternVL: 4-D tiles, likewise, with a CLS token per tile;
* LLaVA-NeXT: 5-D ``(images, max crops, C, H, W)`` with ``image_sizes``, short images padded with
  all-zero crops (the model drops them by ``image_sizes``, medprobe by the zeros: the test checks
  the two agree);
* Idefics3: 5-D tiles padded with all-zero crops, and a ``pixel_attention_mask`` whose padded
  half of a tile becomes masked patches.

medprobe's hooks (:func:`~medprobe.models.torch_hooks.run_hooked` with
:func:`~medprobe.models.vision_tokens.tower_call_recorder`, what the backbone extracts with) record
every vision hidden state, and :func:`~medprobe.models.vision_tokens.pool_vision` must equal
pooling the tower's own ``output_hidden_states`` by hand on that image's real crops: ``mean`` over
every patch token of all of its crops (CLS and masked patches left out), ``cls`` the mean of its
crops' CLS tokens. The prompt rows are padded on both sides, with image-token ids under the padding
of one row, so only real tokens count.

Run time (2 shared cores): about 20 s.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: huggingface_hub reads it once

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medprobe.errors import ModelError  # noqa: E402
from medprobe.models.stacks import find_stacks  # noqa: E402
from medprobe.models.torch_hooks import run_hooked  # noqa: E402
from medprobe.models.vision_tokens import pool_vision, tower_call_recorder, tower_layout  # noqa: E402
from medprobe.testing.tiny_families import tiny_config  # noqa: E402

PAD = 0


def tiny_model(model_type: str, *, side: int, **config: object):
    """The family's tiny random model with a ``side`` px vision input (and further top-level ``config``)."""
    from transformers import AutoModelForImageTextToText

    settings = tiny_config(model_type)
    vision = settings.vision_config
    vision.image_size = [side, side] if isinstance(vision.image_size, (list, tuple)) else side
    for key, value in config.items():
        setattr(settings, key, value)
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(settings).eval()


def prompt_rows(image_tokens: list[int], token_id: int) -> dict[str, torch.Tensor]:
    """One prompt row per image holding ``image_tokens[b]`` image tokens between text tokens; row 0
    left-padded, the last right-padded, the padding of row 0 made of image-token ids (masked out)."""
    rows = [[7, 8] + [token_id] * count + [9] for count in image_tokens]
    width = max(len(row) for row in rows) + 2
    ids, mask = [], []
    for b, row in enumerate(rows):
        pad = width - len(row)
        if b == 0:
            ids.append([token_id] * pad + row)
            mask.append([0] * pad + [1] * len(row))
        else:
            ids.append(row + [PAD] * pad)
            mask.append([1] * len(row) + [0] * pad)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def pooled_by_medprobe(model, inputs: dict, call, batch: int, pooling: str) -> dict[int, torch.Tensor]:
    """Every vision hidden state, hooked while ``call()`` runs the model's image path, pooled per image."""
    stacks = find_stacks(model, "t")
    keys = [("vision", k) for k in range(stacks.num_vision_layers + 1)]
    tower_kwargs, record = tower_call_recorder(stacks.vision_module)
    captured = run_hooked(stacks, keys, call, name="t", on_tower=record)
    token_ids = [int(model.config.image_token_id)]
    layout = tower_layout(stacks.vision_module)
    return {k: pool_vision(captured[("vision", k)], inputs, tower_kwargs, batch, pooling=pooling, layout=layout,
                           image_token_ids=token_ids, name="t") for k in range(stacks.num_vision_layers + 1)}


def pooled_by_hand(model, crops: torch.Tensor, counts: list[int], pooling: str, *, has_cls: bool,
                   patch_mask: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """The tower's own hidden states on the real ``crops`` (``counts[b]`` of image b, in order), pooled per image."""
    tower = find_stacks(model, "t").vision_module
    extra = {} if patch_mask is None else {"patch_attention_mask": patch_mask}
    with torch.no_grad():
        states = tower(pixel_values=crops, output_hidden_states=True, **extra).hidden_states
    valid = torch.ones(states[0].shape[:2], dtype=torch.bool)
    if patch_mask is not None:
        valid = patch_mask.reshape(len(crops), -1)
    if has_cls:
        valid[:, 0] = False
    out = {}
    for k, hidden in enumerate(states):
        rows, start = [], 0
        for count in counts:
            part, keep = hidden[start:start + count], valid[start:start + count]
            rows.append(part[:, 0].mean(dim=0) if pooling == "cls" else part[keep].mean(dim=0))
            start += count
        out[k] = torch.stack(rows)
    return out


def assert_same(ours: dict[int, torch.Tensor], theirs: dict[int, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-6, msg=f"vision.{k}")


def test_aya_vision_crops_of_all_images_concatenated():
    model = tiny_model("aya_vision", side=56)  # 4 x 4 patches of 14 px, downsampled 2x: 4 tokens a crop
    counts = [2, 1, 3]
    crops = torch.randn(sum(counts), 3, 56, 56, generator=torch.Generator().manual_seed(1))
    inputs = {**prompt_rows([4 * c for c in counts], model.config.image_token_id), "pixel_values": crops}
    ours = pooled_by_medprobe(model, inputs, lambda: model.get_image_features(pixel_values=crops), 3, "mean")
    assert_same(ours, pooled_by_hand(model, crops, counts, "mean", has_cls=False))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_internvl_tiles_with_a_cls_token_each(pooling):
    model = tiny_model("internvl", side=56)  # 4 x 4 patches + CLS; pixel shuffle 0.5: 4 tokens a tile
    counts = [1, 3]
    tiles = torch.randn(sum(counts), 3, 56, 56, generator=torch.Generator().manual_seed(2))
    inputs = {**prompt_rows([4 * c for c in counts], model.config.image_token_id), "pixel_values": tiles}
    assert tower_layout(find_stacks(model, "t").vision_module).has_cls
    ours = pooled_by_medprobe(model, inputs, lambda: model.get_image_features(pixel_values=tiles), 2, pooling)
    assert_same(ours, pooled_by_hand(model, tiles, counts, pooling, has_cls=True))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_llava_next_padded_crops_follow_image_sizes(pooling):
    pinpoints = [[28, 56], [56, 28], [56, 56]]
    model = tiny_model("llava_next", side=28, image_grid_pinpoints=pinpoints)
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    image_sizes = torch.tensor([[20, 40], [50, 50]])  # (height, width): best fits 28 x 56 and 56 x 56
    counts = [image_size_to_num_patches(size.tolist(), pinpoints, 28) for size in image_sizes]
    assert counts == [3, 5]  # the base image + 1 x 2 / 2 x 2 crops
    real = torch.randn(sum(counts), 3, 28, 28, generator=torch.Generator().manual_seed(3))
    pixels = torch.zeros(2, max(counts), 3, 28, 28)  # the processor pads short images with zero crops
    pixels[0, :3], pixels[1] = real[:3], real[3:]
    inputs = {**prompt_rows([10, 12], model.config.image_token_id), "pixel_values": pixels}
    ours = pooled_by_medprobe(model, inputs,
                              lambda: model.get_image_features(pixel_values=pixels, image_sizes=image_sizes), 2, pooling)
    assert_same(ours, pooled_by_hand(model, real, counts, pooling, has_cls=True))


def test_idefics3_tiles_padded_crops_and_masked_patches():
    model = tiny_model("idefics3", side=64)  # 2 x 2 patches of 32 px a tile
    counts = [3, 1]
    generator = torch.Generator().manual_seed(4)
    pixels = torch.zeros(2, 3, 3, 64, 64)
    mask = torch.zeros(2, 3, 64, 64, dtype=torch.bool)
    pixels[0] = torch.randn(3, 3, 64, 64, generator=generator)
    mask[0] = True
    pixels[1, 0, :, :, :32] = torch.randn(3, 64, 32, generator=generator)  # a narrow image: right half padding
    mask[1, 0, :, :32] = True
    inputs = {**prompt_rows([3, 1], model.config.image_token_id), "pixel_values": pixels,
              "pixel_attention_mask": mask}
    ours = pooled_by_medprobe(model, inputs,
                              lambda: model.get_image_features(pixel_values=pixels, pixel_attention_mask=mask), 2,
                              "mean")
    real = torch.cat([pixels[0], pixels[1, :1]])
    patch_mask = torch.ones(4, 2, 2, dtype=torch.bool)
    patch_mask[3, :, 1] = False  # the padded right column of patches
    assert_same(ours, pooled_by_hand(model, real, counts, "mean", has_cls=False, patch_mask=patch_mask))
    # the masked patches are left out: pooling them in would differ
    with_padding = pooled_by_hand(model, real, counts, "mean", has_cls=False)
    assert not torch.allclose(ours[1][1], with_padding[1][1])


def test_crops_that_cannot_be_mapped_are_refused():
    from medprobe.models.vision_tokens import crops_per_image

    inputs = {**prompt_rows([4, 4], 99), "pixel_values": torch.randn(5, 3, 8, 8)}  # 5 crops, equal token shares
    with pytest.raises(ModelError, match="cannot map 5 vision crops to 2 images"):
        crops_per_image(5, 2, inputs, [99], "t")
    assert crops_per_image(6, 2, {**inputs, "pixel_values": torch.randn(6, 3, 8, 8)}, [99], "t") == [3, 3]
