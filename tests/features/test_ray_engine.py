"""The Ray engine writes the very cache entry the local engine writes, survives killed workers,
and reports worker-side errors with their own type on the driver."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

import conftest  # noqa: E402
from conftest import ToyBackbone, make_dataset  # noqa: E402
from medprobe.errors import CacheError, ConfigError, DataError, MedprobeError, ModelError  # noqa: E402
from medprobe.features import FeatureCache, extract_features  # noqa: E402
from medprobe.features.extract import open_cache  # noqa: E402
from medprobe.features.ray_engine import extract_features_ray  # noqa: E402
from medprobe.models.base import Backbone  # noqa: E402
from medprobe.models.registry import create_backbone  # noqa: E402

LAYERS = ["mean", "hist"]


def _first_time(marker: str) -> bool:
    """True for exactly one caller across processes: whoever creates ``marker``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class CrashableToy(ToyBackbone):
    """The toy backbone, plus a way to kill its own process (like the OOM killer would) when it
    meets one particular image: always, or only the first time (``crash_marker``). The crash and
    bookkeeping options are not in the fingerprint, so a crashing and a healthy run share a cache."""

    name = "test-toy"

    def __init__(self, scale: float = 1.0, crash_on_pixel: float | None = None, crash_marker: str | None = None,
                 replica_dir: str | None = None, driver_pid: int | None = None, on_worker: str = "") -> None:
        super().__init__(scale)
        if driver_pid is not None and os.getpid() != driver_pid:  # a worker node that differs from the driver
            if on_worker == "fail":  # e.g. a library missing there
                raise RuntimeError("libfoo.so: cannot open shared object file")
            if on_worker == "rescale":  # e.g. another version of the model file there
                self.scale = 2 * scale
        self.crash_on_pixel = crash_on_pixel
        self.crash_marker = crash_marker
        if replica_dir is not None:  # one file per process that built a replica
            Path(replica_dir, f"pid-{os.getpid()}").touch()

    def fingerprint(self) -> dict[str, Any]:
        return {"backbone": "test-toy", "scale": self.scale}

    def extract(self, images, layers):
        if self.crash_on_pixel is not None and any(float(img[0, 0, 0]) == self.crash_on_pixel for img in images):
            if self.crash_marker is None or _first_time(self.crash_marker):
                os._exit(1)
        return super().extract(images, layers)



@pytest.fixture(scope="module")
def ray_cluster():
    # The actors cannot import the test modules (pytest put them on the driver's sys.path only), so
    # the toy backbone and dataset travel by value.
    modules = [sys.modules[__name__], conftest]
    for module in modules:
        ray.cloudpickle.register_pickle_by_value(module)
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    for module in modules:
        ray.cloudpickle.unregister_pickle_by_value(module)


def _entry_files(cache: FeatureCache) -> dict[str, bytes]:
    """Every file of a cache entry except the lock file (and temporary files, which never remain)."""
    return {str(p.relative_to(cache.path)): p.read_bytes()
            for p in sorted(cache.path.rglob("*")) if p.is_file() and p.name != ".lock"}


def _local(data, root: Path, backbone: Backbone | None = None, layers: list[str] = LAYERS) -> FeatureCache:
    return extract_features(backbone or CrashableToy(), data, layers, root, chunk_size=4, batch_size=3,
                            on_error="skip", show_progress=False)


def _ray(data, root: Path, options: dict[str, Any] | None = None, **kwargs: Any) -> FeatureCache:
    settings = dict(chunk_size=4, batch_size=3, on_error="skip", num_workers=2, num_cpus_per_worker=0.5,
                    show_progress=False, backbone_factory=CrashableToy)
    settings.update(kwargs)
    return extract_features_ray("test-toy", options or {}, data, LAYERS, root, **settings)


def _pixel_of(data, position: int) -> float:
    """A value that identifies one image (the toy images are random floats)."""
    return float(data.read_image(data.samples.iloc[position])[0, 0, 0])


def test_two_workers_write_the_local_engines_cache_byte_for_byte(tmp_path, ray_cluster):
    data = make_dataset(26, bad=[5])  # 7 chunks of 4; one unreadable image, skipped and recorded
    local = _local(data, tmp_path / "local")
    replicas = tmp_path / "replicas"
    replicas.mkdir()
    distributed = _ray(data, tmp_path / "ray", {"replica_dir": str(replicas)}, show_progress=True)
    assert distributed.path.name == local.path.name  # same cache key
    assert _entry_files(distributed) == _entry_files(local)
    assert distributed.layers() == sorted(LAYERS)
    assert [s["sample_id"] for s in distributed.skipped("mean")] == ["s005"]
    workers = {p.name for p in replicas.iterdir()} - {f"pid-{os.getpid()}"}
    assert len(workers) == 2  # two replicas, neither in the driver process

    # Complete: a second run starts no worker at all.
    _ray(data, tmp_path / "ray", {"replica_dir": str(replicas)})
    assert {p.name for p in replicas.iterdir()} - {f"pid-{os.getpid()}"} == workers


def test_registry_backbone_built_inside_the_actors(tmp_path, ray_cluster):
    data = make_dataset(10)
    local = _local(data, tmp_path / "local", create_backbone("pixels", size=4), ["pixels"])
    distributed = extract_features_ray("pixels", {"size": 4}, data, ["pixels"], tmp_path / "ray", chunk_size=4,
                                       batch_size=3, on_error="skip", num_workers=2, num_cpus_per_worker=0.5,
                                       show_progress=False)
    assert _entry_files(distributed) == _entry_files(local)


def test_worker_killed_mid_chunk_is_restarted_and_the_cache_is_identical(tmp_path, ray_cluster):
    data = make_dataset(24)
    reference = _local(data, tmp_path / "local")
    marker = tmp_path / "crashed"
    cache = _ray(data, tmp_path / "ray", {"crash_on_pixel": _pixel_of(data, 13), "crash_marker": str(marker)})
    assert marker.exists()  # a worker really died (on chunk 3)
    assert _entry_files(cache) == _entry_files(reference)


def test_chunk_that_always_kills_its_worker_stops_the_run_which_then_resumes(tmp_path, ray_cluster):
    data = make_dataset(24)
    reference = _local(data, tmp_path / "local")
    with pytest.raises(MedprobeError, match=r"chunk 3 \(samples 12\.\.15, first id 's012'\) killed its worker "
                                            r"process 2 times"):
        _ray(data, tmp_path / "ray", {"crash_on_pixel": _pixel_of(data, 14)}, max_chunk_attempts=2)
    partial = FeatureCache(next((tmp_path / "ray").iterdir()))
    assert 3 in partial.missing(LAYERS) and not partial.is_complete("mean")
    resumed = _ray(data, tmp_path / "ray")
    assert _entry_files(resumed) == _entry_files(reference)


def test_worker_side_errors_keep_their_type_on_the_driver(tmp_path, ray_cluster):
    data = make_dataset(12, bad=[6])
    with pytest.raises(DataError, match=r"s006.*mem://6.*truncated.*on_error: skip"):
        _ray(data, tmp_path / "bad-image", on_error="raise")
    with pytest.raises(ModelError, match=r"worker on host .* cannot build backbone 'test-toy': RuntimeError: "
                                         r"libfoo\.so"):
        _ray(make_dataset(8), tmp_path / "bad-node", {"driver_pid": os.getpid(), "on_worker": "fail"})
    with pytest.raises(ModelError, match=r"fingerprint .*\"scale\":2\.0.* but the driver's is .*\"scale\":1\.0"):
        _ray(make_dataset(8), tmp_path / "other-model", {"driver_pid": os.getpid(), "on_worker": "rescale"})
    assert not list((tmp_path / "other-model").rglob("chunk-*"))  # nothing written under the wrong key


def test_refused_while_another_writer_holds_the_cache(tmp_path):
    data = make_dataset(8)
    cache = open_cache(CrashableToy(), data, tmp_path, 4, "float16")
    with cache.writer_lock(), pytest.raises(CacheError, match="another process is writing"):
        _ray(data, tmp_path)
    assert cache.missing(LAYERS) == {0: LAYERS, 1: LAYERS}  # nothing was written


@pytest.mark.parametrize("setting", [{"num_workers": 0}, {"num_cpus_per_worker": 0}, {"num_gpus_per_worker": -1},
                                     {"max_chunk_attempts": 0}, {"on_error": "ignore"}])
def test_invalid_settings_are_refused_before_any_work(tmp_path, setting):
    with pytest.raises(ConfigError, match=next(iter(setting))):
        _ray(make_dataset(4), tmp_path, **setting)
    assert not any(tmp_path.iterdir())
