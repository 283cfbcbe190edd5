"""Read a run's output folder into one object the figures and the HTML page share.

The report is rebuilt from files alone (``medprobe report RUN_DIR``), possibly long after the run
and by someone who never saw it, so every reader here checks what it loads and names the file
and the missing piece when something is wrong, instead of failing deep inside a plot.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from medprobe.errors import DataError

RESULT_COLUMNS = ("task", "backbone", "layer", "train_fraction", "seed", "metric", "value", "sd", "ci_low",
                  "ci_high", "n_test", "selected", "C", "val_score")
NUMERIC_RESULT_COLUMNS = ("train_fraction", "value", "sd", "ci_low", "ci_high", "n_test", "C", "val_score")


def read_json(path: Path) -> Any:
    """Parse one JSON file; a missing or damaged file is a DataError that names it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise DataError(f"{path} is missing; is {path.parent} the output folder of a finished run?") from error
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                        "the run may have been interrupted while writing it") from error


def _results_frame(rows: Any, path: Path) -> pd.DataFrame:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path} must hold a JSON list of result rows (objects)")
    if not rows:
        raise DataError(f"{path} holds no result rows; the run produced no probe results")
    frame = pd.DataFrame(rows)
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: result rows lack the field(s) {missing}")
    for column in NUMERIC_RESULT_COLUMNS:
        # JSON has no NaN in the strict sense: undefined values arrive as null; keep them as NaN.
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    # Rows are placed in tables and figures by these keys, so they must be well formed.
    bad = frame.index[frame["train_fraction"].isna() | ~frame["train_fraction"].between(0, 1, inclusive="right")
                      | ~frame["seed"].map(lambda v: isinstance(v, int) and not isinstance(v, bool))
                      | ~frame["selected"].map(lambda v: isinstance(v, bool))]
    if len(bad):
        row = rows[int(bad[0])]
        raise DataError(f"{path}: row {int(bad[0])} needs a train_fraction in (0, 1], an integer seed and a "
                        f"true/false 'selected' (got {row.get('train_fraction')!r}, {row.get('seed')!r}, "
                        f"{row.get('selected')!r})")
    frame["selected"] = frame["selected"].astype(bool)
    for column in ("backbone", "layer", "metric", "task"):
        frame[column] = frame[column].astype(str)
    return frame


@dataclass
class RunData:
    """Everything a run wrote, parsed once.

    ``predictions`` is read lazily because the Parquet file is the only large output and only
    the ROC figure needs it.
    """

    run_dir: Path
    run: dict[str, Any]
    results: pd.DataFrame
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    mcq: list[dict[str, Any]] = field(default_factory=list)
    mcq_cases: list[dict[str, str]] = field(default_factory=list)
    #: ``operating_points.json``'s rows (thresholds chosen on validation, test measures); empty
    #: for multi-class runs and runs made before medprobe wrote it
    operating_points: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------ run facts
    @property
    def task_metric(self) -> str:
        """The headline metric; a run.json without one falls back to AUC if the rows have it."""
        metric = self.run.get("task_metric")
        if metric:
            return str(metric)
        present = set(self.results["metric"])
        for candidate in ("auc", "f1_macro", "accuracy"):
            if candidate in present:
                return candidate
        return str(self.results["metric"].iloc[0])

    @property
    def classes(self) -> list[str]:
        """Class names from run.json, else from the per-class metric names in the rows."""
        classes = self.run.get("classes")
        if classes:
            return [str(c) for c in classes]
        names: list[str] = []
        for metric in self.results["metric"]:
            if metric.startswith("auc[") and metric.endswith("]") and metric[4:-1] not in names:
                names.append(metric[4:-1])
        return names

    @property
    def task_type(self) -> str:
        return str(self.run.get("task_type") or ("binary" if len(self.classes) == 2 else "multiclass"))

    @cached_property
    def backbones(self) -> list[str]:
        """Backbone labels in the order the run file lists them, then any others as they appear."""
        order: list[str] = []
        for spec in self.run.get("backbones") or []:
            if isinstance(spec, dict):
                label = str(spec.get("label") or spec.get("name") or "")
                if label and label in set(self.results["backbone"]) and label not in order:
                    order.append(label)
        for name in self.results["backbone"]:
            if name not in order:
                order.append(name)
        return order

    def layers(self, backbone: str) -> list[str]:
        """The layers of one backbone, in the order the rows list them (the network's order)."""
        return list(dict.fromkeys(self.results.loc[self.results["backbone"] == backbone, "layer"]))

    @cached_property
    def fractions(self) -> list[float]:
        return sorted(float(f) for f in self.results["train_fraction"].dropna().unique())

    @property
    def full_fraction(self) -> float:
        """The largest train fraction (normally 1.0): per-class, layer and ROC figures use it."""
        return self.fractions[-1]

    def selected(self, metric: str | None = None) -> pd.DataFrame:
        """Rows of the val-selected layers for ``metric`` (the task metric by default)."""
        metric = metric or self.task_metric
        rows = self.results
        return rows[rows["selected"] & (rows["metric"] == metric)]

    def reference_seed(self, backbone: str, fraction: float) -> int | None:
        """The seed whose fit represents this backbone at this fraction in single-fit figures.

        Full-data fits have one seed; when a fraction has several, the smallest is used and the
        figure says so, rather than mixing fits from different seeds in one panel.
        """
        rows = self.results[(self.results["backbone"] == backbone) & (self.results["train_fraction"] == fraction)]
        seeds = sorted(int(s) for s in rows["seed"].unique())
        return seeds[0] if seeds else None

    def selected_layer(self, backbone: str, fraction: float, seed: int) -> str | None:
        rows = self.results
        chosen = rows[(rows["backbone"] == backbone) & (rows["train_fraction"] == fraction) & (rows["seed"] == seed)
                      & rows["selected"]]
        return str(chosen["layer"].iloc[0]) if len(chosen) else None

    def reference_probes(self) -> list[tuple[str, str, int]]:
        """``(backbone, selected layer, seed)`` of the fit that represents each backbone in the
        single-fit figures and tables: the largest train fraction, its :meth:`reference_seed`."""
        fraction = self.full_fraction
        probes = []
        for backbone in self.backbones:
            seed = self.reference_seed(backbone, fraction)
            layer = self.selected_layer(backbone, fraction, seed) if seed is not None else None
            if layer is not None:
                probes.append((backbone, layer, seed))
        return probes

    # ------------------------------------------------------------ predictions
    @cached_property
    def predictions(self) -> pd.DataFrame | None:
        """``predictions.parquet`` or None when the run has none; a damaged file is a DataError."""
        path = self.run_dir / "predictions.parquet"
        return read_predictions(path) if path.is_file() else None


def read_predictions(path: Path) -> pd.DataFrame:
    """A run's ``predictions.parquet``, checked for the columns every reader keys on; a damaged file
    or a missing column is a DataError naming the file (the report and ``medprobe compare`` read it)."""
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several unrelated types for damaged files
        raise DataError(f"cannot read {path} ({type(error).__name__}: {error})") from None
    missing = [c for c in ("sample_id", "backbone", "layer", "train_fraction", "seed") if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing}")
    return frame


def group_metrics(run: RunData) -> dict[str, str]:
    """Group name -> metric name of the task metric per group (``<metric>@<group>``), in row order."""
    prefix = f"{run.task_metric}@"
    names = dict.fromkeys(m for m in run.results["metric"] if m.startswith(prefix))
    return {m[len(prefix):]: m for m in names}


def selection_metric(run: RunData) -> str:
    """The validation metric layers and Cs were chosen by (``probe.selection_metric``)."""
    probe = run.run.get("probe") or {}
    return str(probe.get("selection_metric") or "auc") if isinstance(probe, dict) else "auc"


def _read_mcq(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The optional multiple-choice outputs: one summary object (or a list of them) and the cases CSV."""
    summaries: list[dict[str, Any]] = []
    path = run_dir / "mcq_results.json"
    if path.is_file():
        value = read_json(path)
        items = value if isinstance(value, list) else [value]
        summaries = [item for item in items if isinstance(item, dict)]
        if not summaries:
            raise DataError(f"{path} must hold an object (or a list of objects) with MCQ results")
    cases: list[dict[str, str]] = []
    csv_path = run_dir / "mcq_cases.csv"
    if csv_path.is_file():
        try:
            with csv_path.open(newline="", encoding="utf-8") as handle:
                cases = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"cannot read {csv_path}: {error}") from error
    return summaries, cases


def load_run(run_dir: str | Path) -> RunData:
    """Read ``results.json`` and ``run.json`` (required) and the optional outputs of a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist")
    results_path = run_dir / "results.json"
    results = _results_frame(read_json(results_path), results_path)
    run = read_json(run_dir / "run.json")
    if not isinstance(run, dict):
        raise DataError(f"{run_dir / 'run.json'} must hold a JSON object describing the run")
    comparisons: list[dict[str, Any]] = []
    if (run_dir / "comparisons.json").is_file():
        value = read_json(run_dir / "comparisons.json")
        if not isinstance(value, list):
            raise DataError(f"{run_dir / 'comparisons.json'} must hold a JSON list of comparisons")
        comparisons = [c for c in value if isinstance(c, dict)]
    mcq, mcq_cases = _read_mcq(run_dir)
    operating_points = read_json(run_dir / "operating_points.json") if (run_dir / "operating_points.json").is_file() \
        else {}
    rows = operating_points.get("rows") if isinstance(operating_points, dict) else None
    return RunData(run_dir, run, results, comparisons, mcq, mcq_cases,
                   [row for row in rows or [] if isinstance(row, dict)])


def as_float(value: Any) -> float | None:
    """A finite float, or None for missing/NaN/non-numeric values (so formatting can say 'n/a')."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
