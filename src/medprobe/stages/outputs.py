"""Outputs stage: write a run's results.json, comparisons.json, predictions.parquet and run.json
into the folder it is given (during a run, the staging folder of :mod:`medprobe.outputs`, which
replaces the output folder as a whole once the report is built too)."""

from __future__ import annotations

import io
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

import medprobe
from medprobe.config import RunConfig
from medprobe.data.dataset import Dataset
from medprobe.errors import ConfigError
from medprobe.io import atomic_write_bytes, atomic_write_json
from medprobe.outputs import recover
from medprobe.progress import console
from medprobe.stages.probe_files import OPERATING_POINTS_FILE, PROBES_FOLDER, write_probe_files
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.probe_statistics import ProbeStatistics

OUTPUT_FILES = ("results.json", "predictions.parquet", "comparisons.json", "run.json", "report.html")
#: folder of every layer's predictions with ``probe.predictions: all``
ALL_PREDICTIONS = "predictions_all"
#: entries of a run folder that are medprobe's: replaced by a new run; every other entry is kept
RUN_FOLDER_OWNED = (*OUTPUT_FILES, "figures", ALL_PREDICTIONS, PROBES_FOLDER, OPERATING_POINTS_FILE)


@dataclass(frozen=True)
class RunResults:
    """Everything a run folder's files are written from."""

    dataset: Dataset
    test_ids: list[str]
    y_test: np.ndarray
    outcomes: tuple[ProbeOutcome, ...]
    statistics: ProbeStatistics
    #: run.json ``backbones``: one record per backbone (:attr:`~medprobe.stages.extract.ExtractedFeatures.info`)
    backbones: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    probe_warnings: list[str]
    timings: dict[str, float]
    #: wall-clock start (ISO, UTC) and ``time.perf_counter()`` at the start, for run.json's total_s
    started_at: str
    started: float


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    """Never overwrite a previous run's results unless asked. First finishes or undoes the folder
    swap of a run that was killed (:func:`medprobe.outputs.recover`), so the check sees whole runs."""
    for note in recover(path, RUN_FOLDER_OWNED):
        console.print(f"[yellow]{note}[/]", highlight=False)
    existing = [name for name in OUTPUT_FILES if (path / name).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"output folder {path} already holds results ({', '.join(existing)}); "
            "pass --overwrite or choose another --out"
        )


def write_outputs(folder: Path, config: RunConfig, results: RunResults) -> None:
    """results.json, comparisons.json, the predictions, the saved probes and operating points
    (:mod:`~medprobe.stages.probe_files`), then run.json (last: it says the run finished)."""
    atomic_write_json(folder / "results.json", results.statistics.rows)
    atomic_write_json(folder / "comparisons.json", results.statistics.comparisons)
    write_predictions(folder, results.dataset, results.test_ids, results.y_test, results.outcomes,
                      every_layer=config.probe.predictions == "all")
    write_probe_files(folder, config, results.dataset, results.outcomes, results.backbones,
                      results.statistics.operating_points)
    timings = {**results.timings, "total_s": round(time.perf_counter() - results.started, 3)}
    atomic_write_json(folder / "run.json", run_record(config, results, timings))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def write_predictions(folder: Path, dataset: Dataset, test_ids: list[str], y_test: np.ndarray,
                      outcomes: Sequence[ProbeOutcome], *, every_layer: bool = False) -> None:
    """predictions.parquet: per-sample test scores of the val-selected layers. With
    ``every_layer`` (``probe.predictions: all``) every layer's are also written, one file per
    backbone and layer under ``predictions_all/`` (hive-partitioned: ``pd.read_parquet`` reads the
    folder as one table), so no single table of layers x plans x samples rows is ever built in memory."""
    selected = [outcome for outcome in outcomes if outcome.selected]
    write_parquet(folder / "predictions.parquet",
                  pd.concat([prediction_frame(dataset, test_ids, y_test, o) for o in selected], ignore_index=True))
    if not every_layer:
        return
    by_layer: dict[tuple[str, str], list[ProbeOutcome]] = {}
    for outcome in outcomes:
        by_layer.setdefault((outcome.backbone, outcome.layer), []).append(outcome)
    for (backbone, layer), members in by_layer.items():
        frame = pd.concat([prediction_frame(dataset, test_ids, y_test, o) for o in members],
                          ignore_index=True).drop(columns=["backbone", "layer"])
        path = (folder / ALL_PREDICTIONS / f"backbone={quote(backbone, safe='')}" / f"layer={quote(layer, safe='')}"
                / "part-0.parquet")
        write_parquet(path, frame)


def prediction_frame(dataset: Dataset, test_ids: list[str], y_test: np.ndarray, outcome: ProbeOutcome) -> pd.DataFrame:
    """One probe's test predictions: sample id, probe keys, true label(s) and a score per class."""
    frame = pd.DataFrame({"sample_id": test_ids})
    frame["backbone"], frame["layer"] = outcome.backbone, outcome.layer
    frame["train_fraction"], frame["seed"] = outcome.train_fraction, outcome.seed
    if dataset.task_type == "multilabel":
        for k, name in enumerate(dataset.classes):
            frame[f"true[{name}]"] = y_test[:, k]
    else:
        frame["y_true"] = y_test
    scores = np.asarray(outcome.test_scores)  # one read of spilled scores
    for k, name in enumerate(dataset.classes):
        frame[f"score[{name}]"] = scores[:, k]
    return frame


def versions() -> dict[str, str]:
    """Versions of medprobe, Python and the libraries that produce the numbers (those installed)."""
    found = {"medprobe": medprobe.__version__, "python": platform.python_version()}
    for package in ("numpy", "scikit-learn", "torch", "onnxruntime", "transformers", "safetensors"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def class_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    """Images per class (positives per finding for multi-label data) in each split."""
    counts = {}
    for split in ("train", "val", "test"):
        part = dataset.samples[dataset.samples["split"] == split]
        labels = dataset.labels(part)
        per_class = labels.sum(axis=0) if dataset.task_type == "multilabel" else np.bincount(
            labels, minlength=len(dataset.classes))
        counts[split] = {c: int(n) for c, n in zip(dataset.classes, per_class)}
    return counts


def run_record(config: RunConfig, results: RunResults, timings: dict[str, float]) -> dict[str, Any]:
    """run.json: what produced the numbers (data, backbones, settings, versions) and how it went."""
    dataset = results.dataset
    prompts = {b["prompt"] for b in results.backbones if b.get("prompt")}
    return {
        "name": config.name, "task": config.name, "task_type": dataset.task_type,
        "classes": dataset.classes, "task_metric": config.task_metric,
        "data": {"adapter": config.data.adapter, "root": str(dataset.root) if dataset.root else None,
                 "name": dataset.name, "description": dataset.description,
                 "n_samples": {s: int((dataset.samples["split"] == s).sum()) for s in ("train", "val", "test")},
                 "class_counts": class_counts(dataset)},
        "backbones": results.backbones,
        "prompt": "; ".join(sorted(prompts)) if prompts else None,
        "seed": config.seed, "n_bootstrap": config.stats.n_bootstrap,
        "probe": config.probe.model_dump(), "versions": versions(),
        "skipped": results.skipped, "excluded": dataset.excluded,
        "started": results.started_at, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings": timings, "notes": config.notes,
        "label_efficiency": results.statistics.label_efficiency,
        "statistics": results.statistics.summary,
        # only when probe.protocols ran both protocols (stats/protocols.py)
        **({"protocol_comparison": results.statistics.protocols} if results.statistics.protocols else {}),
        "probe_warnings": results.probe_warnings,
        "command": " ".join(sys.argv),
        "config": config.model_dump(),
    }


__all__ = ["ALL_PREDICTIONS", "OUTPUT_FILES", "RUN_FOLDER_OWNED", "RunResults", "prediction_frame",
           "prepare_output_dir", "run_record", "write_outputs", "write_predictions"]
