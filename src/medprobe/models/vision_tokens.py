"""One vector per image from a vision encoder's tokens, whatever way the model batches its crops.

Why a module of its own: vision encoders see images in many layouts and a hidden state has to be
mapped back to the images of the batch before it is pooled. Each layout is recognised from what
the model was given (``pixel_values``, the encoder's own call arguments) and what came back:

* **packed** (Qwen2-VL and its descendants): a 2-D ``(patches, width)`` sequence for all images,
  split by ``grid_thw`` (``t * h * w`` patches per image, or that over the merge factor for a state
  after the tower's patch merger, GLM-4V's last);
* **tiles** (Mllama): ``(images, tiles * padded_tokens, width)``; tokens of masked tiles
  (``aspect_ratio_mask``) and the padding after each tile's tokens are left out;
* **one sequence for all images** (Pixtral: Mistral 3, LightOnOCR): ``(1, patches, width)``, split by
  the ``image_sizes`` the tower is called with (``(h // patch) * (w // patch)`` patches per image);
* **one crop per image**: as many encoder rows as images (a spatial map ``(crops, H, W, width)``,
  GOT-OCR2's, counts as ``H * W`` tokens);
* **crops per image, padded** (Idefics2/3, LLaVA-NeXT): 5-D ``pixel_values`` ``(images, crops, C, H, W)``
  whose padding crops are all zero (Idefics2/3's own rule for dropping them; LLaVA-NeXT drops them
  by ``image_sizes``, and its processor pads with zero crops, so the two agree -- tested);
* **crops of all images concatenated** (Aya Vision, InternVL, GOT-OCR2): 4-D ``pixel_values``
  ``(crops, C, H, W)``; every crop becomes the same number of image tokens in the prompt, so image
  b has ``crops * image_tokens[b] / sum(image_tokens)`` of them.

Anything else is a :class:`~medprobe.errors.ModelError`, never a guess. Patch tokens are averaged
over every crop of an image (``mean``, CLS and padded patches excluded), or the CLS tokens of its
crops are (``cls``). Why every crop alike rather than the global view's CLS: the downscaled whole
image is the first crop in LLaVA-NeXT but the last in Idefics3, InternVL and Aya Vision, only
present when an image is split, and nothing in the inputs marks it; the mean over crops is defined
the same way for every family (``tests/models/test_vision_tokens.py`` checks both poolings against
the tower's own hidden states for each layout).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from medprobe.errors import ModelError

#: the vision encoder's call arguments that say how its tokens map to images (:func:`tower_call_recorder`)
TOWER_ARGUMENTS = ("patch_attention_mask", "grid_thw", "aspect_ratio_mask", "image_sizes")


@dataclass(frozen=True)
class TowerLayout:
    """What pooling needs to know of a vision encoder's token layout."""

    #: every crop's sequence starts with a CLS token
    has_cls: bool
    #: tokens of one tile before padding (Mllama's ``num_patches``, CLS included); None elsewhere
    tile_tokens: int | None = None
    #: the tower's patch side in pixels (splits Pixtral's one sequence by ``image_sizes``); None if unstated
    patch_size: int | None = None


def tower_layout(tower: Any) -> TowerLayout:
    """The layout of ``tower``: a CLS token if it has a class embedding / CLS parameter."""
    names = [name for name, _ in tower.named_parameters()] if tower is not None else []
    has_cls = any(name.endswith(("class_embedding", "cls_token")) for name in names)
    tile_tokens = getattr(tower, "num_patches", None) if hasattr(tower, "max_num_tiles") else None
    patch = getattr(getattr(tower, "config", None), "patch_size", None)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    return TowerLayout(has_cls=has_cls, tile_tokens=tile_tokens, patch_size=patch if isinstance(patch, int) else None)


def tower_call_recorder(tower: Any) -> tuple[dict[str, Any], Callable[[tuple, dict], None]]:
    """``(tower_kwargs, record)`` for one forward pass: ``record(args, kwargs)``, called with the vision
    encoder's call (``on_tower`` of :func:`~medprobe.models.torch_hooks.run_hooked`), keeps its
    :data:`TOWER_ARGUMENTS`, positional or keyword, in ``tower_kwargs`` as CPU tensors for :func:`pool_vision`.

    Why from the call: the model computes them from its inputs (Idefics3's patch mask from the pixel
    mask of its real crops), so reading what the tower was given needs no copy of that logic."""
    import torch

    signature = inspect.signature(tower.forward) if tower is not None else None
    tower_kwargs: dict[str, Any] = {}

    def record(args: tuple, kwargs: dict) -> None:
        try:
            named = {**signature.bind_partial(*args).arguments, **kwargs}  # type: ignore[union-attr]
        except TypeError:
            named = dict(kwargs)
        for key in TOWER_ARGUMENTS:
            if isinstance(named.get(key), torch.Tensor):
                tower_kwargs[key] = named[key].detach().cpu()

    return tower_kwargs, record


def crops_per_image(rows: int, batch: int, inputs: Any, image_token_ids: list[int], name: str) -> list[int]:
    """How many of the encoder's ``rows`` (crops) belong to each of the ``batch`` images, in order."""
    import torch

    if rows == batch:
        return [1] * batch
    pixels = inputs.get("pixel_values")
    counts: list[int] | None = None
    if pixels is not None and pixels.ndim == 5 and pixels.shape[0] == batch:
        counts = (~(pixels == 0).flatten(2).all(dim=-1)).sum(dim=1).tolist()
    elif pixels is not None and pixels.ndim == 4 and pixels.shape[0] == rows and image_token_ids:
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        tokens = (torch.isin(ids, torch.tensor(image_token_ids)) & mask).sum(dim=1).tolist()
        total = sum(tokens)
        if total and all(t * rows % total == 0 for t in tokens):
            counts = [t * rows // total for t in tokens]
    if counts is None or sum(counts) != rows or min(counts) < 1:
        raise ModelError(f"backbone {name!r}: cannot map {rows} vision crops to {batch} images")
    return counts


def pool_vision(hidden: Any, inputs: Any, tower_kwargs: dict[str, Any], batch: int, *, pooling: str,
                layout: TowerLayout, image_token_ids: list[int], name: str) -> Any:
    """``(batch, width)`` from one vision hidden state (see the module docstring for the layouts)."""
    import torch

    if hidden.ndim == 4:  # a spatial map per crop (GOT-OCR2's SAM-style encoder): its tokens in a row
        hidden = hidden.flatten(1, 2)
    if hidden.ndim == 3 and hidden.shape[0] == 1 < batch and tower_kwargs.get("grid_thw") is not None:
        hidden = hidden[0]  # packed patches in a batch of one (Hunyuan V4-VL)
    if hidden.ndim == 2:
        grid = tower_kwargs.get("grid_thw")
        if grid is None or len(grid) != batch:
            raise ModelError(f"backbone {name!r}: cannot split packed vision tokens into {batch} images")
        if pooling == "cls":
            raise ModelError(f"backbone {name!r}: this vision tower has no CLS token")
        return torch.stack([part.mean(dim=0) for part in hidden.split(_packed_sizes(grid, hidden.shape[0], name))])
    tiles = tower_kwargs.get("aspect_ratio_mask")
    if tiles is not None and layout.tile_tokens is not None:
        return _pool_tiles(hidden, tiles, layout.tile_tokens, pooling, batch, name)
    sizes = tower_kwargs.get("image_sizes")
    if hidden.shape[0] == 1 < batch and sizes is not None and len(sizes) == batch and layout.patch_size:
        return _pool_one_sequence(hidden[0], sizes, layout.patch_size, pooling, name)
    counts = crops_per_image(hidden.shape[0], batch, inputs, image_token_ids, name)
    crops = hidden.shape[0]
    valid = torch.ones(hidden.shape[:2], dtype=torch.bool)
    patch_mask = tower_kwargs.get("patch_attention_mask")
    if patch_mask is not None and patch_mask.shape[0] == crops:
        flat = patch_mask.reshape(crops, -1).bool()
        if flat.shape[1] == hidden.shape[1]:
            valid = flat
    if layout.has_cls:
        valid[:, 0] = False
    rows = []
    for part, part_valid in zip(hidden.split(counts), valid.split(counts)):
        rows.append(part[:, 0].mean(dim=0) if pooling == "cls" else part[part_valid].mean(dim=0))
    return torch.stack(rows)


def _packed_sizes(grid: Any, tokens: int, name: str) -> list[int]:
    """Tokens of each image in a packed sequence of ``tokens``: ``t * h * w`` patches, or the same
    divided by the merge factor where the state is the tower's merged output (GLM-4V ties its last
    hidden state to the patches after its 2x2 merger)."""
    patches = grid.prod(-1).tolist()
    total = sum(patches)
    if tokens == total:
        return patches
    if tokens and total % tokens == 0 and all(p % (total // tokens) == 0 for p in patches):
        return [p // (total // tokens) for p in patches]
    raise ModelError(f"backbone {name!r}: cannot split {tokens} packed vision tokens into images of {patches} patches")


def _pool_one_sequence(hidden: Any, image_sizes: Any, patch: int, pooling: str, name: str) -> Any:
    """Pixtral: the patches of every image in one sequence, ``(h // patch) * (w // patch)`` per image."""
    import torch

    counts = [(int(h) // patch) * (int(w) // patch) for h, w in image_sizes.tolist()]
    if sum(counts) != hidden.shape[0] or pooling == "cls":
        raise ModelError(f"backbone {name!r}: cannot split {hidden.shape[0]} vision tokens into images of "
                         f"{counts} patches" + (" (this tower has no CLS token)" if pooling == "cls" else ""))
    return torch.stack([part.mean(dim=0) for part in hidden.split(counts)])


def _pool_tiles(hidden: Any, tile_mask: Any, tile_tokens: int, pooling: str, batch: int, name: str) -> Any:
    """Mllama: ``(images, tiles * padded, width)``; real tiles only, CLS first in each tile, padding last."""
    mask = tile_mask.reshape(batch, -1).bool()  # one image per sample: (batch, max tiles)
    if hidden.shape[0] != batch or hidden.shape[1] % mask.shape[1]:
        raise ModelError(f"backbone {name!r}: cannot map vision tiles {tuple(hidden.shape)} to {batch} images")
    per_tile = hidden.reshape(batch, mask.shape[1], -1, hidden.shape[-1])
    rows = []
    for b in range(batch):
        real = per_tile[b][mask[b]]  # (real tiles, padded tokens, width)
        rows.append(real[:, 0].mean(dim=0) if pooling == "cls" else real[:, 1:tile_tokens].flatten(0, 1).mean(dim=0))
    import torch

    return torch.stack(rows)
