"""The probe grid on a Ray cluster (``probe.engine: ray``): one task per pass of layers.

Each task runs :func:`medprobe.probes.layer_sweep.probe_layers` -- the very function the local engine
runs -- on the node Ray places it: it reads its layers (one, or ``probe.layers_per_pass``) from
the feature cache (which therefore has to be on a filesystem every node mounts at the same path,
as for distributed extraction), fits every (train fraction, seed) subset and returns the
validation scores and test probabilities only.
The split positions, labels and subsets go to the object store once and are shared by all tasks.

Why the results equal the local engine's bit for bit: the inputs are the same arrays, the solver
is deterministic for a given input and thread count, and each task runs the BLAS (and torch, on a
GPU) with the driver's thread count, whatever CPU share Ray gave it. On a cluster of
machines with another CPU or BLAS the last bits may still differ; on one machine or identical
nodes they do not.

At most ``num_workers`` passes are in flight, so cluster memory is bounded by ``num_workers``
passes' features. A task whose worker died (node lost, out of memory) is retried by Ray on another
node (``max_retries``); errors meant for people keep their medprobe type on the driver.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medprobe import errors
from medprobe.errors import CacheError, MedprobeError
from medprobe.features.ray_engine import check_worker_resources, connect_ray
from medprobe.probes.layer_sweep import LayerFit, ProbeSettings, TrainSubset, layer_passes, probe_layers
from medprobe.progress import progress_bar

#: retries of a layer whose worker process died (a lost node, the OOM killer)
MAX_RETRIES = 3


def driver_threads() -> int:
    """The thread count of this process's BLAS, which the CPU solver's products run on."""
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts, default=1)


def _probe_layers_task(cache_path: str, layers: list[str], shared: tuple, threads: int) -> tuple[str, Any]:
    """Ray task body: ``("ok", fits)`` or ``("error", (type name, message))`` for medprobe errors
    (Ray would wrap them into its own exception types otherwise)."""
    from threadpoolctl import threadpool_limits

    index, labels, subsets, settings = shared
    host = socket.gethostname()
    torch = sys.modules.get("torch")  # imported only where the probes run on a GPU
    previous = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(threads)
    try:
        if not (Path(cache_path) / "meta.json").is_file():
            raise CacheError(f"worker on host {host} cannot see the feature cache {cache_path}: with "
                             "probe.engine: ray the cache must be on a filesystem shared by every node (e.g. NFS), "
                             "mounted at the same path")
        with threadpool_limits(limits=threads, user_api="blas"):
            return "ok", probe_layers(cache_path, layers, index, labels, subsets, settings)
    except MedprobeError as error:
        where = f"layer {layers[0]!r}" if len(layers) == 1 else f"layers {layers}"
        return "error", (type(error).__name__, f"{where} on host {host}: {error}")
    finally:
        if torch:
            torch.set_num_threads(previous)


def _driver_error(error_type: str, message: str) -> MedprobeError:
    cls = getattr(errors, error_type, None)
    if not (isinstance(cls, type) and issubclass(cls, MedprobeError)):
        cls = MedprobeError
    return cls(message)


def probe_layers_ray(
    cache_path: str | Path,
    layers: Sequence[str],
    index: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    subsets: Sequence[TrainSubset],
    settings: ProbeSettings,
    *,
    num_workers: int = 1,
    num_cpus_per_worker: float = 1.0,
    num_gpus_per_worker: float = 0.0,
    ray_address: str | None = None,
    description: str = "probing on Ray, layers",
    show_progress: bool = True,
    keep: Callable[[LayerFit], LayerFit] | None = None,
) -> dict[str, list[LayerFit]]:
    """``{layer: [LayerFit per subset]}`` for every layer, fitted as Ray tasks (see the module docstring).
    ``keep``, when given, is applied to each fit as its layer arrives (the probe stage's
    :class:`~medprobe.stages.probe.FitKeeper`: test probabilities into the run's score store, fitted
    arrays only for the probes the run saves), so the driver never holds them all."""
    check_worker_resources(num_workers, num_cpus_per_worker, num_gpus_per_worker, prefix="probe.")
    started_ray = connect_ray(ray_address, engine="probe")
    import ray

    try:
        task = ray.remote(_probe_layers_task).options(
            num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker or None, max_retries=MAX_RETRIES)
        shared = ray.put((index, labels, list(subsets), settings))
        threads = driver_threads()
        waiting = layer_passes(layers, settings.layers_per_pass)
        running: dict[Any, list[str]] = {}
        fits: dict[str, list[LayerFit]] = {}
        with progress_bar(description, total=len(layers), enabled=show_progress) as advance:
            while waiting or running:
                while waiting and len(running) < num_workers:
                    members = waiting.pop(0)
                    running[task.remote(str(Path(cache_path).resolve()), members, shared, threads)] = members
                done, _ = ray.wait(list(running), num_returns=1)
                for reference in done:
                    members = running.pop(reference)
                    status, value = ray.get(reference)
                    if status == "error":
                        for other in running:
                            ray.cancel(other)
                        raise _driver_error(*value)
                    for layer in members:
                        fits[layer] = [keep(fit) for fit in value[layer]] if keep is not None else value[layer]
                    advance(len(members))
        return fits
    finally:
        if started_ray:
            ray.shutdown()


__all__ = ["MAX_RETRIES", "probe_layers_ray"]
