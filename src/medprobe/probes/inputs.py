"""What a probe is given, checked: features, labels, task type, device and dtype.

Why one module: the estimator (:class:`~medprobe.probes.logistic.LinearProbe`) and the selection
functions check the same inputs, and their errors (:class:`DataError`, :class:`ConfigError`) say
where the problem is -- the row and feature of a NaN, the class that never occurs -- instead of
letting a solver fail on it later.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Literal

import numpy as np

from medprobe.errors import ConfigError, DataError

TaskType = Literal["binary", "multiclass", "multilabel"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "multilabel")
#: elements per block when checking, standardising or scoring, so temporaries stay small (32 MiB in float64)
_BLOCK_ELEMENTS = 1 << 22
_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _gpu_device_nodes() -> bool:
    """Whether this machine shows a GPU to processes at all (NVIDIA or ROCm device files).

    Why: ``device: auto`` must not import torch (about 2 s) just to learn that a CPU-only machine
    has no GPU; where device files exist, torch is asked.
    """
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg"))


def resolve_device(device: Any) -> str:
    """The device the probe's products run on: ``"cpu"`` (NumPy) or a torch GPU device name.

    ``"auto"`` means CUDA when torch sees a GPU, else the CPU; anything else is used as given
    (a ``torch.device`` too) and checked.
    """
    name = str(device)
    if name == "cpu":
        return "cpu"
    if name == "auto" and not _gpu_device_nodes():
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"probe device {device!r} is not a torch device "
                          "('auto', 'cpu', 'cuda', 'cuda:1', ...)") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"probe device {device!r} was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return str(resolved)


def resolve_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of the probe's feature products (``"float32"`` or ``"float64"``)."""
    if dtype not in _DTYPES:
        raise ConfigError(f"probe dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def check_task_type(task_type: str) -> None:
    """A :class:`ConfigError` unless ``task_type`` is one the probes fit."""
    if task_type not in TASK_TYPES:
        raise ConfigError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")


def rows_per_block(n_features: int) -> int:
    """Rows per block so a float64 block holds about ``_BLOCK_ELEMENTS`` values (32 MiB)."""
    return max(1, _BLOCK_ELEMENTS // max(1, n_features))


def check_features(X: np.ndarray, what: str = "X", n_features: int | None = None) -> np.ndarray:
    """``X`` as a 2-D real array with only finite values, or a :class:`DataError` that says where.

    The finiteness check runs over row blocks so a large feature matrix is never copied whole.
    """
    array = np.asarray(X)
    if array.ndim != 2:
        raise DataError(f"{what} must be a 2-D array (n_samples, n_features), got shape {array.shape}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{what} must hold real numbers, got dtype {array.dtype}")
    n, d = array.shape
    if n == 0 or d == 0:
        raise DataError(f"{what} is empty (shape {array.shape})")
    if n_features is not None and d != n_features:
        raise DataError(f"{what} has {d} features but the probe was fitted on {n_features}")
    if np.issubdtype(array.dtype, np.floating):
        bad_rows: list[np.ndarray] = []
        bad_features = np.zeros(d, dtype=bool)
        step = rows_per_block(d)
        for start in range(0, n, step):
            bad = ~np.isfinite(array[start:start + step])
            if bad.any():
                bad_rows.append(start + np.flatnonzero(bad.any(axis=1)))
                bad_features |= bad.any(axis=0)
        if bad_rows:
            rows = np.concatenate(bad_rows)
            first_row = int(rows[0])
            first_feature = int(np.flatnonzero(~np.isfinite(array[first_row]))[0])
            raise DataError(
                f"{what} has {len(rows)} row(s) with NaN or inf values in {int(bad_features.sum())} feature(s) "
                f"(first: row {first_row}, feature {first_feature}); drop or impute those samples before probing"
            )
    return array


def _integer_labels(y: np.ndarray, what: str) -> np.ndarray:
    """Labels as int64, refusing NaN and non-integer values instead of silently truncating them."""
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.floating):
        raise DataError(f"{what} must hold integer class indices, got dtype {y.dtype}")
    if np.isnan(y).any():
        raise DataError(f"{what} has {int(np.isnan(y).sum())} missing label(s) (NaN)")
    if not np.all(y == np.round(y)):
        bad = y[y != np.round(y)]
        raise DataError(f"{what} must hold integer class indices, got non-integer values such as {bad[0]!r}")
    return y.astype(np.int64)


def check_labels(
    y: np.ndarray,
    task_type: TaskType,
    n_rows: int,
    what: str = "y",
    n_classes: int | None = None,
    require_all: bool = True,
) -> tuple[np.ndarray, int]:
    """Validated labels and the number of classes (or findings).

    ``n_classes`` fixes K (multiclass); otherwise K is ``max(y) + 1`` (binary: 2; multilabel: the
    number of columns). ``require_all`` (training data) demands that every class occurs -- for
    multilabel, that every finding has both positives and negatives -- because a probe cannot
    learn a class it never sees (its weights would run off to infinity or stay meaningless).
    """
    check_task_type(task_type)
    labels = np.asarray(y)
    if task_type == "multilabel":
        if labels.ndim != 2:
            raise DataError(f"{what} for a multilabel task must be a 0/1 matrix (n_samples, n_findings), "
                            f"got shape {labels.shape}")
    elif labels.ndim != 1:
        raise DataError(f"{what} for a {task_type} task must be a 1-D array of class indices, got shape {labels.shape}")
    if labels.shape[0] != n_rows:
        raise DataError(f"{what} has {labels.shape[0]} label rows but the features have {n_rows} rows")
    labels = _integer_labels(labels, what)

    if task_type == "multilabel":
        k = labels.shape[1]
        if n_classes is not None and k != n_classes:
            raise DataError(f"{what} has {k} findings but the probe was fitted on {n_classes}")
        if k == 0:
            raise DataError(f"{what} has no findings (0 columns)")
        outside = ~np.isin(labels, (0, 1))
        if outside.any():
            raise DataError(f"{what} for a multilabel task must be 0/1; "
                            f"found {np.unique(labels[outside])[:5].tolist()}")
        if require_all:
            positives = labels.sum(axis=0)
            single = np.flatnonzero((positives == 0) | (positives == n_rows))
            if len(single):
                detail = ", ".join(f"finding {j}: {'no positives' if positives[j] == 0 else 'no negatives'}"
                                   for j in single[:10])
                raise DataError(f"{what}: {len(single)} finding(s) have only one value in the training data "
                                f"({detail}); a probe needs both positives and negatives for every finding")
        return labels, k

    k = 2 if task_type == "binary" else (n_classes if n_classes is not None else int(labels.max()) + 1)
    if labels.min() < 0 or labels.max() >= k:
        outside = np.unique(labels[(labels < 0) | (labels >= k)])
        raise DataError(f"{what} has labels outside 0..{k - 1} for a {task_type} task: {outside[:10].tolist()}")
    if k < 2:
        raise DataError(f"{what} has fewer than 2 classes (only class {labels[0]}); a probe needs at least 2")
    if require_all:
        counts = np.bincount(labels, minlength=k)
        missing = np.flatnonzero(counts == 0)
        if len(missing):
            if task_type == "binary" or k - len(missing) < 2:
                present = np.flatnonzero(counts).tolist()
                raise DataError(f"{what} has fewer than 2 classes (only {present}); a probe needs at least 2")
            raise DataError(f"{what}: class(es) {missing.tolist()} of 0..{k - 1} have no training samples; a "
                            f"multinomial probe cannot learn a class it never sees -- drop it or re-split")
    return labels, k


__all__ = [
    "TASK_TYPES", "TaskType", "check_features", "check_labels", "check_task_type", "resolve_device", "resolve_dtype",
    "rows_per_block",
]
