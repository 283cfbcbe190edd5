"""The raw-pixel baseline: what a linear probe achieves with no model at all.

Any backbone worth using must beat this; the demo's paired test compares the best backbone with
it. Images are resized (antialiased) to ``size`` x ``size``, optionally reduced to grayscale, and
flattened.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medprobe.models.base import Backbone
from medprobe.models.imaging import resize_batch
from medprobe.models.registry import register_backbone


class PixelBackbone(Backbone):
    """Resized (optionally grayscale) pixels as the only "layer": the floor every real backbone must beat."""

    name = "pixels"
    default_batch_size = 256

    def __init__(self, size: int = 28, grayscale: bool = True) -> None:
        self.size = int(size)
        self.grayscale = bool(grayscale)

    def layer_names(self) -> list[str]:
        return ["pixels"]

    def fingerprint(self) -> dict[str, Any]:
        return {"backbone": self.name, "size": self.size, "grayscale": self.grayscale, "version": 1}

    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        self.resolve_layers(list(layers))
        batch = resize_batch(images, self.size)
        if self.grayscale:
            batch = batch.mean(axis=-1)
        return {"pixels": batch.reshape(len(images), -1).astype(np.float32)}


register_backbone(
    "pixels",
    PixelBackbone,
    "raw pixels, resized to size x size (default 28) and flattened: the no-model baseline",
    family="baseline",
    memory="none",
)
