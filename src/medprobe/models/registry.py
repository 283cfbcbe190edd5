"""Short names -> backbone loaders, in the spirit of timm / open_clip.

``create_backbone("dinov2-s-onnx", pooling="mean")`` builds a backbone; ``hf:<path-or-id>`` builds a
generic Hugging Face image-text-to-text backbone. Each family module registers its presets when
imported; :func:`_load_families` imports them lazily so ``medprobe backbones`` stays fast and an
optional dependency that is not installed only matters when its backbone is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from medprobe.errors import ModelError
from medprobe.models.base import Backbone


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    factory: Callable[..., Backbone]
    description: str
    family: str
    #: approximate memory the weights need, for the docs and ``medprobe backbones``
    memory: str = ""


_REGISTRY: dict[str, BackboneEntry] = {}
_PREFIXES: dict[str, BackboneEntry] = {}
_FAMILY_MODULES = (
    "medprobe.models.pixels",
    "medprobe.models.onnx_backbone",
    "medprobe.models.hf",
)


def register_backbone(
    name: str, factory: Callable[..., Backbone], description: str, family: str, memory: str = ""
) -> None:
    """Register ``name``; a name ending in ``:`` is a prefix (``hf:`` takes the rest as a path)."""
    entry = BackboneEntry(name, factory, description, family, memory)
    (_PREFIXES if name.endswith(":") else _REGISTRY)[name] = entry


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:  # a family whose optional dependency is absent
            if not (error.name or "").startswith("medprobe"):
                continue
            raise


def list_backbones() -> list[BackboneEntry]:
    _load_families()
    return sorted([*_REGISTRY.values(), *_PREFIXES.values()], key=lambda e: (e.family, e.name))


def create_backbone(name: str, **options: Any) -> Backbone:
    """Build the backbone registered as ``name`` with family-specific ``options``."""
    _load_families()
    if name in _REGISTRY:
        return _REGISTRY[name].factory(**options)
    for prefix, entry in _PREFIXES.items():
        if name.startswith(prefix):
            return entry.factory(name[len(prefix):], **options)
    known = sorted(_REGISTRY) + sorted(_PREFIXES)
    raise ModelError(f"unknown backbone {name!r}; known: {known} (run `medprobe backbones`)")
