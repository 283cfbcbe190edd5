"""Tiny, randomly initialised image encoders of every family in
:data:`medprobe.models.records.IMAGE_ENCODER_FAMILIES`, saved with their image processors.

Same contract as :mod:`medprobe.testing.tiny_models` (which re-exports these builders into its
``BUILDERS``): ``build_tiny_<key>(directory) -> Path`` writes a model and its processor, built from
config objects offline, deterministic (``seed``), two blocks / stages so early stopping has
something to skip, 32 px images. Register tokens are on (DINOv2-with-registers, DINOv3) so the
pooling tests see them. DINOv3's processor exists only for torchvision, so its
``preprocessor_config.json`` is written as the real checkpoints ship it; the backbone rebuilds it
in float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

SIDE = 32
_VIT = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
        "image_size": SIDE, "patch_size": 8}
_STAGES = {"hidden_sizes": [8, 16], "depths": [1, 1]}
_SQUARE = {"height": SIDE, "width": SIDE}
#: a dual encoder's (unused) text tower: a small vocabulary whose special ids are inside it
_TEXT_TOKENS = {"vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 1, "eos_token_id": 2,
                "pad_token_id": 0}
_MEAN_STD = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}

__all__ = [
    "build_tiny_dinov2", "build_tiny_dinov2_registers", "build_tiny_dinov3_vit", "build_tiny_dinov3_convnext",
    "build_tiny_vit", "build_tiny_siglip", "build_tiny_siglip_vision", "build_tiny_siglip2",
    "build_tiny_clip_vision", "build_tiny_convnext", "build_tiny_convnextv2", "build_tiny_swin",
    "build_tiny_swinv2",
]


def _save(directory: str | Path, model_class: str, config: Any, processor: Any, seed: int, **options: Any) -> Path:
    """Build ``model_class(config, **options)`` with ``seed``, save it and the image processor into ``directory``."""
    import transformers

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    getattr(transformers, model_class)(config, **options).eval().save_pretrained(path)
    if isinstance(processor, dict):
        (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    else:
        processor.save_pretrained(path)
    return path


def _pil(name: str, **settings: Any) -> Any:
    import transformers

    return getattr(transformers, name)(**settings)


def build_tiny_dinov2(directory: str | Path, *, seed: int = 0) -> Path:
    """``Dinov2Model`` (RAD-DINO, Phikon-v2, facebook/dinov2-*) with DINOv2's processor (resize + crop)."""
    from transformers import Dinov2Config

    processor = _pil("BitImageProcessorPil", size={"shortest_edge": SIDE}, crop_size=_SQUARE, **_MEAN_STD)
    return _save(directory, "Dinov2Model", Dinov2Config(**_VIT), processor, seed)


def build_tiny_dinov2_registers(directory: str | Path, *, seed: int = 0) -> Path:
    """``Dinov2WithRegistersModel`` with two register tokens after the CLS token."""
    from transformers import Dinov2WithRegistersConfig

    processor = _pil("BitImageProcessorPil", size={"shortest_edge": SIDE}, crop_size=_SQUARE, **_MEAN_STD)
    return _save(directory, "Dinov2WithRegistersModel", Dinov2WithRegistersConfig(**_VIT, num_register_tokens=2),
                 processor, seed)


def build_tiny_dinov3_vit(directory: str | Path, *, seed: int = 0) -> Path:
    """``DINOv3ViTModel`` (two register tokens) with the torchvision-only processor's config."""
    from transformers import DINOv3ViTConfig

    processor = {"image_processor_type": "DINOv3ViTImageProcessor", "size": _SQUARE, "do_resize": True,
                 "do_rescale": True, "do_normalize": True, "rescale_factor": 1 / 255, **_MEAN_STD}
    return _save(directory, "DINOv3ViTModel", DINOv3ViTConfig(**_VIT, num_register_tokens=2), processor, seed)


def build_tiny_dinov3_convnext(directory: str | Path, *, seed: int = 0) -> Path:
    """``DINOv3ConvNextModel``: two stages; ``hidden_states[0]`` is the pixels."""
    from transformers import DINOv3ConvNextConfig

    processor = {"image_processor_type": "DINOv3ViTImageProcessor", "size": _SQUARE, "do_resize": True,
                 "do_rescale": True, "do_normalize": True, "rescale_factor": 1 / 255, **_MEAN_STD}
    return _save(directory, "DINOv3ConvNextModel", DINOv3ConvNextConfig(**_STAGES), processor, seed)


def build_tiny_vit(directory: str | Path, *, seed: int = 0) -> Path:
    """``ViTModel`` without a pooler (owkin/phikon)."""
    from transformers import ViTConfig

    processor = _pil("ViTImageProcessorPil", size=_SQUARE, **_MEAN_STD)
    return _save(directory, "ViTModel", ViTConfig(**_VIT), processor, seed, add_pooling_layer=False)


def build_tiny_siglip(directory: str | Path, *, seed: int = 0) -> Path:
    """A whole ``SiglipModel`` (text tower too), as google/medsiglip-448 ships: the backbone loads its vision tower."""
    from transformers import SiglipConfig

    text = {k: v for k, v in _VIT.items() if k not in ("image_size", "patch_size")}
    config = SiglipConfig(text_config={**text, **_TEXT_TOKENS}, vision_config=_VIT)
    return _save(directory, "SiglipModel", config, _pil("SiglipImageProcessorPil", size=_SQUARE), seed)


def build_tiny_siglip_vision(directory: str | Path, *, seed: int = 0) -> Path:
    """A vision-only ``SiglipVisionModel`` checkpoint."""
    from transformers import SiglipVisionConfig

    processor = _pil("SiglipImageProcessorPil", size=_SQUARE)
    return _save(directory, "SiglipVisionModel", SiglipVisionConfig(**_VIT), processor, seed)


def build_tiny_siglip2(directory: str | Path, *, seed: int = 0) -> Path:
    """A whole ``Siglip2Model`` (NaFlex: variable patch grids, padding patches masked)."""
    from transformers import Siglip2Config

    vision = {k: v for k, v in _VIT.items() if k != "image_size"} | {"num_patches": 16}
    text = {k: v for k, v in _VIT.items() if k not in ("image_size", "patch_size")}
    config = Siglip2Config(text_config={**text, **_TEXT_TOKENS}, vision_config=vision)
    processor = _pil("Siglip2ImageProcessorPil", patch_size=8, max_num_patches=16)
    return _save(directory, "Siglip2Model", config, processor, seed)


def build_tiny_clip_vision(directory: str | Path, *, seed: int = 0) -> Path:
    """A ``CLIPVisionModel`` checkpoint (model type ``clip_vision_model``)."""
    from transformers import CLIPVisionConfig

    processor = _pil("CLIPImageProcessorPil", size={"shortest_edge": SIDE}, crop_size=_SQUARE)
    return _save(directory, "CLIPVisionModel", CLIPVisionConfig(**_VIT), processor, seed)


def build_tiny_convnext(directory: str | Path, *, seed: int = 0) -> Path:
    """``ConvNextModel``: two stages, feature maps pooled over space."""
    from transformers import ConvNextConfig

    processor = _pil("ConvNextImageProcessorPil", size={"shortest_edge": SIDE}, **_MEAN_STD)
    return _save(directory, "ConvNextModel", ConvNextConfig(**_STAGES, num_stages=2), processor, seed)


def build_tiny_convnextv2(directory: str | Path, *, seed: int = 0) -> Path:
    """``ConvNextV2Model``: two stages."""
    from transformers import ConvNextV2Config

    processor = _pil("ConvNextImageProcessorPil", size={"shortest_edge": SIDE}, **_MEAN_STD)
    return _save(directory, "ConvNextV2Model", ConvNextV2Config(**_STAGES, num_stages=2), processor, seed)


_SWIN = {"image_size": SIDE, "patch_size": 4, "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": 2}


def build_tiny_swin(directory: str | Path, *, seed: int = 0) -> Path:
    """``SwinModel``: two stages of tokens without a CLS token."""
    from transformers import SwinConfig

    return _save(directory, "SwinModel", SwinConfig(**_SWIN), _pil("ViTImageProcessorPil", size=_SQUARE), seed)


def build_tiny_swinv2(directory: str | Path, *, seed: int = 0) -> Path:
    """``Swinv2Model``: two stages."""
    from transformers import Swinv2Config

    return _save(directory, "Swinv2Model", Swinv2Config(**_SWIN), _pil("ViTImageProcessorPil", size=_SQUARE),
                 seed)


#: ``{key: build_tiny_<key>}`` (the ``tiny`` keys of the image-encoder family records)
IMAGE_ENCODER_BUILDERS: dict[str, Callable[..., Path]] = {
    name[len("build_tiny_"):]: globals()[name] for name in __all__
}
