"""Extraction and probing on a local multi-node Ray cluster (``ray.cluster_utils.Cluster``): the
same numbers as the local engines, and extraction that survives losing a node mid-run.

Every node of the cluster is a set of processes on this machine (their own raylet, object store
and workers), so tasks and actors really run in other processes on other "nodes", and removing a
node kills whatever ran there. The head node gets no CPUs, so all work lands on worker nodes.
Actors and tasks take half a CPU each: on a 2-core machine whole CPUs would starve Ray's own tasks.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

import conftest  # noqa: E402
import test_probe_stage  # noqa: E402
from conftest import ToyBackbone, make_dataset  # noqa: E402
from test_probe_stage import layered_backbone  # noqa: E402,F401  (fixture)
from medprobe.config import parse_config  # noqa: E402
from medprobe.stages.data import load_data  # noqa: E402
from medprobe.stages.extract import extract_backbone  # noqa: E402
from medprobe.stages.probe import probe_backbone  # noqa: E402
from medprobe.features import FeatureCache, extract_features  # noqa: E402
from medprobe.features.ray_engine import extract_features_ray  # noqa: E402

pytestmark = pytest.mark.slow

LAYERS = ["mean", "hist"]
_OBJECT_STORE = 80 * 1024 * 1024


class NodeRecordingToy(ToyBackbone):
    """The toy backbone; each replica records the Ray node it runs on and can be slowed down, so a
    test can remove a node while it is busy. Neither option is in the fingerprint."""

    name = "test-toy"

    def __init__(self, node_dir: str | None = None, seconds_per_batch: float = 0.0) -> None:
        super().__init__()
        self.seconds_per_batch = seconds_per_batch
        if node_dir is not None and ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
            Path(node_dir, f"{node}-{os.getpid()}").touch()

    def extract(self, images, layers):
        time.sleep(self.seconds_per_batch)
        return super().extract(images, layers)


@pytest.fixture(scope="module")
def cluster():
    modules = [sys.modules[__name__], conftest, test_probe_stage]
    for module in modules:
        ray.cloudpickle.register_pickle_by_value(module)
    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": _OBJECT_STORE,
                                                            "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=_OBJECT_STORE) for _ in range(2)]
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    print(f"cluster of 1 + {len(workers)} nodes up in {time.perf_counter() - started:.1f} s")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # also removes /tmp/ray/ray_current_cluster, which later ray.init() calls read
        for module in modules:
            ray.cloudpickle.unregister_pickle_by_value(module)


def _entry_files(cache: FeatureCache) -> dict[str, bytes]:
    return {str(p.relative_to(cache.path)): p.read_bytes()
            for p in sorted(cache.path.rglob("*")) if p.is_file() and p.name != ".lock"}


def _alive_worker_nodes() -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0}


def test_extraction_on_two_nodes_writes_the_local_cache(tmp_path, cluster):
    data = make_dataset(26, bad=[5])
    local = extract_features(NodeRecordingToy(), data, LAYERS, tmp_path / "local", chunk_size=4, batch_size=3,
                             on_error="skip", show_progress=False)
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    distributed = extract_features_ray("test-toy", {"node_dir": str(nodes)}, data, LAYERS, tmp_path / "ray",
                                       chunk_size=4, batch_size=3, on_error="skip", num_workers=2,
                                       num_cpus_per_worker=0.5, show_progress=False,
                                       backbone_factory=NodeRecordingToy)
    assert _entry_files(distributed) == _entry_files(local)
    replicas = {p.name.split("-")[0] for p in nodes.iterdir() if p.name.split("-")[1] != str(os.getpid())}
    # Ray's default (hybrid) scheduling stops packing a node at half its CPUs: one replica per node
    assert replicas == _alive_worker_nodes() and len(replicas) == 2


def test_probe_grid_on_ray_equals_the_local_engine(tmp_path, cluster, layered_backbone):
    """Also with passes of two layers (one task each) on the cluster: the same numbers."""
    outcomes = {}
    for run, engine, layers_per_pass in (("local", "local", 1), ("ray", "ray", 1), ("ray-pairs", "ray", 2)):
        config = test_probe_stage._run_config(tmp_path / run, {
            "name": "test-layers", "label": "VLM", "layers": "all", "options": {"vlm": True, "n_layers": 3}},
            engine=engine, num_workers=2, num_cpus_per_worker=0.5, layers_per_pass=layers_per_pass)
        config["cache_dir"] = str(tmp_path / "cache")  # one cache: the same features for both engines
        run_config = parse_config(config)
        dataset = load_data(run_config.data, val_fraction=run_config.probe.val_fraction, seed=run_config.seed)
        features = extract_backbone(run_config.backbones[0], dataset, run_config.extraction,
                                    run_config.resolved_cache_dir(), on_error=run_config.data.on_error,
                                    show_progress=False)
        outcomes[run] = probe_backbone(run_config.probe, run_config.seed, dataset, features,
                                       ray_address=run_config.extraction.ray_address, show_progress=False).outcomes
    assert len(outcomes["local"]) == len(outcomes["ray"]) == len(outcomes["ray-pairs"]) == 5 * 3
    for local, distributed in [*zip(outcomes["local"], outcomes["ray"]), *zip(outcomes["local"], outcomes["ray-pairs"])]:
        assert vars(local).keys() == vars(distributed).keys()
        for key, value in vars(local).items():
            assert _identical(value, vars(distributed)[key]), key


def _identical(a, b) -> bool:
    """Bit-identical arrays (test scores, the saved probe's weights and validation scores), equal
    everything else; a dataclass of arrays (the probe's weights) field by field."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_identical(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


def test_extraction_survives_a_node_removed_mid_run(tmp_path, cluster):
    data = make_dataset(48)  # 12 chunks of 4, 0.3 s per batch of 2: ~10 s of work per replica
    reference = extract_features(NodeRecordingToy(), data, LAYERS, tmp_path / "local", chunk_size=4, batch_size=2,
                                 on_error="skip", show_progress=False)
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    outcome: dict[str, Any] = {}

    def extract() -> None:
        try:
            outcome["cache"] = extract_features_ray(
                "test-toy", {"node_dir": str(nodes), "seconds_per_batch": 0.3}, data, LAYERS, tmp_path / "ray",
                chunk_size=4, batch_size=2, on_error="skip", num_workers=2, num_cpus_per_worker=0.5,
                show_progress=False, backbone_factory=NodeRecordingToy)
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    runner = threading.Thread(target=extract)
    runner.start()
    deadline = time.monotonic() + 120
    chunks = tmp_path / "ray"
    while time.monotonic() < deadline and len(list(chunks.rglob("layers/*/chunk-*.safetensors"))) < 2:
        time.sleep(0.2)  # wait for the pool to be up and busy
    busy = {p.name.split("-")[0] for p in nodes.iterdir() if p.name.split("-")[1] != str(os.getpid())}
    # the chunk-attempt ledger lives on the driver's node, so it survives the loss of any worker node
    ledgers = [actor["Address"]["NodeID"] for actor in ray._private.state.actors().values()
               if actor["ActorClassName"] == "_AttemptLedger" and actor["State"] == "ALIVE"]
    assert ledgers == [cluster.head_node.node_id]
    victim = next(node for node in cluster.worker_nodes if node.node_id in busy)
    written_before = len(list(chunks.rglob("layers/*/chunk-*.safetensors")))
    removed_at = time.time()
    cluster.remove_node(victim, allow_graceful=False)
    cluster.add_node(num_cpus=1, object_store_memory=_OBJECT_STORE)  # keep two nodes for the next tests
    runner.join(timeout=300)
    assert not runner.is_alive(), "extraction hung after the node was removed"
    assert "error" not in outcome, str(outcome.get("error"))[-3000:]
    assert written_before < 2 * 12  # the node really left while chunks were still to do
    assert _entry_files(outcome["cache"]) == _entry_files(reference)
    # the lost replica's chunks went to a replica started afterwards on another node
    later = {p.name.split("-")[0] for p in nodes.iterdir() if p.stat().st_mtime > removed_at}
    assert later and victim.node_id not in later
