"""Where data sets live: the data root that relative paths in run files are resolved against."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MEDPROBE_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/medprobe/data")


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit`` (the run file's ``data.root``), else ``$MEDPROBE_DATA_DIR``,
    else ``~/.cache/medprobe/data``. Not created: adapters say what is missing and where."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


__all__ = ["DATA_DIR_ENV", "DEFAULT_DATA_DIR", "resolve_data_root"]
