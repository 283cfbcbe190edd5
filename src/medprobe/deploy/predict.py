"""``medprobe predict``: a saved probe on new images, one row per image.

Inputs are image files, folders (every image file below them), manifest tables (CSV / TSV /
Parquet with the ``manifest`` adapter's ``path`` column, relative to the table's folder, and
optional ``sample_id`` / ``label`` / ``patient_id`` columns carried into the output), or a split of
a run file's data (``data=RUN.yaml``, ``split="test"``). For the latter the feature cache is
reused when it holds the probe's layer for these samples under the same fingerprint (then the
scores are the run's own, bit for bit); loose files are always extracted, since a path says
nothing about the content behind it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from medprobe.config import load_config
from medprobe.data.dataset import SPLITS, Dataset
from medprobe.data.images import looks_like_image, preprocess, read_image
from medprobe.deploy.loaded import DEFAULT_OPERATING_POINT, LoadedProbe
from medprobe.errors import ConfigError, DataError
from medprobe.features.extract import existing_cache
from medprobe.io import atomic_write_bytes
from medprobe.stages.data import load_data

MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
#: columns of a manifest (or of a run file's sample table) carried into the predictions
CARRIED_COLUMNS = ("label", "patient_id", "group")


@dataclass
class PredictInputs:
    """The images to classify: an id, a source and a loader (returns the preprocessed image) each."""

    sample_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    loaders: list[Callable[[], np.ndarray]] = field(default_factory=list)
    #: extra output columns (manifest labels, patients, the run's true labels)
    columns: dict[str, list[Any]] = field(default_factory=dict)
    #: the run file's data set and feature-cache root, when the images are one of its splits
    dataset: Dataset | None = None
    cache_root: Path | None = None

    def add(self, sample_id: str, source: str, loader: Callable[[], np.ndarray], **columns: Any) -> None:
        self.sample_ids.append(sample_id)
        self.sources.append(source)
        self.loaders.append(loader)
        for name in set(columns) | set(self.columns):
            self.columns.setdefault(name, [None] * (len(self.sample_ids) - 1)).append(columns.get(name))


def file_inputs(items: Sequence[str | Path], max_size: int) -> PredictInputs:
    """Image files, folders and manifest tables, in the order given (a folder's files sorted)."""
    inputs = PredictInputs()

    def add_file(path: Path, sample_id: str | None = None, **columns: Any) -> None:
        inputs.add(sample_id or str(path), str(path), lambda: preprocess(read_image(path), max_size), **columns)

    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and looks_like_image(p))
            if not found:
                raise DataError(f"folder {path} holds no image files")
            for image in found:
                add_file(image)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            for row in manifest_rows(path):
                add_file(row.pop("path"), row.pop("sample_id", None), **row)
        else:
            add_file(path)  # a missing file follows on_error like any unreadable image
    if not inputs.sample_ids:
        raise DataError("no images given")
    return inputs


def manifest_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a manifest table: ``path`` (or ``image``) resolved against the table's folder, and the
    optional id / label / patient columns."""
    try:
        table = (pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq")
                 else pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                                  keep_default_na=False))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read manifest {path}: {error}") from error
    column = next((name for name in ("path", "image") if name in table.columns), None)
    if column is None:
        raise DataError(f"manifest {path} has no 'path' (or 'image') column; columns: {list(table.columns)}")
    rows = []
    for _, row in table.iterrows():
        image = Path(str(row[column]))
        entry: dict[str, Any] = {"path": image if image.is_absolute() else path.parent / image}
        if "sample_id" in table.columns:
            entry["sample_id"] = str(row["sample_id"])
        entry.update({name: row[name] for name in CARRIED_COLUMNS if name in table.columns})
        rows.append(entry)
    return rows


def run_file_inputs(run_file: str | Path, split: str) -> PredictInputs:
    """One split of a run file's data, read as the run read it (same adapter, same preprocessing)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    config = load_config(run_file)
    dataset = load_data(config.data, val_fraction=config.probe.val_fraction, seed=config.seed)
    inputs = PredictInputs(dataset=dataset, cache_root=config.resolved_cache_dir())
    rows = dataset.split(split)
    labels = dataset.labels(rows)
    for (_, row), label in zip(rows.iterrows(), labels):
        true = ("; ".join(dataset.classes[k] for k in np.flatnonzero(label)) if dataset.task_type == "multilabel"
                else dataset.classes[int(label)])
        inputs.add(str(row["sample_id"]), str(row["source"]), lambda row=row: dataset.read_image(row), label=true)
    return inputs


def cached_features(probe: LoadedProbe, inputs: PredictInputs) -> tuple[np.ndarray, list[int]] | None:
    """The probe's layer for these samples from the run's feature cache, if it holds them under the
    probe's fingerprint (checked by :meth:`LoadedProbe.build_backbone` first); else None."""
    if inputs.dataset is None or inputs.cache_root is None:
        return None
    cache = existing_cache(probe.backbone, inputs.dataset, inputs.cache_root, probe.record["feature_dtype"])
    if cache is None or not cache.is_complete(probe.layer):
        return None
    wanted = {sample_id: position for position, sample_id in enumerate(inputs.sample_ids)}
    found: dict[int, np.ndarray] = {}
    for info, block in cache.iter_chunks(probe.layer):
        for row, sample_id in enumerate(info["sample_ids"]):
            if sample_id in wanted:
                found[wanted[sample_id]] = block[row]
    kept = sorted(found)
    if not kept:
        return None
    return np.stack([found[position] for position in kept]).astype(np.float32), kept


def prediction_table(probe: LoadedProbe, inputs: PredictInputs, kept: Sequence[int], probabilities: np.ndarray,
                     operating_point: str | float | None) -> pd.DataFrame:
    """One row per image read: ids, carried columns, the probe, a score per class, the most probable
    class and the decision at ``operating_point``, and any accepted fingerprint difference."""
    kept = list(kept)
    record, classes = probe.record, [str(c) for c in probe.classes_]
    frame = pd.DataFrame({"sample_id": [inputs.sample_ids[i] for i in kept],
                          "source": [inputs.sources[i] for i in kept]})
    for name, values in inputs.columns.items():
        frame[name] = [values[i] for i in kept]
    frame["backbone"], frame["layer"] = record["backbone_row"], record["layer"]
    frame["train_fraction"], frame["seed"] = record["train_fraction"], record["seed"]
    for k, name in enumerate(classes):
        frame[f"score[{name}]"] = probabilities[:, k]
    if probe.task_type == "multilabel":
        frame["predicted"] = ["; ".join(c for c, p in zip(classes, row) if p > 0.5) for row in probabilities]
    else:
        frame["predicted"] = probe.decide(probabilities)
    if operating_point is not None:
        limits, decisions = probe.thresholds(operating_point), probe.decide(probabilities, operating_point)
        frame["operating_point"] = str(operating_point)
        if probe.task_type == "binary":
            frame["threshold"], frame["decision"] = limits[0], decisions
        else:
            for k, name in enumerate(classes):
                frame[f"threshold[{name}]"], frame[f"decision[{name}]"] = limits[k], decisions[:, k]
    frame["fingerprint_mismatch"] = "; ".join(probe.mismatches)
    return frame


def predict_images(probe: LoadedProbe, inputs: PredictInputs, *, operating_point: str | float | None = "default",
                   on_error: str = "raise", show_progress: bool = True) -> tuple[pd.DataFrame, list[dict]]:
    """The prediction table of ``inputs`` and the images skipped as unreadable (``on_error="skip"``).
    ``operating_point="default"``: Youden's threshold where the task has operating points."""
    if operating_point == "default":
        operating_point = DEFAULT_OPERATING_POINT if probe.task_type != "multiclass" and probe.operating_points \
            else None
    probe.thresholds(operating_point)  # a bad --threshold stops before any image is read
    probe.build_backbone(inputs.dataset.preprocessing if inputs.dataset is not None else None)
    cached = cached_features(probe, inputs)
    skipped: list[dict] = []
    if cached is not None:
        features, kept = cached
        absent = sorted(set(range(len(inputs.sample_ids))) - set(kept))
        if absent:  # images the run could not read either
            extra, more, skipped = probe.extract([inputs.loaders[i] for i in absent],
                                                 names=[inputs.sample_ids[i] for i in absent], on_error=on_error,
                                                 show_progress=show_progress)
            features, kept = np.concatenate([features, extra]), kept + [absent[i] for i in more]
    else:
        features, kept, skipped = probe.extract(inputs.loaders, names=inputs.sample_ids, on_error=on_error,
                                                show_progress=show_progress)
    order = np.argsort(kept, kind="stable")
    kept = [kept[i] for i in order]
    probabilities = probe.probe.predict_proba(features[order])
    return prediction_table(probe, inputs, kept, probabilities, operating_point), skipped


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """CSV, TSV or Parquet by the file's suffix, written atomically."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(path, buffer.getvalue())
    elif suffix in (".csv", ".tsv"):
        atomic_write_bytes(path, frame.to_csv(index=False, sep="\t" if suffix == ".tsv" else ",").encode())
    else:
        raise ConfigError(f"output {path}: give a .csv, .tsv or .parquet file name")




def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` backbone options from the command line, values read as YAML (``3`` is a number)."""
    import yaml

    options = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ConfigError(f"--option {pair!r}: write KEY=VALUE, e.g. --option path=/models/vit.onnx")
        options[key] = yaml.safe_load(value)
    return options


def predict_command(run_dir: Path, images: Sequence[str], *, data: Path | None, split: str, out: Path,
                    overwrite: bool, threshold: str | None, on_error: str, show_progress: bool,
                    **choice: Any) -> tuple[pd.DataFrame, list[dict], LoadedProbe]:
    """What ``medprobe predict`` does: pick and load the probe (``choice``: backbone, fraction, seed,
    layer, backbone_options, allow_mismatch), read the inputs, predict and write ``out``."""
    from medprobe.deploy.loaded import load_probe

    if bool(images) == bool(data):
        raise ConfigError("give images (files, folders or manifests) or --data RUN.yaml, not both or neither")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite or choose another --out")
    if out.suffix.lower() not in (".csv", ".tsv", ".parquet", ".pq"):
        raise ConfigError(f"--out {out}: give a .csv, .tsv or .parquet file name")
    probe = load_probe(run_dir, **choice)
    try:
        inputs = run_file_inputs(data, split) if data else file_inputs(images, probe.max_image_size)
        frame, skipped = predict_images(probe, inputs, operating_point="default" if threshold is None else threshold,
                                        on_error=on_error, show_progress=show_progress)
    finally:
        probe.close()
    write_table(out, frame)
    return frame, skipped, probe


__all__ = ["PredictInputs", "cached_features", "file_inputs", "manifest_rows", "parse_options", "predict_command",
           "predict_images", "prediction_table", "run_file_inputs", "write_table"]
