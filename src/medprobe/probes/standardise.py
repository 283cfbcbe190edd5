"""Standardising features as ``StandardScaler`` does: the training mean and population std of each feature.

Why by row blocks in float64: features arrive in float16/32 and may be large; the statistics and
the standardised copy are computed block by block so the float64 temporaries stay small, and in
float64 so that large offsets cancel exactly.
"""

from __future__ import annotations

import numpy as np

from medprobe.probes.inputs import rows_per_block


def standardise_block(block: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(block - mean) / scale`` in float64 (large offsets cancel exactly)."""
    return (block.astype(np.float64) - mean) / scale


def fit_standardiser(X: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature mean and population std (float64, two passes) and the standardised ``X`` in ``dtype``.

    Zero-variance features get scale 1, as in ``StandardScaler``: they turn into zeros instead
    of NaNs, and their weights stay at 0 under the L2 penalty. Row blocks keep the float64
    temporaries small.
    """
    n, d = X.shape
    step = rows_per_block(d)
    mean = np.zeros(d)
    for start in range(0, n, step):
        mean += X[start:start + step].sum(axis=0, dtype=np.float64)
    mean /= n
    squares = np.zeros(d)
    for start in range(0, n, step):
        centred = X[start:start + step].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    std = np.sqrt(squares / n)
    scale = np.where(std > 0, std, 1.0)
    standardised = np.empty((n, d), dtype=dtype)
    for start in range(0, n, step):
        standardised[start:start + step] = standardise_block(X[start:start + step], mean, scale)
    return mean, scale, standardised


__all__ = ["fit_standardiser", "standardise_block"]
