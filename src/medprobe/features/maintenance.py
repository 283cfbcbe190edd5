"""Looking after a feature cache: ``medprobe cache verify`` and ``medprobe cache gc``.

``verify_cache`` reads every chunk of every entry against its checksum and changes nothing: the
chunks it lists are the ones the next read would refuse (and move aside for recomputation). In an
8-bit entry (``extraction.dtype: uint8``) it also checks each layer's parameters file, which every
code of the layer is read through.

``collect_garbage`` removes the entries no run references. *Referenced* means: the entry's cache
key (or folder) is recorded in the ``backbones`` list of a ``run.json`` found anywhere under the
run folders you name; every ``medprobe run`` writes one. Entries you only filled with
``medprobe extract`` and never ran are therefore unreferenced, and entries of an older cache format
(which this medprobe never reads) are removed unless a run still names them. Folders without a
``meta.json`` are not medprobe's and are never touched; an entry another process is writing (its
``.lock`` is held) is skipped. Nothing is deleted without ``delete=True`` (``--yes``).
"""

from __future__ import annotations

import fcntl
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from medprobe.errors import CacheError, ConfigError
from medprobe.features.cache import CORRUPT_SUFFIX, FORMAT_VERSION, CorruptChunkError, FeatureCache
from medprobe.features.quantize import PARAMS_NAME, read_params


@dataclass
class VerifyReport:
    """What ``medprobe cache verify`` found: entries and chunks checked, the corrupt ones and those set aside."""

    entries: int = 0
    chunks_checked: int = 0
    bad: list[CorruptChunkError] = field(default_factory=list)
    #: 8-bit parameters files checked (``extraction.dtype: uint8`` entries, one per layer)
    params_checked: int = 0
    #: entries of another cache format: not checkable, never read by this medprobe
    other_format: list[Path] = field(default_factory=list)
    #: chunks moved aside after a failed read, waiting for the next extraction
    quarantined: list[Path] = field(default_factory=list)


@dataclass
class GcReport:
    """What ``medprobe cache gc`` found (and deleted with ``--yes``): referenced, unreferenced and skipped entries."""

    referenced: list[Path] = field(default_factory=list)
    unreferenced: list[tuple[Path, int]] = field(default_factory=list)  # (entry, bytes)
    #: entries another process is writing (lock held), or in a folder this process cannot write
    skipped: list[Path] = field(default_factory=list)
    deleted: bool = False
    run_files: int = 0


def cache_entries(path: str | Path) -> list[Path]:
    """The entries under a cache root, or ``[path]`` when it is an entry itself."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CacheError(f"{path} is not a folder; give a cache root or one entry of it")
    if (path / "meta.json").is_file():
        return [path]
    return sorted(p for p in path.iterdir() if (p / "meta.json").is_file())


def _format(entry: Path) -> object:
    try:
        return json.loads((entry / "meta.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def verify_cache(path: str | Path) -> VerifyReport:
    """Check every chunk of every entry under ``path`` (a cache root or one entry).

    A folder that holds things but no cache entry is an error, not "0 bad": a mistyped path must
    not look like a healthy cache. An empty folder is an empty cache."""
    report = VerifyReport()
    entries = cache_entries(path)
    folder = Path(path).expanduser()
    if not entries and any(not p.name.startswith(".") for p in folder.iterdir()):
        raise CacheError(f"{folder} is not a feature cache: it holds no cache entry (a folder with a meta.json), "
                         "so there is nothing to verify; give the cache root ($MEDPROBE_CACHE_DIR or "
                         "~/.cache/medprobe/features, or a run file's cache_dir) or one entry of it")
    for entry in entries:
        report.entries += 1
        if _format(entry) != FORMAT_VERSION:
            report.other_format.append(entry)
            continue
        cache = FeatureCache(entry)
        checked, bad = cache.verify()
        report.chunks_checked += checked
        report.bad.extend(bad)
        for layer in cache.layers():  # a complete layer must still have every chunk
            for chunk in cache.chunks():
                chunk_path = cache.chunk_path(layer, chunk.index)
                if not chunk_path.is_file():
                    report.bad.append(CorruptChunkError(chunk_path, "missing from a layer marked complete"))
        if cache.dtype_name == "uint8":  # its codes are read through the layer's parameters
            checked, bad = _verify_params(cache)
            report.params_checked += checked
            report.bad.extend(bad)
        report.quarantined.extend(sorted(entry.glob(f"layers/*/*{CORRUPT_SUFFIX}")))
    return report


def _verify_params(cache: FeatureCache) -> tuple[int, list[CorruptChunkError]]:
    """Check a uint8 entry's parameters files (:mod:`medprobe.features.quantize`) against their
    checksums, changing nothing: every one on disk (a layer still being converted has one too),
    and that every complete layer with rows has one. A bad one is not recomputed by the next read,
    as a chunk is: every code of the layer depends on it, so the fix is a new extraction of the layer."""
    complete = {cache.chunk_path(layer, 0).parent: layer for layer in cache.layers()}
    checked, bad = 0, []
    for path in sorted(cache.path.glob(f"layers/*/{PARAMS_NAME}")):
        checked += 1
        layer = complete.get(path.parent) or _claimed_layer(path)
        try:
            read_params(path, layer)  # unreadable, or not matching its checksum (which covers the layer name)
            if cache.chunk_path(layer, 0).parent != path.parent:
                raise CacheError(f"{path}: the 8-bit parameters of layer {layer!r} in another layer's folder; "
                                 "delete the layer folder and extract again")
        except CacheError as error:
            bad.append(CorruptChunkError(path, str(error).removeprefix(f"{path}: ")))
    for folder in complete:
        if not (folder / PARAMS_NAME).is_file() and _n_samples(folder) != 0:
            bad.append(CorruptChunkError(folder / PARAMS_NAME, "missing from an 8-bit layer marked complete (its "
                                         "codes cannot be read back); delete the layer folder and extract again"))
    return checked, bad


def _claimed_layer(path: Path) -> str:
    """The layer a parameters file names in its own header ("" when unreadable: the check then fails)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return str(json.loads((handle.metadata() or {})["medprobe"])["layer"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError):
        return ""


def _n_samples(layer_folder: Path) -> int | None:
    """Rows of a complete layer, from its ``COMPLETE`` marker (None when the marker cannot be read)."""
    try:
        return int(json.loads((layer_folder / "COMPLETE").read_text())["n_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def referenced_keys(run_dirs: Iterable[str | Path]) -> tuple[set[str], set[Path], int]:
    """Cache keys and entry folders named by the ``run.json`` files under ``run_dirs``."""
    keys: set[str] = set()
    folders: set[Path] = set()
    n_files = 0
    for run_dir in run_dirs:
        run_dir = Path(run_dir).expanduser()
        if not run_dir.is_dir():
            raise ConfigError(f"run folder {run_dir} does not exist")
        for run_file in sorted(run_dir.rglob("run.json")):
            try:
                backbones = json.loads(run_file.read_text()).get("backbones") or []
            except (OSError, ValueError, AttributeError):
                continue  # not a medprobe run.json
            n_files += 1
            for info in backbones:
                if isinstance(info, dict):
                    if info.get("cache_key"):
                        keys.add(str(info["cache_key"]))
                    if info.get("cache_dir"):
                        folders.add(Path(info["cache_dir"]).expanduser().resolve())
    return keys, folders, n_files


def _entry_key(entry: Path) -> str | None:
    try:
        return json.loads((entry / "meta.json").read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _size(entry: Path) -> int:
    return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


def collect_garbage(cache_root: str | Path, run_dirs: Iterable[str | Path], *, delete: bool = False) -> GcReport:
    """Find (and with ``delete`` remove) the entries of ``cache_root`` no run under ``run_dirs``
    references; see the module docstring for what counts as referenced."""
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ConfigError("name at least one run folder (--runs): without one every entry would count as unused")
    keys, folders, n_files = referenced_keys(run_dirs)
    report = GcReport(run_files=n_files)
    for entry in cache_entries(cache_root):
        if _entry_key(entry) in keys or entry.resolve() in folders:
            report.referenced.append(entry)
            continue
        try:
            lock = open(entry / ".lock", "a+")
        except OSError:  # a read-only cache: nothing can be removed from it anyway
            report.skipped.append(entry)
            continue
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report.skipped.append(entry)
                continue
            report.unreferenced.append((entry, _size(entry)))
            if delete:
                shutil.rmtree(entry)
    report.deleted = delete
    return report


__all__ = ["verify_cache", "collect_garbage", "referenced_keys", "cache_entries", "VerifyReport", "GcReport"]
