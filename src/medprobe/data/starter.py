"""``medprobe init DATA``: a starter run file for your own images, written from what is found.

DATA is either a folder with one subfolder per class (optionally inside ``train``/``val``/``test``
folders) or a CSV/TSV/Parquet manifest with one row per image. The data are loaded with the very
adapter the run will use (:func:`load_image_folder` / :func:`load_manifest`), so the classes,
splits and patient column printed back are exactly what ``medprobe run`` will see, and the run file
is validated with :func:`medprobe.config.parse_config` before it is written. An existing file is
never replaced.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medprobe.config import ProbeConfig, parse_config
from medprobe.data.adapters import DEFAULT_TRAIN_VAL_TEST, SPLIT_ALIASES, load_image_folder, load_manifest
from medprobe.data.dataset import SPLITS, Dataset
from medprobe.data.splits import CARVED_VALIDATION_OPTION, carve_validation
from medprobe.errors import ConfigError, DataError
from medprobe.io import atomic_write_text

#: fewer validation images than this: say that the layer / C choice will be noisy
SMALL_VALIDATION = 30

MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
#: patient-id spellings recognised in a manifest, in order of preference
PATIENT_COLUMNS = ("patient_id", "patient", "group", "subject_id", "subject", "case_id")
LABEL_COLUMNS = ("label", "class", "diagnosis", "target")
PATH_COLUMNS = ("path", "image", "file", "filename", "image_path")


@dataclass
class Starter:
    """What ``medprobe init`` found and wrote."""

    path: Path
    adapter: str
    classes: list[str]
    task_type: str
    #: images per split and class, as the run will see them
    counts: dict[str, dict[str, int]]
    #: "folders", "column 'split'" or "carved 70/10/20 ..." -- where the splits come from
    split_source: str
    patient_column: str | None
    options: dict[str, Any] = field(default_factory=dict)
    #: the run-file option that sizes the validation split ("" when the data brings its own)
    validation_option: str = ""

    def summary(self) -> str:
        lines = [f"{self.adapter}: {len(self.classes)} classes ({self.task_type}): {', '.join(self.classes)}",
                 f"splits: {self.split_source}"]
        width = max(len(c) for c in self.classes)
        lines.append("  " + " " * width + "".join(f"{s:>8}" for s in SPLITS))
        for name in self.classes:
            lines.append(f"  {name:<{width}}" + "".join(f"{self.counts[s].get(name, 0):>8}" for s in SPLITS))
        lines.append(f"patient column: {self.patient_column}" if self.patient_column else
                     "patient column: none (each image is its own patient; if several images come from one "
                     "patient, use a manifest with a patient_id column so splits keep patients whole)")
        n_val = sum(self.counts["val"].values())
        if n_val < SMALL_VALIDATION:
            lines.append(f"warning: only {n_val} validation image(s): the layer and C chosen on them will be noisy; "
                         + (f"enlarge the split with {self.validation_option}" if self.validation_option else
                            "add images to the validation split"))
        return "\n".join(lines)


def _first(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _read_columns(path: Path) -> list[str]:
    import pandas as pd

    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    separator = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    return [str(c) for c in pd.read_csv(path, sep=separator, nrows=0).columns]


def _manifest_options(path: Path) -> tuple[dict[str, Any], str | None, bool]:
    """Adapter options for a manifest, its patient column, and whether it has a split column."""
    columns = _read_columns(path)
    options: dict[str, Any] = {"path": str(path)}
    path_column = _first(columns, PATH_COLUMNS)
    label_column = _first(columns, LABEL_COLUMNS)
    if path_column is None or label_column is None:
        missing = [role for role, found in (("image path", path_column), ("label", label_column)) if found is None]
        raise DataError(f"manifest {path}: no {' or '.join(missing)} column found among {columns}; expected "
                        f"one of {list(PATH_COLUMNS)} for paths and {list(LABEL_COLUMNS)} for labels")
    if path_column != "path":
        options["path_column"] = path_column
    if label_column != "label":
        options["label_column"] = label_column
    patient = _first(columns, PATIENT_COLUMNS)
    if patient is not None and patient not in ("patient_id", "group"):  # the adapter finds those itself
        options["group_column"] = patient
    split = _first(columns, ("split",))
    if split is not None and split != "split":
        options["split_column"] = split
    return options, patient, split is not None


def _counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    counts = {}
    for split in SPLITS:
        part = dataset.samples[dataset.samples["split"] == split]
        labels = dataset.labels(part)
        per_class = (labels.sum(axis=0) if dataset.task_type == "multilabel"
                     else np.bincount(labels, minlength=len(dataset.classes)))
        counts[split] = {c: int(n) for c, n in zip(dataset.classes, per_class)}
    return counts


def _count_lines(counts: dict[str, dict[str, int]], classes: list[str]) -> str:
    """The split sizes as YAML comments: what `medprobe run` will see, per split and class."""
    width = max(len(c) for c in classes)
    lines = ["# " + " " * (width + 2) + "".join(f"{s:>8}" for s in SPLITS)]
    lines += [f"#   {name:<{width}}" + "".join(f"{counts[s].get(name, 0):>8}" for s in SPLITS) for name in classes]
    lines.append(f"#   {'all':<{width}}" + "".join(f"{sum(counts[s].values()):>8}" for s in SPLITS))
    return "\n".join(lines) + "\n"


def _run_file(name: str, adapter: str, options: dict[str, Any], split_note: str, counts: dict[str, dict[str, int]],
              classes: list[str], output_dir: Path) -> str:
    """The starter as YAML text with comments; values go through json.dumps (valid YAML scalars).
    Label efficiency at 10 % and 100 % over three seeds, and an output folder beside the run file
    (an absolute path, so the run lands there wherever it is started from)."""
    option_lines = "".join(f"    {key}: {json.dumps(value)}"
                           + ("   # [train, val, test] shares; more val steadies the layer / C choice"
                              if key == "fractions" else "") + "\n" for key, value in options.items())
    return f"""# Starter run file written by `medprobe init`; edit freely, then: medprobe run <this file>
# Run-file format: README "The run file"; your own data: README "Your own data".
name: {json.dumps(name)}
output_dir: {json.dumps(str(output_dir))}
task_metric: auc
seed: 0

# images per split and class, as the run will see them (splits: {split_note}):
{_count_lines(counts, classes)}
data:
  adapter: {adapter}
  options:
{option_lines}  on_error: raise        # or `skip`: leave unreadable images out and list them

backbones:
  - name: pixels          # the no-model baseline; always available
  # - name: dinov2-s-onnx # a ViT-S (pip install 'medprobe[models]')
  #   layers: all
  # - name: idefics-9b    # a VLM (pip install 'medprobe[hf]'; ~18 GB)
  #   layers: "0:33:4"

probe:
  train_fractions: [0.1, 1.0]   # label efficiency: 10 % and all of the training labels
  seeds: [0, 1, 2]              # each fraction below 1 is drawn once per seed
"""


def _with_carved_validation(dataset: Dataset) -> Dataset:
    """The split the run will carve (probe.val_fraction of train, by patient, seed 0), so the
    counts written out are the ones `medprobe run` will see."""
    table = dataset.samples.copy()
    table["split"] = carve_validation(table["split"].to_numpy(), dataset.labels(table), table["group"].to_numpy(),
                                      fraction=ProbeConfig().val_fraction, seed=0)
    return dataclasses.replace(dataset, samples=table)


def write_starter(data: str | Path, out: str | Path | None = None, *, name: str | None = None) -> Starter:
    """Inspect ``data`` (a class-per-folder tree or a manifest file) and write a starter run file
    to ``out`` (default ``<name>.yaml`` in the working folder). Refuses to replace an existing file."""
    source = Path(data).expanduser()
    if not source.exists():
        raise DataError(f"{source} does not exist; give an image folder (one subfolder per class) or a manifest")
    source = source.resolve()
    # a manifest is usually called manifest.csv / labels.csv: the folder holding it names the study
    name = name or (source.name if source.is_dir() else source.parent.name or source.stem)
    if source.is_dir():
        adapter, options = "image_folder", {"root": str(source)}
        dataset = load_image_folder(source, name=name)
        patient = None
        has_splits = any(d.is_dir() and d.name.lower() in SPLIT_ALIASES for d in source.iterdir())
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        adapter = "manifest"
        options, patient, has_splits = _manifest_options(source)
        dataset = load_manifest(**{k: (Path(v) if k == "path" else v) for k, v in options.items()}, name=name)
    else:
        raise DataError(f"{source}: not a folder or a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    validation_option = dataset.validation_option
    if has_splits:
        split_note = "split folders" if adapter == "image_folder" else "the manifest's split column"
        if not dataset.has_split("val"):
            split_note += "; no val split, so probe.val_fraction of train is carved (grouped by patient)"
            dataset = _with_carved_validation(dataset)
            validation_option = CARVED_VALIDATION_OPTION
    else:
        options["fractions"] = list(DEFAULT_TRAIN_VAL_TEST)
        shares = "/".join(f"{round(f * 100)}" for f in DEFAULT_TRAIN_VAL_TEST)
        split_note = (f"none given: carved train/val/test {shares}% stratified by class, "
                      f"{'by patient' if patient else 'by image'}, seed 0")
    target = (Path(out).expanduser() if out is not None else Path(f"{name}.yaml")).absolute()
    if target.exists():
        raise ConfigError(f"{target} already exists; nothing was written (choose another --out or remove it)")
    counts = _counts(dataset)
    text = _run_file(name, adapter, options, split_note, counts, list(dataset.classes), target.parent / "runs" / name)
    parse_config(yaml.safe_load(text), f"starter for {source}")  # never write a file `run` would reject
    atomic_write_text(target, text)
    return Starter(target, adapter, list(dataset.classes), dataset.task_type, counts, split_note,
                   patient, options, validation_option)


__all__ = ["Starter", "write_starter"]
