"""The activation cache: extract once, reuse forever, survive crashes.

Layout of one cache entry (a folder under the cache root)::

    <root>/<backbone>-<key>/
        meta.json                      what produced it: backbone fingerprint, preprocessing,
                                       sample-id digest, chunk size, dtype, medprobe version
        sample_ids.json                the ordered sample ids the chunks are cut from
        layers/<layer>/chunk-000000.safetensors   one array per layer per chunk
        layers/<layer>/COMPLETE        written once every chunk of that layer exists
        .lock                          held (flock) by the process that is writing

``key`` hashes the backbone fingerprint (model file / revision, prompt, template, pooling, dtype),
the preprocessing fingerprint and the ordered sample ids, so a changed setting never reads stale
features. Layers are *not* part of the key: asking for another layer later adds files to the same
entry and computes only what is missing.

Why this is crash-safe: every chunk file is written to a temporary name in the same folder,
flushed, fsynced and renamed into place, so a chunk file either exists whole or not at all.
Resuming recomputes only chunks whose file is absent; chunk boundaries and batches are a pure
function of the sample order, so a resumed cache is bit-identical to an uninterrupted one. A layer
is only readable after its ``COMPLETE`` marker exists.

Chunks are safetensors files (one tensor named ``features``; the chunk's sample ids and skipped
samples are in the header metadata), a format that cannot execute code when read.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

import medprobe
from medprobe.errors import CacheError

FORMAT_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def sample_ids_digest(sample_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sample_ids).encode()).hexdigest()


def cache_key(fingerprint: dict[str, Any], sample_ids: Sequence[str]) -> str:
    """Hash of everything that determines the features (layers excluded, see module docstring)."""
    payload = {"fingerprint": fingerprint, "samples": sample_ids_digest(sample_ids), "format": FORMAT_VERSION}
    return hashlib.sha256(_canonical_json(payload).encode()).hexdigest()[:20]


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; outputs should get the usual permissions.
FILE_MODE = 0o666 & ~_current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file, or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _disk_errors(path):
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


def _json_safe(value: Any) -> Any:
    """NaN/inf become ``null``: strict JSON has no NaN, and browsers' JSON.parse rejects it."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return _json_safe(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def atomic_write_json(path: Path, value: Any) -> None:
    text = json.dumps(_json_safe(value), indent=2, sort_keys=True, default=str, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


@contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """Turn disk-full and permission problems into errors that say where and what to do."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise CacheError(f"disk full while writing {path}; free space or choose another cache_dir") from error
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR, errno.EEXIST):
            raise CacheError(f"cannot write {path}: {error.strerror}; choose a writable cache_dir / output folder") from error
        raise


@dataclass(frozen=True)
class ChunkPlan:
    index: int
    start: int
    stop: int


class FeatureCache:
    """One cache entry: the features of one backbone setting on one ordered list of samples."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise CacheError(f"{self.path} is not a medprobe feature cache (no meta.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise CacheError(f"{self.path}: cache format {self.meta.get('format')} is not {FORMAT_VERSION}")
        self.sample_ids: list[str] = json.loads((self.path / "sample_ids.json").read_text())
        self.chunk_size: int = int(self.meta["chunk_size"])
        self.dtype = DTYPES[self.meta["dtype"]]

    # ----------------------------------------------------------- creation
    @classmethod
    def open_or_create(
        cls,
        root: str | Path,
        backbone_name: str,
        fingerprint: dict[str, Any],
        sample_ids: Sequence[str],
        *,
        chunk_size: int = 256,
        dtype: str = "float16",
    ) -> "FeatureCache":
        """The entry for this setting, created if new. An existing entry keeps its own chunk size
        and dtype (those are storage details, not part of the key) so it is never overwritten."""
        if dtype not in DTYPES:
            raise CacheError(f"unknown cache dtype {dtype!r}; choose from {sorted(DTYPES)}")
        if chunk_size < 1:
            raise CacheError(f"chunk_size must be >= 1, got {chunk_size}")
        sample_ids = [str(s) for s in sample_ids]
        if len(set(sample_ids)) != len(sample_ids):
            raise CacheError("duplicate sample ids given to the feature cache")
        key = cache_key(fingerprint, sample_ids)
        path = Path(root).expanduser() / f"{_safe_name(backbone_name)}-{key}"
        if not (path / "meta.json").is_file():
            with _disk_errors(path):
                path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path / "sample_ids.json", sample_ids)
            atomic_write_json(
                path / "meta.json",
                {
                    "format": FORMAT_VERSION,
                    "key": key,
                    "backbone": backbone_name,
                    "fingerprint": fingerprint,
                    "n_samples": len(sample_ids),
                    "sample_ids_sha256": sample_ids_digest(sample_ids),
                    "chunk_size": chunk_size,
                    "dtype": dtype,
                    "medprobe_version": medprobe.__version__,
                },
            )
        cache = cls(path)
        if cache.meta["fingerprint"] != json.loads(_canonical_json(fingerprint)) or cache.sample_ids != sample_ids:
            raise CacheError(f"{path}: existing cache does not match the request (hash collision?)")
        return cache

    # ------------------------------------------------------------ planning
    def chunks(self) -> list[ChunkPlan]:
        n = len(self.sample_ids)
        return [ChunkPlan(i, start, min(start + self.chunk_size, n))
                for i, start in enumerate(range(0, n, self.chunk_size))]

    def chunk_path(self, layer: str, index: int) -> Path:
        return self.path / "layers" / _layer_dir(layer) / f"chunk-{index:06d}.safetensors"

    def missing(self, layers: Sequence[str]) -> dict[int, list[str]]:
        """Chunk index -> layers whose file for that chunk does not exist yet."""
        todo: dict[int, list[str]] = {}
        for chunk in self.chunks():
            absent = [layer for layer in layers if not self.chunk_path(layer, chunk.index).is_file()]
            if absent:
                todo[chunk.index] = absent
        return todo

    def is_complete(self, layer: str) -> bool:
        return (self.path / "layers" / _layer_dir(layer) / "COMPLETE").is_file()

    # -------------------------------------------------------------- writing
    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Exclusive write access; a second writer is refused instead of corrupting chunks.
        flock is released by the kernel when the holder dies, so a killed run never blocks resume."""
        lock_path = self.path / ".lock"
        with _disk_errors(lock_path):
            handle = open(lock_path, "a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CacheError(
                    f"another process is writing the feature cache {self.path}; wait for it to finish"
                ) from None
            self.remove_temporary_files()
            yield
        finally:
            handle.close()

    def remove_temporary_files(self) -> None:
        """Delete temp files of chunk writers that were killed mid-write. Call only while holding
        :meth:`writer_lock` with no writer of one's own running: then nobody else can be writing
        one, and they are never read, so removing them is safe."""
        for stale in self.path.glob("layers/*/.chunk-*.tmp"):
            stale.unlink(missing_ok=True)

    def write_chunk(
        self,
        layer: str,
        index: int,
        sample_ids: Sequence[str],
        features: np.ndarray,
        skipped: Sequence[dict[str, str]] = (),
    ) -> None:
        """Store one chunk of one layer atomically. ``sample_ids`` are the chunk's samples that were
        read successfully (in order); ``skipped`` lists the others with their error messages."""
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(sample_ids):
            raise CacheError(f"chunk {index} of layer {layer!r}: features {features.shape} do not match "
                             f"{len(sample_ids)} samples")
        with np.errstate(over="ignore"):  # overflow is detected and explained just below
            stored = features.astype(self.dtype)
        bad_rows = ~np.isfinite(stored).all(axis=1)
        if bad_rows.any():
            finite_before = np.isfinite(features).all(axis=1)
            first = [sample_ids[i] for i in np.flatnonzero(bad_rows)[:5]]
            reason = ("values overflow float16; set cache dtype: float32"
                      if finite_before[bad_rows].all() else "the model produced NaN/inf")
            raise CacheError(f"layer {layer!r}: non-finite features for samples {first} "
                             f"({int(bad_rows.sum())} in chunk {index}): {reason}")
        # A single metadata key: safetensors writes the header's metadata map in arbitrary key order,
        # and resumed caches must be byte-identical to uninterrupted ones.
        metadata = {"medprobe": _canonical_json(
            {"layer": layer, "sample_ids": list(sample_ids), "skipped": list(skipped)})}
        atomic_write_bytes(self.chunk_path(layer, index),
                           save({"features": np.ascontiguousarray(stored)}, metadata=metadata))

    def mark_complete(self, layer: str) -> None:
        if self.missing([layer]):
            raise CacheError(f"layer {layer!r} of {self.path} still has missing chunks")
        ids, array, skipped = self._read_chunks(layer)
        atomic_write_json(
            self.path / "layers" / _layer_dir(layer) / "COMPLETE",
            {"layer": layer, "n_samples": len(ids), "dim": int(array.shape[1]), "skipped": skipped},
        )

    # -------------------------------------------------------------- reading
    def layers(self) -> list[str]:
        """Complete layers in this entry."""
        base = self.path / "layers"
        if not base.is_dir():
            return []
        return sorted(json.loads((d / "COMPLETE").read_text())["layer"]
                      for d in base.iterdir() if (d / "COMPLETE").is_file())

    def load(self, layer: str) -> tuple[list[str], np.ndarray]:
        """``(sample_ids, features)`` of a complete layer; float32 array (n, dim)."""
        if not self.is_complete(layer):
            done = len(self.chunks()) - len(self.missing([layer]))
            raise CacheError(
                f"layer {layer!r} in {self.path} is incomplete ({done}/{len(self.chunks())} chunks); "
                "run the extraction again to resume it"
            )
        ids, array, _ = self._read_chunks(layer)
        return ids, array.astype(np.float32)

    def skipped(self, layer: str) -> list[dict[str, str]]:
        """Samples left out of a complete layer because their image could not be read."""
        marker = self.path / "layers" / _layer_dir(layer) / "COMPLETE"
        return json.loads(marker.read_text())["skipped"] if marker.is_file() else []

    def _read_chunks(self, layer: str) -> tuple[list[str], np.ndarray, list[dict[str, str]]]:
        ids: list[str] = []
        parts: list[np.ndarray] = []
        skipped: list[dict[str, str]] = []
        for chunk in self.chunks():
            path = self.chunk_path(layer, chunk.index)
            try:
                with safe_open(str(path), framework="numpy") as handle:
                    metadata = handle.metadata() or {}
                    parts.append(handle.get_tensor("features"))
            except (SafetensorError, OSError, ValueError) as error:
                raise CacheError(f"cannot read feature chunk {path}: {error}; delete it and resume") from error
            info = json.loads(metadata["medprobe"])
            ids.extend(info["sample_ids"])
            skipped.extend(info["skipped"])
        parts = [part for part in parts if len(part)]  # chunks whose every image was skipped
        array = np.concatenate(parts) if parts else np.zeros((0, 0), self.dtype)
        return ids, array, skipped

    def remove(self) -> None:
        shutil.rmtree(self.path)


def _layer_dir(layer: str) -> str:
    """A file-system-safe, collision-free folder name for a layer name."""
    return f"{_safe_name(layer)}-{hashlib.sha1(layer.encode()).hexdigest()[:8]}"


def load(cache_dir: str | Path, layer: str) -> tuple[list[str], np.ndarray]:
    """Read one layer of a cache entry: ``(sample_ids, float32 array (n, dim))``.

    ``cache_dir`` is the entry folder (``<root>/<backbone>-<key>``) that ``medprobe extract``
    prints and that ``results.json``'s metadata records.
    """
    return FeatureCache(Path(cache_dir)).load(layer)


__all__ = ["FeatureCache", "load", "cache_key", "atomic_write_json", "atomic_write_bytes"]
