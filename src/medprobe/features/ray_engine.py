"""Fill the feature cache on a Ray cluster: one backbone replica per actor, one cache chunk per task.

Why it is built this way:

* **The work unit is a cache chunk.** The Ray dataset holds chunk *descriptors*
  ``{index, start, stop, layers}``, not images. Each actor reads its chunk's images itself with
  :func:`~medprobe.features.extract.read_chunk`, computes them with
  :func:`~medprobe.features.extract.compute_chunk` and writes them with
  :func:`~medprobe.features.extract.store_chunk`, exactly like the local engine. Images therefore
  stream from storage straight into the workers and never pass through the driver, and the cache
  entry (folder key and chunk files, byte for byte) is the one a local run writes.
* **Shared filesystem.** Actors write chunk files straight into the cache folder (atomic renames,
  see :mod:`medprobe.features.cache`). On a multi-machine cluster ``cache_root`` must therefore be a
  shared filesystem (e.g. NFS) mounted at the same path on every node; a worker that cannot see
  the entry's ``meta.json`` stops the run with an error saying so.
* **One writer.** The driver holds the entry's ``writer_lock`` for the whole run, so a local
  ``medprobe extract`` on the same entry is refused instead of racing the actors; once every chunk
  exists, the driver writes the ``COMPLETE`` markers.
* **Worker deaths.** Ray Data restarts a dead map actor and re-runs the chunk it was computing
  (its defaults are ``max_restarts=-1`` and ``max_task_retries=-1``; overriding them needs the
  deprecated ``**ray_remote_args``). Unbounded retries would loop forever on a chunk that always
  kills its worker (e.g. an image that exhausts host memory), so a small ledger actor counts the
  starts of each chunk and the run stops with a clear error once a chunk has used its
  ``max_chunk_attempts`` attempts (in total, the first one included: 3 by default). Finished
  chunks stay in the cache either way, so calling :func:`extract_features_ray` again resumes
  (a retried chunk recomputes only the layers whose files are still absent).
* **Errors keep their type.** Ray wraps exceptions raised in actors into its own types, so a
  :class:`~medprobe.errors.MedprobeError` raised in a worker (an unreadable image, a missing model
  file) is sent back as a result row and re-raised on the driver with its class and message.
* **The driver builds the backbone once**, to learn its name, fingerprint (the cache key), layer
  names and default batch size; it calls no ``extract`` and closes it right away. Backbones that
  load their weights lazily (ONNX sessions are created on first use) keep the driver light;
  each actor builds its own replica and checks that its fingerprint equals the driver's, so a node
  with a different model file can never write features under the wrong key.
"""

from __future__ import annotations

import json
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from medprobe import errors
from medprobe.data.dataset import Dataset
from medprobe.errors import CacheError, ConfigError, MedprobeError, ModelError
from medprobe.features.cache import FeatureCache
from medprobe.features.extract import OnError, compute_chunk, open_cache, read_chunk, store_chunk
from medprobe.models.base import Backbone
from medprobe.models.registry import create_backbone
from medprobe.progress import progress_bar

BackboneFactory = Callable[..., Backbone]

#: how long the driver waits for chunk files written by remote nodes to become visible to it
#: (NFS caches negative lookups for up to ~30 s)
_VISIBILITY_TIMEOUT_S = 60.0


def _build_backbone(name: str, options: Mapping[str, Any], factory: BackboneFactory | None) -> Backbone:
    if factory is not None:
        return factory(**options)
    return create_backbone(name, **options)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class _AttemptLedger:
    """Counts how often each chunk was started, across actor restarts (it lives in its own actor)."""

    def __init__(self) -> None:
        self.starts: dict[int, int] = {}

    def start(self, index: int) -> int:
        self.starts[index] = self.starts.get(index, 0) + 1
        return self.starts[index]


class _ChunkWorker:
    """The callable class Ray Data runs in each actor: one backbone replica, one chunk per call.

    Errors meant for people (:class:`MedprobeError`) are returned as result rows instead of raised:
    Ray would wrap them into its own exception types and the driver could no longer tell an
    unreadable image from a crash.
    """

    def __init__(
        self,
        *,
        backbone_name: str,
        backbone_options: Mapping[str, Any],
        backbone_factory: BackboneFactory | None,
        expected_fingerprint: str,
        dataset: Dataset,
        cache_path: str,
        batch_size: int,
        on_error: OnError,
        ledger: Any,
        max_chunk_attempts: int,
    ) -> None:
        self.host = socket.gethostname()
        self.dataset = dataset
        self.batch_size = batch_size
        self.on_error = on_error
        self.ledger = ledger
        self.max_chunk_attempts = max_chunk_attempts
        self.backbone: Backbone | None = None
        self.init_error: MedprobeError | None = None
        try:
            self.cache = self._open_cache(cache_path)
            self.backbone = _build_backbone(backbone_name, backbone_options, backbone_factory)
            actual = _canonical(self.backbone.fingerprint())
            if actual != expected_fingerprint:
                raise ModelError(
                    f"backbone {backbone_name!r} on worker host {self.host} has fingerprint {actual}, but the "
                    f"driver's is {expected_fingerprint}: install the same model files and medprobe version "
                    "on every node"
                )
        except MedprobeError as error:  # reported with the first chunk, see the class docstring
            self.init_error = error
        except Exception as error:  # e.g. a dependency or a GPU missing on this node only
            self.init_error = ModelError(
                f"worker on host {self.host} cannot build backbone {backbone_name!r}: "
                f"{type(error).__name__}: {error}"
            )

    def _open_cache(self, cache_path: str) -> FeatureCache:
        if not (Path(cache_path) / "meta.json").is_file():
            raise CacheError(
                f"worker on host {self.host} cannot see the feature cache {cache_path}: on a multi-machine "
                "cluster cache_root must be on a shared filesystem (e.g. NFS) mounted at the same path on "
                "every node"
            )
        return FeatureCache(Path(cache_path))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = int(batch["index"][0])
        start, stop = int(batch["start"][0]), int(batch["stop"][0])
        layers = [str(layer) for layer in batch["layers"][0]]
        try:
            if self.init_error is not None:
                raise self.init_error
            import ray

            attempt = ray.get(self.ledger.start.remote(index))
            if attempt > self.max_chunk_attempts:
                raise MedprobeError(
                    f"chunk {index} (samples {start}..{stop - 1}, first id "
                    f"{self.dataset.samples['sample_id'].iloc[start]!r}) killed its worker process "
                    f"{attempt - 1} times, every attempt it is allowed (max_chunk_attempts={self.max_chunk_attempts} "
                    f"attempts in total; last on host {self.host}); a likely cause is running out of memory "
                    "on one of its images. Chunks finished so far are kept: fix the cause (more memory per "
                    "worker, smaller batch_size) and run again to resume, or raise max_chunk_attempts"
                )
            assert self.backbone is not None
            # A retried chunk may have written some of its layers before its worker died.
            absent = [layer for layer in layers if not self.cache.chunk_path(layer, index).is_file()]
            if absent:
                chunk = read_chunk(self.dataset, self.dataset.samples.iloc[start:stop], self.on_error)
                features = compute_chunk(self.backbone, chunk, absent, self.batch_size)
                store_chunk(self.cache, index, absent, chunk, features)
        except MedprobeError as error:
            return self._row(index, type(error).__name__, str(error))
        return self._row(index, "", "")

    def _row(self, index: int, error_type: str, message: str) -> dict[str, np.ndarray]:
        return {
            "index": np.array([index], dtype=np.int64),
            "host": np.array([self.host]),
            "error_type": np.array([error_type]),
            "error": np.array([message]),
        }


def _driver_error(error_type: str, message: str) -> MedprobeError:
    """Rebuild a worker's error with its own medprobe class (the plain base class if unknown)."""
    cls = getattr(errors, error_type, None)
    if not (isinstance(cls, type) and issubclass(cls, MedprobeError)):
        cls = MedprobeError
    return cls(message)


def connect_ray(ray_address: str | None, engine: str = "extraction") -> bool:
    """Join the running Ray instance or cluster (or start a local one); True when this call
    started Ray and must stop it. ``engine`` names who needs Ray in the install hint."""
    try:
        import ray
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"{engine} engine 'ray' needs Ray; install it with `pip install 'medprobe[ray]'`"
        ) from error
    if ray.is_initialized():
        return False
    ray.init(address=ray_address)
    return True


def check_worker_resources(num_workers: Any, num_cpus_per_worker: Any, num_gpus_per_worker: Any,
                           prefix: str = "") -> None:
    """Ray worker settings as clear errors (``prefix`` names the run-file section, e.g. ``probe.``)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"{prefix}num_workers must be an integer >= 1, got {num_workers!r}")
    if not num_cpus_per_worker > 0:
        raise ConfigError(f"{prefix}num_cpus_per_worker must be > 0, got {num_cpus_per_worker!r}")
    if not num_gpus_per_worker >= 0:
        raise ConfigError(f"{prefix}num_gpus_per_worker must be >= 0, got {num_gpus_per_worker!r}")


def _data_context() -> Any:
    import ray.data

    # Building Ray's DataContext trips deprecation warnings inside Ray's own constructor; they are
    # not about anything this module sets.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ray.data.DataContext.get_current()


def _results(
    descriptors: list[dict[str, Any]],
    worker_kwargs: dict[str, Any],
    num_workers: int,
    num_cpus_per_worker: float,
    num_gpus_per_worker: float,
) -> Iterator[dict[str, Any]]:
    """Run the actor pool over the chunk descriptors; yield one row per finished chunk."""
    import ray
    import ray.data

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: a ledger on a worker node would die with that node, and every chunk in
    # flight would then fail instead of being retried elsewhere (the driver's node is never lost
    # without losing the run anyway).
    driver_node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    ledger = ray.remote(num_cpus=0, scheduling_strategy=driver_node)(_AttemptLedger).remote()
    try:
        chunks = ray.data.from_items(descriptors, override_num_blocks=len(descriptors))  # a task per chunk
        finished = chunks.map_batches(
            _ChunkWorker,
            batch_size=1,
            batch_format="numpy",
            fn_constructor_kwargs={**worker_kwargs, "ledger": ledger},
            # One chunk in flight per actor: chunks are large, so balance matters more than queueing.
            compute=ray.data.ActorPoolStrategy(size=num_workers, max_tasks_in_flight_per_actor=1),
            num_cpus=num_cpus_per_worker,
            num_gpus=num_gpus_per_worker or None,
        )
        yield from finished.iter_rows()
    finally:
        ray.kill(ledger)


def _wait_until_visible(cache: FeatureCache, layers: Sequence[str], hosts: set[str]) -> None:
    """Chunks written on other nodes may show up late on a network filesystem; wait a little."""
    deadline = time.monotonic() + _VISIBILITY_TIMEOUT_S
    while True:
        missing = cache.missing(layers)
        if not missing:
            return
        if time.monotonic() > deadline:
            first = min(missing)
            raise CacheError(
                f"workers on {sorted(hosts)} reported writing chunk {first} (and {len(missing) - 1} more) but "
                f"{cache.chunk_path(missing[first][0], first)} is not visible on the driver: cache_root must be "
                "on a filesystem shared by every node (e.g. NFS), mounted at the same path"
            )
        time.sleep(1.0)


def extract_features_ray(
    backbone_name: str,
    backbone_options: Mapping[str, Any],
    dataset: Dataset,
    layers: Sequence[str],
    cache_root: str | Path,
    *,
    batch_size: int | None = None,
    chunk_size: int = 256,
    dtype: str = "float16",
    on_error: OnError = "raise",
    num_workers: int = 1,
    num_gpus_per_worker: float = 0.0,
    num_cpus_per_worker: float = 1.0,
    show_progress: bool = True,
    ray_address: str | None = None,
    backbone_factory: BackboneFactory | None = None,
    max_chunk_attempts: int = 3,
    lock_wait_s: float = 0.0,
) -> FeatureCache:
    """Make sure ``layers`` of a backbone on every sample of ``dataset`` are in the cache, using Ray.

    Writes the same cache entry as :func:`~medprobe.features.extract.extract_features` and
    computes only the (chunk, layer) files still missing. ``backbone_options`` are passed to
    ``create_backbone(backbone_name, ...)`` in every actor (``device_map`` sharding inside one
    actor is just such an option); ``backbone_factory``, when given, is called with the options
    instead of the registry lookup (it is cloudpickled to the actors, for backbones registered only
    in the driver process). ``num_workers`` is the number of replicas, each reserving
    ``num_cpus_per_worker`` CPUs and ``num_gpus_per_worker`` GPUs (fractions allowed). Uses the
    running Ray instance if there is one, else connects to ``ray_address`` (``None``: the
    ``RAY_ADDRESS`` variable, or a new local instance, which is shut down at the end).

    Returns the cache entry; read features with ``cache.load(layer)``.
    """
    check_worker_resources(num_workers, num_cpus_per_worker, num_gpus_per_worker)
    if max_chunk_attempts < 1:
        raise ConfigError(f"max_chunk_attempts must be >= 1, got {max_chunk_attempts!r}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")

    backbone = _build_backbone(backbone_name, backbone_options, backbone_factory)
    try:
        layers = backbone.resolve_layers(layers if isinstance(layers, str) else list(layers))
        cache = open_cache(backbone, dataset, cache_root, chunk_size, dtype)
        batch_size = batch_size or backbone.default_batch_size
        display_name = backbone.name
    finally:
        backbone.close()

    if cache.missing(layers):
        with cache.writer_lock(lock_wait_s):
            todo = cache.missing(layers)  # another process may have finished some meanwhile
            if todo:
                plans = {plan.index: plan for plan in cache.chunks()}
                descriptors = [
                    {"index": i, "start": plans[i].start, "stop": plans[i].stop, "layers": todo[i]}
                    for i in sorted(todo)
                ]
                worker_kwargs = {
                    "backbone_name": backbone_name,
                    "backbone_options": dict(backbone_options),
                    "backbone_factory": backbone_factory,
                    "expected_fingerprint": _canonical(cache.meta["fingerprint"]["backbone"]),
                    "dataset": dataset,
                    "cache_path": str(cache.path.resolve()),
                    "batch_size": batch_size,
                    "on_error": on_error,
                    "max_chunk_attempts": max_chunk_attempts,
                }
                workers = min(num_workers, len(descriptors))  # every idle replica would load a model
                started_ray = connect_ray(ray_address)
                context = _data_context()
                ray_bars = context.enable_progress_bars
                context.enable_progress_bars = False  # the driver draws its own bar, below
                hosts: set[str] = set()
                try:
                    with progress_bar(
                        f"{display_name}: extracting {len(layers)} layer(s) on Ray, {workers} worker(s), chunks",
                        total=len(descriptors), enabled=show_progress,
                    ) as advance:
                        results = _results(descriptors, worker_kwargs, workers, num_cpus_per_worker,
                                           num_gpus_per_worker)
                        try:
                            for row in results:
                                if row["error_type"]:
                                    raise _driver_error(str(row["error_type"]), str(row["error"]))
                                hosts.add(str(row["host"]))
                                advance(1)
                        finally:
                            results.close()  # stops the actor pool when a worker reported an error
                finally:
                    context.enable_progress_bars = ray_bars
                    if started_ray:
                        import ray

                        ray.shutdown()
                _wait_until_visible(cache, layers, hosts)
                # a replica lost mid-write (its node gone, OOM-killed) leaves its temp file behind
                cache.remove_temporary_files()
    for layer in layers:
        if not cache.is_complete(layer):
            cache.mark_complete(layer)
    return cache


__all__ = ["extract_features_ray"]
