"""Durable file writes shared by the cache, the run folder, reports, MCQ outputs and starter files.

Every file medprobe writes goes through :func:`atomic_write_bytes`: readers see the old file or the
whole new one, also after a crash or a power loss. It lives here, below every other package, so
that writing a file never requires importing the feature cache.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from medprobe.errors import CacheError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; outputs should get the usual permissions.
FILE_MODE = 0o666 & ~_current_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable: POSIX only persists a folder's entries when
    the folder itself is fsynced, so without this a power loss can undo a rename that returned."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # folder fsync unsupported here
            raise
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new folders survive a power loss (each new folder's parent is fsynced)."""
    created = []
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    Path(path).mkdir(parents=True, exist_ok=True)
    for folder in reversed(created):
        fsync_dir(folder.parent)


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn disk-full and permission problems into errors that say where and what to do."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise CacheError(f"disk full while writing {path}; free space or choose another cache_dir") from error
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR, errno.EEXIST):
            raise CacheError(f"cannot write {path}: {error.strerror}; "
                             "choose a writable cache_dir / output folder") from error
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file, or the whole new one, also after
    a crash or a power loss (file fsynced before the rename, folder fsynced after it)."""
    with disk_errors(path):
        make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8 (CSV files, HTML pages, run files)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """NaN/inf become ``null``: strict JSON has no NaN, and browsers' JSON.parse rejects it."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return json_safe(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def atomic_write_json(path: Path, value: Any) -> None:
    """``value`` as indented, key-sorted strict JSON (NaN/inf as ``null``), written atomically."""
    text = json.dumps(json_safe(value), indent=2, sort_keys=True, default=str, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


__all__ = ["FILE_MODE", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "disk_errors", "fsync_dir",
           "json_safe", "make_dirs"]
