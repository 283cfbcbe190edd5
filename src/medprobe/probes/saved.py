"""Saved probes: a fitted probe as two files a second program can read without medprobe's code.

Why this format: a probe is four arrays (the weights and intercept on standardised features, and
the standardiser's mean and scale) plus what it takes to feed it the right features (backbone,
options, layer, pooling, prompt, preprocessing, cache fingerprint). The arrays go into a
safetensors file -- a format that cannot execute code when read, unlike pickle -- and the rest
into JSON beside it, with the SHA-256 of the safetensors file, so a damaged or swapped weight
file is refused instead of silently giving other numbers::

    probes/<name>.safetensors   coef (K, D), intercept (K,), mean (D,), scale (D,)  -- float64
    probes/<name>.json          classes, task type, backbone, layer, ..., "weights_sha256"
    probes/index.json           one entry per saved probe (the JSON's keys that pick a probe)

``K`` is 1 for a binary task (the positive class), else the number of classes or findings.
Probabilities are those of :class:`~medprobe.probes.logistic.LinearProbe`: sigmoid of
``((x - mean) / scale) @ coef.T + intercept`` (softmax for multi-class tasks).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.errors import DataError
from medprobe.io import atomic_write_bytes, atomic_write_json
from medprobe.probes.logistic import LinearProbe

#: bumped when the files change in a way an older reader would misread
FORMAT_VERSION = 1
FORMAT_NAME = "medprobe-probe"
INDEX_NAME = "index.json"
TENSORS = ("coef", "intercept", "mean", "scale")


@dataclass(frozen=True)
class ProbeWeights:
    """The arrays of a fitted probe (float64): what :class:`LinearProbe` scores with."""

    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, probe: LinearProbe) -> "ProbeWeights":
        return cls(*(np.asarray(getattr(probe, f"{name}_"), dtype=np.float64) for name in TENSORS))

    def probe(self, task_type: str) -> LinearProbe:
        """A fitted :class:`LinearProbe` holding these arrays, so it scores exactly as the run did."""
        probe = LinearProbe(task_type)
        probe.coef_, probe.intercept_ = self.coef, self.intercept
        probe.mean_, probe.scale_ = self.mean, self.scale
        probe.n_features_in_ = int(self.mean.shape[0])
        probe.n_classes_ = 2 if task_type == "binary" else int(self.coef.shape[0])
        if task_type != "multilabel":
            probe.classes_ = np.arange(probe.n_classes_)
        return probe


def probe_file_stem(backbone: str, layer: str, fraction: float, seed: int) -> str:
    """A file-system-safe, readable name: ``<backbone>__<layer>__f<fraction>__s<seed>``."""
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"

    return f"{safe(backbone)}__{safe(layer)}__f{fraction:g}__s{seed}"


def write_probe(folder: Path, stem: str, weights: ProbeWeights, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` (``record`` plus the format and checksum)
    atomically into ``folder``; returns the JSON record written."""
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(getattr(weights, name), dtype=np.float64) for name in TENSORS}
    data = save(tensors)
    atomic_write_bytes(folder / f"{stem}.safetensors", data)
    full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **record,
            "weights_file": f"{stem}.safetensors", "weights_sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(folder / f"{stem}.json", full)
    return full


def write_index(folder: Path, records: list[dict[str, Any]]) -> None:
    """``index.json``: what picks a probe (backbone row, layer, fraction, seed, selected) and its files."""
    keys = ("backbone_row", "stack", "layer", "train_fraction", "seed", "selected", "val_score", "weights_file")
    atomic_write_json(folder / INDEX_NAME, [{**{key: record[key] for key in keys},
                                             "json_file": Path(record["weights_file"]).with_suffix(".json").name}
                                            for record in records])


def read_index(folder: Path) -> list[dict[str, Any]]:
    """The entries of a run's ``probes/index.json`` (an error that says why when there is none)."""
    path = folder / INDEX_NAME
    if not path.is_file():
        raise DataError(f"{folder} holds no saved probes ({INDEX_NAME} missing): the run was made before "
                        "medprobe saved probes, or its probes/ folder was removed; rerun it")
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is damaged ({error})") from error
    if not isinstance(entries, list):
        raise DataError(f"{path} must hold a JSON list of saved probes")
    return entries


def read_probe(json_path: Path) -> tuple[dict[str, Any], ProbeWeights]:
    """The record and weights of one saved probe, the weights checked against the record's SHA-256.

    A missing file, a checksum that does not match, or arrays of the wrong shape are a
    :class:`DataError` naming the file -- never a probe that would score differently."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        record = json.loads(Path(json_path).read_text())
    except FileNotFoundError:
        raise DataError(f"saved probe {json_path} is missing") from None
    except (OSError, ValueError) as error:
        raise DataError(f"saved probe {json_path} is damaged ({error})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise DataError(f"{json_path} is not a saved medprobe probe")
    if int(record.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{json_path} was written by a newer medprobe (probe format {record['format_version']}); "
                        "upgrade medprobe to read it")
    weights_path = Path(json_path).parent / record["weights_file"]
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"the weights of saved probe {json_path} are missing: {weights_path}") from None
    if hashlib.sha256(data).hexdigest() != record["weights_sha256"]:
        raise DataError(f"saved probe {weights_path} does not match the SHA-256 in {Path(json_path).name} "
                        "(damaged or replaced after the run wrote it); refusing to use it -- rerun the experiment "
                        "or restore the file")
    try:
        tensors = load(data)
        weights = ProbeWeights(*(np.asarray(tensors[name], dtype=np.float64) for name in TENSORS))
    except (SafetensorError, KeyError, ValueError) as error:
        raise DataError(f"saved probe {weights_path} is unreadable ({error})") from error
    k, d = weights.coef.shape
    if weights.intercept.shape != (k,) or weights.mean.shape != (d,) or weights.scale.shape != (d,):
        raise DataError(f"saved probe {weights_path}: arrays of inconsistent shapes")
    return record, weights


__all__ = ["FORMAT_VERSION", "INDEX_NAME", "ProbeWeights", "probe_file_stem", "read_index", "read_probe",
           "write_index", "write_probe"]
