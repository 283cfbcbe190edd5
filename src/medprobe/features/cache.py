"""The activation cache: extract once, reuse forever, survive crashes.

Layout of one cache entry (a folder under the cache root)::

    <root>/<backbone>-<key>/
        meta.json                      what produced it: backbone fingerprint, preprocessing,
                                       sample-id digest, chunk size, dtype, medprobe version
        sample_ids.json                the ordered sample ids the chunks are cut from
        layers/<layer>/chunk-000000.safetensors   one array per layer per chunk
        layers/<layer>/COMPLETE        written once every chunk of that layer is durable and verified
        .lock                          held (flock) by the process that is writing

``key`` hashes the backbone fingerprint (model file / revision, prompt, template, pooling, compute
dtype), the preprocessing fingerprint, the ordered sample ids and the *storage* dtype, so a changed
setting never reads stale features and a float32 request never reads float16 data. Layers are
*not* part of the key: asking for another layer later adds files to the same entry and computes
only what is missing.

Why this is crash-safe: every chunk file is written to a temporary name in the same folder,
flushed, fsynced, renamed into place and the folder fsynced, so a chunk file either exists whole
or not at all, also after a power loss. Resuming recomputes only chunks whose file is absent;
chunk boundaries and batches are a pure function of the sample order, so a resumed cache is
bit-identical to an uninterrupted one. A layer is only readable after its ``COMPLETE`` marker
exists, and the marker is written only after every chunk of the layer has been read back and
verified.

Why chunks carry a checksum: a bad disk, a partial copy or a sync tool can change the bytes of a
finished chunk without breaking its format, and such features would silently move every number
computed from them. Each chunk's metadata holds the sha256 of its tensor bytes, shape, dtype and
sample ids (:func:`chunk_digest`), checked on every read. A chunk that fails is never used: it is
moved aside to ``chunk-NNNNNN.safetensors.corrupt``, its layer loses its ``COMPLETE`` marker, and
the next extraction recomputes it.

Chunks are safetensors files (one tensor named ``features``; the chunk's sample ids, skipped
samples and checksum are in the header metadata), a format that cannot execute code when read.

Storage ``uint8`` (the study's 8-bit codes): chunks are written in float16 and converted when the
layer is complete (:meth:`FeatureCache.mark_complete`), because the per-feature range is the whole
layer's; readers get the dequantised float32 values (:mod:`medprobe.features.quantize`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

import medprobe
from medprobe.errors import CacheError
from medprobe.features.quantize import (
    PARAMS_NAME,
    STAGING_DTYPE,
    RunningRange,
    affine_params,
    dequantise,
    params_bytes,
    quantise,
    read_params,
)
from medprobe.io import atomic_write_bytes, atomic_write_json, disk_errors, fsync_dir, make_dirs

#: 2: chunks carry a checksum and the storage dtype is part of the key. Entries of format 1 get
#: other keys, so they are never read (``medprobe cache gc`` removes them).
FORMAT_VERSION = 2
#: suffix of a chunk file that failed its checksum and was moved aside
CORRUPT_SUFFIX = ".corrupt"
#: storage dtypes; uint8 is the study's 8-bit per-feature affine storage (:mod:`~medprobe.features.quantize`)
DTYPES = {"float16": np.float16, "float32": np.float32, "uint8": np.uint8}


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def sample_ids_digest(sample_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sample_ids).encode()).hexdigest()


def cache_key(fingerprint: dict[str, Any], sample_ids: Sequence[str], dtype: str = "float16") -> str:
    """Hash of everything that determines the stored features (layers excluded, see module docstring)."""
    payload = {"fingerprint": fingerprint, "samples": sample_ids_digest(sample_ids), "format": FORMAT_VERSION,
               "dtype": dtype}
    return hashlib.sha256(_canonical_json(payload).encode()).hexdigest()[:20]


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


@dataclass(frozen=True)
class ChunkPlan:
    index: int
    start: int
    stop: int


class CorruptChunkError(CacheError):
    """A chunk file that cannot be parsed or whose content does not match its checksum."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class BadChunksError(CacheError):
    """Chunks of a layer failed verification; they were moved aside (see the message) and the next
    extraction recomputes them."""

    def __init__(self, message: str, paths: Sequence[Path]) -> None:
        super().__init__(message)
        self.paths = list(paths)


def chunk_digest(info: dict[str, Any], array: np.ndarray) -> str:
    """sha256 over a chunk's metadata (layer, sample ids, skipped samples), dtype, shape and tensor
    bytes: a flipped bit anywhere in what a reader uses changes it."""
    header = _canonical_json({"info": info, "dtype": str(array.dtype), "shape": list(array.shape)})
    digest = hashlib.sha256(header.encode())
    digest.update(b"\0")
    if array.size:  # (a memoryview of an empty array cannot be cast to bytes)
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def read_chunk_file(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """``(info, features)`` of one chunk file, verified against its checksum.

    Raises :class:`CorruptChunkError` when the file is unreadable, lacks a checksum or does not
    match it; the caller decides what to do (never use it).
    """
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            array = handle.get_tensor("features")
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptChunkError(path, f"unreadable ({error})") from error
    try:
        info = json.loads(metadata["medprobe"])
        expected = info.pop("sha256")
        info = {key: info[key] for key in ("layer", "sample_ids", "skipped")}
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptChunkError(path, f"metadata damaged or without checksum ({error!r})") from error
    if chunk_digest(info, array) != expected:
        raise CorruptChunkError(path, "content does not match its checksum (changed on disk after it was written)")
    if len(info["sample_ids"]) != len(array):
        raise CorruptChunkError(path, f"{len(array)} rows for {len(info['sample_ids'])} sample ids")
    return info, array


class FeatureCache:
    """One cache entry: the features of one backbone setting on one ordered list of samples."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise CacheError(f"{self.path} is not a medprobe feature cache (no meta.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise CacheError(f"{self.path}: cache format {self.meta.get('format')} is not {FORMAT_VERSION} (an entry "
                             "of another medprobe version, never read by this one); extract again, and remove old "
                             "entries with `medprobe cache gc`")
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
        """The entry for this setting and storage dtype, created if new. An existing entry keeps
        its own chunk size (a storage detail that changes no value, not part of the key)."""
        if dtype not in DTYPES:
            raise CacheError(f"unknown cache dtype {dtype!r}; choose from {sorted(DTYPES)}")
        if chunk_size < 1:
            raise CacheError(f"chunk_size must be >= 1, got {chunk_size}")
        sample_ids = [str(s) for s in sample_ids]
        if len(set(sample_ids)) != len(sample_ids):
            raise CacheError("duplicate sample ids given to the feature cache")
        path = entry_path(root, backbone_name, fingerprint, sample_ids, dtype)
        key = path.name.rsplit("-", 1)[1]
        if not (path / "meta.json").is_file():
            with disk_errors(path):
                make_dirs(path)
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
        if (cache.meta["fingerprint"] != json.loads(_canonical_json(fingerprint)) or cache.sample_ids != sample_ids
                or cache.dtype_name != dtype):
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
        return self._marker(layer).is_file()

    def _marker(self, layer: str) -> Path:
        return self.path / "layers" / _layer_dir(layer) / "COMPLETE"

    @property
    def dtype_name(self) -> str:
        """The dtype the features are stored in (``load`` returns them as float32)."""
        return str(self.meta["dtype"])

    # -------------------------------------------------------------- writing
    @contextmanager
    def writer_lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Exclusive write access; a second writer is refused instead of corrupting chunks, or
        waits up to ``wait_s`` seconds for the first to finish (``--wait-for-lock``).
        flock is released by the kernel when the holder dies, so a killed run never blocks resume."""
        lock_path = self.path / ".lock"
        with disk_errors(lock_path):
            handle = open(lock_path, "a+")
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        waited = f" (waited {wait_s:g} s)" if wait_s else ""
                        raise CacheError(
                            f"another process is writing the feature cache {self.path}{waited}; wait for it "
                            "to finish, or rerun with --wait-for-lock SECONDS"
                        ) from None
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
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
            stored = features.astype(STAGING_DTYPE if self.dtype == np.uint8 else self.dtype)
        bad_rows = ~np.isfinite(stored).all(axis=1)
        if bad_rows.any():
            finite_before = np.isfinite(features).all(axis=1)
            first = [sample_ids[i] for i in np.flatnonzero(bad_rows)[:5]]
            reason = ("values overflow float16; set cache dtype: float32"
                      if finite_before[bad_rows].all() else "the model produced NaN/inf")
            raise CacheError(f"layer {layer!r}: non-finite features for samples {first} "
                             f"({int(bad_rows.sum())} in chunk {index}): {reason}")
        info = json.loads(_canonical_json({"layer": layer, "sample_ids": list(sample_ids), "skipped": list(skipped)}))
        self._store(self.chunk_path(layer, index), info, stored)

    def _store(self, path: Path, info: dict[str, Any], stored: np.ndarray) -> None:
        """Write one chunk file atomically, its checksum in the header."""
        # A single metadata key: safetensors writes the header's metadata map in arbitrary key order,
        # and resumed caches must be byte-identical to uninterrupted ones.
        # The checksum sits inside that one key, so the file stays deterministic.
        stored = np.ascontiguousarray(stored)
        metadata = {"medprobe": _canonical_json({**info, "sha256": chunk_digest(info, stored)})}
        atomic_write_bytes(path, save({"features": stored}, metadata=metadata))
        _corrupt_path(path).unlink(missing_ok=True)  # the chunk it replaces, moved aside on a failed read

    def _quantise_layer(self, layer: str) -> None:
        """Convert a complete uint8 layer's float16 chunks to codes: the per-feature range of the
        whole layer first (one chunk in memory at a time), its parameters written (checksummed)
        before any chunk changes, then each float16 chunk replaced by its codes. Rerun after a kill,
        it reuses the parameters and converts only the chunks still in float16."""
        params_path = self.chunk_path(layer, 0).parent / PARAMS_NAME
        if not params_path.is_file():
            running = RunningRange()
            for _, _, array in self._verified_chunks(layer, (STAGING_DTYPE,)):
                running.update(array)
            if running.minimum is None:  # every image of the layer was skipped
                return
            atomic_write_bytes(params_path, params_bytes(layer, affine_params(running.minimum, running.maximum)))
        params = read_params(params_path, layer)
        for path, info, array in self._verified_chunks(layer, (STAGING_DTYPE, np.uint8)):
            if array.dtype == STAGING_DTYPE:
                self._store(path, info, quantise(array, params))

    def mark_complete(self, layer: str) -> None:
        """Write the layer's ``COMPLETE`` marker after reading back and verifying every chunk.

        Each chunk was fsynced (file and folder) when written, so the marker never vouches for a
        chunk a power loss could still take away. A chunk failing its checksum is moved aside and
        the layer stays incomplete: :class:`CacheError` names the files, and the next extraction
        recomputes them.
        """
        if self.missing([layer]):
            raise CacheError(f"layer {layer!r} of {self.path} still has missing chunks")
        if self.dtype == np.uint8:
            self._quantise_layer(layer)
        ids, array, skipped = self._read_chunks(layer)
        atomic_write_json(
            self._marker(layer),
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

    def iter_chunks(self, layer: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """``(info, array)`` of every chunk of ``layer`` in order, each verified against its
        checksum before it is handed out, so a reader never needs the whole layer at once. Any
        bad chunk is moved aside and reported (all of them at once, by path, after the last
        chunk) instead of being used: a caller that sees :class:`BadChunksError` must discard
        what it read. A uint8 entry's chunks come dequantised (float32)."""
        if self.dtype != np.uint8:
            yield from ((info, array) for _, info, array in self._verified_chunks(layer, (self.dtype,)))
            return
        params = read_params(self.chunk_path(layer, 0).parent / PARAMS_NAME, layer)
        for _, info, codes in self._verified_chunks(layer, (np.uint8,)):
            yield info, dequantise(codes, params)

    def _verified_chunks(self, layer: str, dtypes: Sequence[Any]) -> Iterator[tuple[Path, dict[str, Any], np.ndarray]]:
        """``(path, info, stored array)`` of every chunk, verified and of one of ``dtypes`` (see
        :meth:`iter_chunks`)."""
        bad: list[CorruptChunkError] = []
        for chunk in self.chunks():
            path = self.chunk_path(layer, chunk.index)
            try:
                info, array = read_chunk_file(path)
            except FileNotFoundError:
                bad.append(CorruptChunkError(path, "missing"))
                continue
            except CorruptChunkError as error:
                bad.append(error)
                continue
            if array.dtype not in dtypes:
                bad.append(CorruptChunkError(path, f"holds {array.dtype}, the entry stores {self.dtype_name}"))
                continue
            if not bad:
                yield path, info, array
        if bad:
            raise BadChunksError(self._quarantine(layer, bad), [error.path for error in bad])

    def _read_chunks(self, layer: str) -> tuple[list[str], np.ndarray, list[dict[str, str]]]:
        """Every chunk of ``layer``, verified (see :meth:`iter_chunks`)."""
        ids: list[str] = []
        parts: list[np.ndarray] = []
        skipped: list[dict[str, str]] = []
        for info, array in self.iter_chunks(layer):
            parts.append(array)
            ids.extend(info["sample_ids"])
            skipped.extend(info["skipped"])
        parts = [part for part in parts if len(part)]  # chunks whose every image was skipped
        empty_dtype = np.float32 if self.dtype == np.uint8 else self.dtype
        array = np.concatenate(parts) if parts else np.zeros((0, 0), empty_dtype)
        return ids, array, skipped

    def _quarantine(self, layer: str, bad: Sequence[CorruptChunkError]) -> str:
        """Move bad chunks aside and drop the layer's marker so the next extraction recomputes
        them; returns the message that names them and that repair."""
        self._marker(layer).unlink(missing_ok=True)
        lines = []
        for error in bad:
            note = ""
            if error.path.is_file():
                try:
                    os.replace(error.path, _corrupt_path(error.path))
                    fsync_dir(error.path.parent)
                    note = f" (moved aside to {_corrupt_path(error.path).name})"
                except OSError as move_error:
                    note = f" (could not move it aside: {move_error.strerror}; delete it by hand)"
            lines.append(f"  {error.path}: {error.reason}{note}")
        return (f"layer {layer!r} of the feature cache {self.path}: {len(bad)} bad chunk(s), not used:\n"
                + "\n".join(lines)
                + "\nThey are recomputed by the next extraction: rerun `medprobe extract RUN.yaml` "
                  "(or `medprobe run RUN.yaml`). Check a whole cache with `medprobe cache verify`.")

    def verify(self) -> tuple[int, list[CorruptChunkError]]:
        """Read every chunk file of every layer (complete or not) against its checksum, changing
        nothing; returns the number checked and the bad ones."""
        checked, bad = 0, []
        for path in sorted(self.path.glob("layers/*/chunk-*.safetensors")):
            checked += 1
            try:
                read_chunk_file(path)
            except CorruptChunkError as error:
                bad.append(error)
        return checked, bad

    def remove(self) -> None:
        shutil.rmtree(self.path)


def entry_path(root: str | Path, backbone_name: str, fingerprint: dict[str, Any], sample_ids: Sequence[str],
               dtype: str) -> Path:
    """The folder of the entry for this setting (it need not exist)."""
    return Path(root).expanduser() / f"{_safe_name(backbone_name)}-{cache_key(fingerprint, sample_ids, dtype)}"


def _corrupt_path(path: Path) -> Path:
    return path.with_name(path.name + CORRUPT_SUFFIX)


def _layer_dir(layer: str) -> str:
    """A file-system-safe, collision-free folder name for a layer name."""
    return f"{_safe_name(layer)}-{hashlib.sha1(layer.encode()).hexdigest()[:8]}"


def load(cache_dir: str | Path, layer: str) -> tuple[list[str], np.ndarray]:
    """Read one layer of a cache entry: ``(sample_ids, float32 array (n, dim))``.

    ``cache_dir`` is the entry folder (``<root>/<backbone>-<key>``) that ``medprobe extract``
    prints and that ``results.json``'s metadata records.
    """
    return FeatureCache(Path(cache_dir)).load(layer)


__all__ = ["FeatureCache", "load", "cache_key", "entry_path", "read_chunk_file", "CorruptChunkError", "BadChunksError"]
