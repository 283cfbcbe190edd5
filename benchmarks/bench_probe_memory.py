"""Peak memory of the probe stage against the number of layers (issue 15.1).

Writes a synthetic feature cache (4,000 images, 8 layers of width 4,096, float16) through the real
cache writer, then runs the probe stage (:func:`medprobe.stages.probe.probe_backbone`) on the first N layers in a
fresh process and prints the peak RSS (``ru_maxrss``) before and after probing. Run it for 4 and 8 layers, with the
code to measure on PYTHONPATH:

    PYTHONPATH=src python -W ignore benchmarks/bench_probe_memory.py 4
    PYTHONPATH=src python -W ignore benchmarks/bench_probe_memory.py 8
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medprobe.config import parse_config
from medprobe.data.dataset import Dataset
from medprobe.features import extract_features
from medprobe.stages.extract import ExtractedFeatures
from medprobe.stages.probe import probe_backbone
from medprobe.models.base import Backbone

N_IMAGES, WIDTH, MAX_LAYERS = 4000, 4096, 8


class RandomProjections(Backbone):
    """Layer k: tanh of a fixed random projection of the pixels (seeded by k), a little shifted."""

    name = "random-projections"
    default_batch_size = 256

    def layer_names(self) -> list[str]:
        return [f"l{k}" for k in range(MAX_LAYERS)]

    def fingerprint(self) -> dict:
        return {"backbone": self.name, "width": WIDTH}

    def extract(self, images, layers):
        pixels = np.stack([image.reshape(-1) for image in images])
        return {layer: np.tanh(pixels @ np.random.default_rng(int(layer[1:])).normal(size=(pixels.shape[1], WIDTH)) / 8
                               + 0.01 * int(layer[1:])).astype(np.float32) for layer in layers}


def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N_IMAGES)
    images = [np.clip(rng.random((8, 8, 3)) * 0.5 + 0.3 * y, 0, 1).astype(np.float32) for y in labels]
    table = pd.DataFrame({"sample_id": [f"s{i:05d}" for i in range(N_IMAGES)],
                          "split": np.array(["train", "train", "val", "test"])[rng.integers(0, 4, N_IMAGES)],
                          "label": labels.tolist(), "group": [None] * N_IMAGES,
                          "source": [f"mem://{i}" for i in range(N_IMAGES)]})
    return Dataset("synthetic", table, ["neg", "pos"], "binary", lambda row: images[int(row["sample_id"][1:])],
                   preprocessing={"synthetic": 1})


def main(n_layers: int) -> None:
    data = dataset()
    root = Path(tempfile.gettempdir()) / "medprobe-bench-probe-memory"
    cache = extract_features(RandomProjections(), data, [f"l{k}" for k in range(MAX_LAYERS)], root,
                             show_progress=False)
    config = parse_config({"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels", "label": "synthetic"}],
                           "probe": {"Cs": [0.01, 1.0], "max_iter": 50}})
    layers = [f"l{k}" for k in range(n_layers)]
    features = ExtractedFeatures("synthetic", cache, layers, {layer: "main" for layer in layers}, {}, 0.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    probe_backbone(config.probe, config.seed, data, features, show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n_layers} layers of {N_IMAGES} x {WIDTH} (one layer in float32: {N_IMAGES * WIDTH * 4 / 2**20:.0f} MiB): "
          f"peak RSS {before:.0f} MiB before probing, {peak:.0f} MiB after; probe stage "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else MAX_LAYERS)
