"""Test probabilities of a probe grid kept within a memory budget, the rest spilled to disk.

Why: a paper-scale grid -- 81 layers x 19 (fraction, seed) subsets x 10k test images x 54
findings in float64 -- holds ~6 GB of test probabilities until they are scored; spilled, memory
keeps only what is being scored. Values are stored exactly (``.npy``, same dtype).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np


class SpilledScores:
    """Test probabilities of one probe kept in a ``.npy`` file; NumPy reads them back on every use
    (``np.asarray(scores)``, indexing), so they occupy memory only while being scored."""

    def __init__(self, store: "ScoreStore", path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._store = store  # keeps the temporary folder alive as long as any spilled scores are
        self.path, self.shape, self.dtype = path, shape, dtype
        self.ndim = len(shape)

    def load(self) -> np.ndarray:
        return np.load(self.path, allow_pickle=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.load()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.load()[key]

    def __len__(self) -> int:
        return self.shape[0]


class ScoreStore:
    """Keeps test probabilities in memory up to ``budget_bytes`` and spills the rest to a temporary
    folder (deleted when the last spilled array is gone)."""

    def __init__(self, budget_bytes: float) -> None:
        self.budget_bytes = budget_bytes
        self.in_memory = 0
        self.spilled = 0
        self._folder: Path | None = None

    def keep(self, scores: np.ndarray) -> np.ndarray | SpilledScores:
        if self.in_memory + scores.nbytes <= self.budget_bytes:
            self.in_memory += scores.nbytes
            return scores
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="medprobe-scores-"))
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        path = self._folder / f"{self.spilled:07d}.npy"
        np.save(path, scores, allow_pickle=False)
        self.spilled += 1
        return SpilledScores(self, path, scores.shape, scores.dtype)


__all__ = ["ScoreStore", "SpilledScores"]
