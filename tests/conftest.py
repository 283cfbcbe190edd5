"""Shared fixtures: a small in-memory dataset and a deterministic toy backbone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pytest

from medprobe.data.dataset import Dataset
from medprobe.errors import ImageReadError
from medprobe.models.base import Backbone

SHARED_DATA = Path(os.environ.get("MEDPROBE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


class ToyBackbone(Backbone):
    """Two 'layers' that are fixed functions of the image; counts the images it processed."""

    name = "toy"
    default_batch_size = 4

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.images_seen = 0

    def layer_names(self) -> list[str]:
        return ["mean", "hist"]

    def fingerprint(self) -> dict[str, Any]:
        return {"backbone": "toy", "scale": self.scale}

    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        self.images_seen += len(images)
        out = {}
        for layer in layers:
            if layer == "mean":
                out[layer] = np.stack([img.mean(axis=(0, 1)) * self.scale for img in images])
            else:
                out[layer] = np.stack([np.histogram(img, bins=8, range=(0, 1))[0] / img.size for img in images])
        return {k: v.astype(np.float32) for k, v in out.items()}


def make_dataset(n: int = 40, seed: int = 0, bad: Sequence[int] = ()) -> Dataset:
    """Binary task: class-1 images are brighter. ``bad`` indices raise ImageReadError when read."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = [np.clip(rng.random((8, 8, 3)) * 0.5 + 0.3 * y, 0, 1).astype(np.float32) for y in labels]
    splits = np.array(["train", "val", "test", "train"] * (n // 4 + 1))[:n]
    table = pd.DataFrame({
        "sample_id": [f"s{i:03d}" for i in range(n)],
        "split": splits,
        "label": labels.tolist(),
        "group": [None] * n,
        "source": [f"mem://{i}" for i in range(n)],
    })
    bad_set = set(bad)

    def read(row: pd.Series) -> np.ndarray:
        index = int(row["sample_id"][1:])
        if index in bad_set:
            raise ImageReadError("truncated file", sample_id=row["sample_id"], path=row["source"])
        return images[index]

    return Dataset("toy", table, ["neg", "pos"], "binary", read, preprocessing={"toy": 1})


@pytest.fixture
def toy_dataset() -> Dataset:
    return make_dataset()


@pytest.fixture
def shared_data_dir() -> Path:
    if not (SHARED_DATA / "medmnist" / "pneumoniamnist.npz").is_file():
        pytest.skip(f"PneumoniaMNIST not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def same_precision_on_every_cpu(monkeypatch):
    """``dtype: auto`` picks bfloat16 on CPUs with AMX or AVX512-BF16 (medprobe.hardware), and the
    parity tests compare float32 features with the model's own to 1e-6; CI machines vary in CPU, so
    every test sees a CPU without bf16 units. Tests of the choice itself pass their own units."""
    from medprobe import hardware

    units = hardware.MatrixUnits("test CPU without bf16 units", frozenset({"avx2"}))
    monkeypatch.setattr(hardware, "cpu_units", lambda: units)
    monkeypatch.setattr("medprobe.models.onnx_backbone.cpu_units", lambda: units)


@pytest.fixture
def torch_one_thread():
    """Tiny matrices: torch's thread pool only adds contention on a shared CPU (restored after)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
