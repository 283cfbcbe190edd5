"""What a backbone is: something that turns a batch of images into activations at named layers.

Every backbone (raw pixels, ONNX networks, Hugging Face VLMs) implements :class:`Backbone`.
The feature cache only talks to this interface, so a new model family is one new class plus a
registry entry.

Images arrive as float32 arrays ``(H, W, 3)`` in ``[0, 1]`` (see ``medprobe.data.images``);
each backbone does its own resizing / normalisation and says so in :meth:`Backbone.fingerprint`.
Activations leave as float32 arrays ``(batch, dim)``: pooling over tokens or space happens inside
the backbone, because only it knows which tokens are image tokens.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medprobe.errors import ModelError
from medprobe.hardware import PrecisionChoice


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a (model) file, read in 4 MiB blocks; part of backbone fingerprints."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class Backbone(ABC):
    """A model whose internal activations we probe."""

    #: registry name, e.g. ``"dinov2-s-onnx"``
    name: str = ""
    #: images per forward pass when the caller does not say otherwise
    default_batch_size: int = 16
    #: where the weights come from (file, hub id@commit, wheel), shown in run.json and the report
    provenance: str = ""
    #: the text shown with every image, for backbones that read a prompt (VLMs); None otherwise
    prompt: str | None = None
    #: how that prompt is laid out (``chat``, ``plain``, ``study`` ...); None without a prompt
    prompt_style: str | None = None

    @abstractmethod
    def layer_names(self) -> list[str]:
        """All layers this backbone can return, shallow to deep, in a stable order."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the activations: model file/revision, prompt, pooling,
        preprocessing. Stored with the cache and hashed into its key, so changing any of it
        never reuses stale features. Values must be JSON-serialisable."""

    @abstractmethod
    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Activations of ``images`` at ``layers`` (names from :meth:`layer_names`).

        Returns ``{layer: float32 array (len(images), dim)}``. Implementations should compute no
        more than needed to produce the deepest requested layer.
        """

    def layer_stacks(self) -> dict[str, str]:
        """``{layer: stack}`` for every layer: the stack a layer's probe is selected within.

        The backbone declares it (timm's ``feature_info`` idea) because only the backbone knows
        which of its modules a layer lives in; no other package parses layer names to find out.
        A single-stack model (pixels, an ONNX network, CLIP's vision tower) is all ``"main"``;
        a vision-language model says ``"lm"`` and ``"vision"``.
        """
        return {layer: "main" for layer in self.layer_names()}

    def default_layers(self) -> list[str]:
        """Layers probed when a run file does not name any: the last one."""
        return self.layer_names()[-1:]

    def resolve_layers(self, spec: Any) -> list[str]:
        """Turn a user's layer request into layer names.

        Accepts ``"all"``, ``None`` (the default layers), an int index (negative counts from the
        end), a layer name, a ``"start:stop:step"`` slice string, or a list of any of those.
        """
        names = self.layer_names()
        if spec is None:
            return self.default_layers()
        if isinstance(spec, str) and spec == "all":
            return list(names)
        if isinstance(spec, (list, tuple)):
            resolved: list[str] = []
            for item in spec:
                for layer in self.resolve_layers(item):
                    if layer not in resolved:
                        resolved.append(layer)
            return resolved
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            if not -len(names) <= spec < len(names):
                raise ModelError(
                    f"backbone {self.name!r}: layer index {spec} is out of range; it has "
                    f"{len(names)} layers (indices 0..{len(names) - 1} or -{len(names)}..-1): {names}"
                )
            return [names[spec]]
        if isinstance(spec, str):
            if spec in names:
                return [spec]
            if ":" in spec:
                parts = [int(p) if p.strip() else None for p in spec.split(":")]
                return list(names[slice(*parts)])
            try:
                return self.resolve_layers(int(spec))
            except ValueError:
                pass
        raise ModelError(
            f"backbone {self.name!r}: unknown layer {spec!r}; available layers: {names}"
        )

    def compute_precision(self) -> PrecisionChoice | None:
        """The precision the forward passes run in and why (``medprobe plan``, the run's console,
        run.json): an ONNX backbone's ``precision_choice``, a torch backbone's loaded model's
        (``self.loaded.precision``); None for NumPy backbones such as ``pixels``."""
        own = getattr(self, "precision_choice", None)
        return own if own is not None else getattr(getattr(self, "loaded", None), "precision", None)

    def close(self) -> None:
        """Release model memory (GPU, sessions). Called when a run is done with the backbone."""
