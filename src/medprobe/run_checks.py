"""Checks of a run file that need the data adapters and backbone families to answer.

:mod:`medprobe.config` validates the run file's shape on its own (it is the lowest layer after
:mod:`medprobe.errors`); whether an ``options`` key is one the chosen adapter or backbone factory
accepts can only be asked of :mod:`medprobe.data` and :mod:`medprobe.models`, so that check lives
here, above both, and runs before any data is read or model loaded.
"""

from __future__ import annotations

from medprobe.config import RunConfig
from medprobe.data.loaders import check_adapter_options
from medprobe.models.registry import check_backbone_options


def check_options(config: RunConfig) -> None:
    """Check the free-form ``options`` of the adapter and of every backbone against the names
    their factories accept, before any data is read or model loaded: a typo such as
    ``options: {sise: 3}`` is a :class:`ConfigError` naming the key and the valid ones."""
    check_adapter_options(config.data)
    for index, backbone in enumerate(config.backbones):
        check_backbone_options(backbone.name, backbone.options, f"backbones.{index}.options")


__all__ = ["check_options"]
