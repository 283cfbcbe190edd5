"""Adapter names used in run files -> functions that build a :class:`Dataset`.

Relative paths in an adapter's options are resolved against the data root (``data.root`` in the
run file, else ``$MEDPROBE_DATA_DIR``), so one run file works on every machine that has the data.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from medprobe.config import DataConfig
from medprobe.data.dataset import Dataset
from medprobe.errors import ConfigError

PATH_KEYS = ("path", "root")
PATH_SUFFIXES = ("_dir", "_csv", "_path", "_xlsx", "_file", "_root")


def _adapters() -> dict[str, Callable[..., Dataset]]:
    from medprobe.data import adapters, paper

    table: dict[str, Callable[..., Dataset]] = {
        "medmnist": adapters.load_medmnist,
        "image_folder": adapters.load_image_folder,
        "manifest": adapters.load_manifest,
    }
    for task in paper.PAPER_TASKS.values():
        table[task.adapter_name] = task.loader
    return table


def adapter_names() -> list[str]:
    return sorted(_adapters())


def _is_path_key(key: str) -> bool:
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def resolve_options(options: dict[str, Any], root: Path) -> dict[str, Any]:
    resolved = {}
    for key, value in options.items():
        if isinstance(value, str) and _is_path_key(key):
            path = Path(value).expanduser()
            resolved[key] = path if path.is_absolute() else root / path
        else:
            resolved[key] = value
    return resolved


def load_dataset(config: DataConfig) -> Dataset:
    """Build the dataset a run file describes; unknown adapters and options are clear errors."""
    from medprobe.data.adapters import resolve_data_root

    table = _adapters()
    if config.adapter not in table:
        raise ConfigError(f"data.adapter: unknown adapter {config.adapter!r}; choose from {sorted(table)}")
    loader = table[config.adapter]
    root = resolve_data_root(config.root)
    options = resolve_options(config.options, root)
    parameters = inspect.signature(loader).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not accepts_any:
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            raise ConfigError(
                f"data.options: {unknown} not accepted by adapter {config.adapter!r}; "
                f"it takes {[name for name in parameters]}"
            )
    if "max_size" in parameters and "max_size" not in options:
        options["max_size"] = config.max_image_size
    if "check_files" in parameters and "check_files" not in options:
        options["check_files"] = config.check_files
    if config.adapter == "medmnist" and "path" not in options:
        options["path"] = root
    return loader(**options)
