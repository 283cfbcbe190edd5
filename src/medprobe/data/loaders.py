"""Adapter names used in run files -> functions that build a :class:`Dataset`.

Relative paths in an adapter's options are resolved against the data root (``data.root`` in the
run file, else ``$MEDPROBE_DATA_DIR``), so one run file works on every machine that has the data.
An adapter whose ``root`` (or medmnist's ``path``) is not given gets the data root itself.
"""

from __future__ import annotations

import difflib
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
    """The registered data adapter names, sorted: the values ``data.adapter`` accepts."""
    return sorted(_adapters())


def _is_path_key(key: str) -> bool:
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def resolve_options(options: dict[str, Any], root: Path) -> dict[str, Any]:
    """Adapter options with their path-valued keys resolved against the data ``root`` (absolute ones kept)."""
    resolved = {}
    for key, value in options.items():
        if isinstance(value, str) and _is_path_key(key):
            path = Path(value).expanduser()
            resolved[key] = path if path.is_absolute() else root / path
        else:
            resolved[key] = value
    return resolved


def check_adapter_options(config: DataConfig) -> Callable[..., Dataset]:
    """The loader ``config.adapter`` names, after checking its options; an unknown adapter or
    option is a :class:`ConfigError` naming the bad key and the valid ones (before any data is read)."""
    table = _adapters()
    if config.adapter not in table:
        close = difflib.get_close_matches(config.adapter, table, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"data.adapter: unknown adapter {config.adapter!r}{hint}; choose from {sorted(table)}")
    loader = table[config.adapter]
    parameters = inspect.signature(loader).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not accepts_any:
        unknown = sorted(set(config.options) - set(parameters))
        if unknown:
            hints = [f"{close[0]!r} for {key!r}" for key in unknown
                     for close in [difflib.get_close_matches(key, parameters, n=1)] if close]
            raise ConfigError(
                f"data.options: {unknown} not accepted by adapter {config.adapter!r}"
                + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                + f"; it takes {sorted(parameters)}"
            )
    return loader


def _root_parameter(loader: Callable[..., Dataset], adapter: str) -> str | None:
    """The option that takes the data folder itself: a ``root`` the loader requires, or
    medmnist's ``path`` (a file or a folder)."""
    parameters = inspect.signature(loader).parameters
    if adapter == "medmnist":
        return "path"
    root = parameters.get("root")
    if root is not None and root.default is inspect.Parameter.empty:
        return "root"
    return None


def load_dataset(config: DataConfig) -> Dataset:
    """Build the dataset a run file describes; unknown adapters and options are clear errors."""
    from medprobe.data.adapters import resolve_data_root

    loader = check_adapter_options(config)
    root = resolve_data_root(config.root)
    options = resolve_options(config.options, root)
    parameters = inspect.signature(loader).parameters
    if "max_size" in parameters and "max_size" not in options:
        options["max_size"] = config.max_image_size
    if "check_files" in parameters and "check_files" not in options:
        options["check_files"] = config.check_files
    root_key = _root_parameter(loader, config.adapter)
    if root_key is not None and root_key not in options:
        options[root_key] = root
    missing = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in options]
    if missing:
        raise ConfigError(f"data.options: adapter {config.adapter!r} needs {missing}; "
                          f"add them under data.options in the run file")
    return loader(**options)
