"""Short names -> backbone loaders, in the spirit of timm / open_clip.

``create_backbone("dinov2-s-onnx", pooling="mean")`` builds a backbone; ``hf:<path-or-id>`` builds a
generic Hugging Face image-text-to-text backbone. Each family module registers its presets when
imported; :func:`_load_families` imports them lazily so ``medprobe backbones`` stays fast and an
optional dependency that is not installed only matters when its backbone is asked for.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from medprobe.errors import ConfigError, ModelError
from medprobe.models.base import Backbone


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone: its factory and what ``medprobe backbones`` shows about it."""

    name: str
    factory: Callable[..., Backbone]
    description: str
    family: str
    #: approximate memory the weights need, for the docs and ``medprobe backbones``
    memory: str = ""
    #: option names the factory accepts; ``None`` when it cannot be known (the factory then checks)
    options: tuple[str, ...] | None = None


_REGISTRY: dict[str, BackboneEntry] = {}
_PREFIXES: dict[str, BackboneEntry] = {}
_FAMILY_MODULES = (
    "medprobe.models.pixels",
    "medprobe.models.onnx_backbone",
    "medprobe.models.hf_presets",
)


def factory_options(factory: Callable[..., Any], skip: int = 0) -> tuple[str, ...] | None:
    """The keyword names ``factory`` accepts (after its first ``skip`` positional parameters), or
    ``None`` when it takes ``**kwargs`` and so cannot say."""
    parameters = list(inspect.signature(factory).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def register_backbone(
    name: str, factory: Callable[..., Backbone], description: str, family: str, memory: str = "",
    options: Sequence[str] | None = None,
) -> None:
    """Register ``name``; a name ending in ``:`` is a prefix (``hf:`` takes the rest as a path).

    ``options`` names the accepted options when the factory's signature cannot (a ``**options``
    pass-through); otherwise they are read from the signature, so a typo in a run file is caught
    before any model is loaded. A name registered twice is an error (as in eva's registry): a
    silent overwrite would let one preset shadow another, and which one won would depend on
    import order."""
    table = _PREFIXES if name.endswith(":") else _REGISTRY
    if name in table:
        raise ModelError(f"backbone {name!r} is already registered (family {table[name].family!r}: "
                         f"{table[name].description}); choose another name")
    accepted = tuple(options) if options is not None else factory_options(factory, 1 if name.endswith(":") else 0)
    table[name] = BackboneEntry(name, factory, description, family, memory, accepted)


#: family modules not loaded because an optional dependency is missing: ``{module: dependency}``
_SKIPPED: dict[str, str] = {}


def _load_families() -> None:
    """Import every family module; one whose optional dependency is missing is skipped and
    remembered, so an unknown-backbone error can say which dependency would have provided it."""
    for module in _FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:  # a family whose optional dependency is absent
            if not (error.name or "").startswith("medprobe"):
                _SKIPPED[module] = str(error.name)
                continue
            raise


def list_backbones() -> list[BackboneEntry]:
    """Every registered backbone and prefix, sorted by family and name (for ``medprobe backbones``)."""
    _load_families()
    return sorted([*_REGISTRY.values(), *_PREFIXES.values()], key=lambda e: (e.family, e.name))


def find_backbone(name: str) -> BackboneEntry:
    """The registry entry for ``name`` (an exact name, or a registered prefix such as ``hf:``)."""
    _load_families()
    if name in _REGISTRY:
        return _REGISTRY[name]
    for prefix, entry in _PREFIXES.items():
        if name.startswith(prefix):
            return entry
    known = sorted(_REGISTRY) + sorted(_PREFIXES)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    skipped = "".join(f"; {module} not loaded: {dependency!r} is not installed"
                      for module, dependency in _SKIPPED.items())
    raise ModelError(f"unknown backbone {name!r}{hint}; known: {known} (run `medprobe backbones`){skipped}")


def check_backbone_options(name: str, options: dict[str, Any], where: str = "options") -> None:
    """Raise :class:`ConfigError` naming any option ``name`` does not accept, and the valid ones."""
    accepted = find_backbone(name).options
    if accepted is None:
        return
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hints = [f"{close[0]!r} for {key!r}" for key in unknown
                 for close in [difflib.get_close_matches(key, accepted, n=1)] if close]
        raise ConfigError(f"{where}: backbone {name!r} does not accept option(s) {unknown}"
                          + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                          + f"; it accepts {sorted(accepted) or 'no options'}")


def create_backbone(name: str, **options: Any) -> Backbone:
    """Build the backbone registered as ``name`` with family-specific ``options``."""
    entry = find_backbone(name)
    check_backbone_options(name, options)
    if entry.name.endswith(":"):
        return entry.factory(name[len(entry.name):], **options)
    return entry.factory(**options)
