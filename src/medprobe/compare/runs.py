"""Finished run folders as ``medprobe compare`` reads them, checked before any number is used.

A comparison mixes folders written at different times, maybe by different medprobe versions and
by different people, so every folder is checked up front (finished, readable, written by a
medprobe whose outputs this one understands) and every problem is an error naming the folder.
Runs are grouped into *tasks* by what they were run on (the study's task id for the paper
adapters, else the data set's name), never by the run's own name, so the demo and two more
PneumoniaMNIST runs land in one task row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

import medprobe
from medprobe.data.paper import PAPER_TASKS
from medprobe.errors import ConfigError, DataError
from medprobe.report.load import read_json, read_predictions

#: the files a run folder must hold to be compared (report.html and figures are not read)
RUN_FILES = ("run.json", "results.json", "comparisons.json", "predictions.parquet")
#: the first medprobe version whose run folders hold every field compare reads
OLDEST_READABLE = (0, 1, 0)
#: marks a run folder's staging copy (see :mod:`medprobe.outputs`); never a finished run
STAGING_TAG = ".medprobe-incomplete-"
#: discipline of a run whose data adapter is not one of the study's tasks
OTHER_DISCIPLINE = "other"
_PAPER_BY_ADAPTER = {task.adapter_name: task for task in PAPER_TASKS.values()}


def parse_version(text: Any) -> tuple[int, int, int] | None:
    """``"0.1.0"`` -> ``(0, 1, 0)``; pre-release tails (``0.2.0rc1``) are ignored; None if unreadable."""
    match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text)) if text is not None else None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)) if match else None


def check_version(written_by: Any, folder: Path) -> str:
    """Refuse run folders this medprobe cannot read: older than :data:`OLDEST_READABLE`, or from
    a newer minor (0.x) / major release, whose outputs may hold fields with other meanings."""
    ours = parse_version(medprobe.__version__)
    theirs = parse_version(written_by)
    if theirs is None:
        raise DataError(f"{folder}: run.json does not say which medprobe version wrote it (versions.medprobe); "
                        "it is not a run folder this medprobe can compare")
    newer = theirs[:2] > ours[:2] if ours[0] == 0 else theirs[0] > ours[0]
    if theirs < OLDEST_READABLE or newer or theirs[0] != ours[0]:
        raise DataError(f"{folder}: written by medprobe {written_by}, which this medprobe {medprobe.__version__} "
                        f"cannot compare (readable: {'.'.join(map(str, OLDEST_READABLE))} up to "
                        f"{ours[0]}.{ours[1]}.x); rerun it with this version")
    return str(written_by)


@dataclass
class RunFolder:
    """One finished run: its files, its task and where it came from."""

    path: Path
    summary: dict[str, Any]
    results: list[dict[str, Any]]
    #: sha256 of run.json's bytes (first 16 hex digits): which run a number came from
    fingerprint: str
    version: str
    task: str
    task_title: str
    discipline: str
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.summary["name"])

    @property
    def task_type(self) -> str:
        return str(self.summary["task_type"])

    @property
    def task_metric(self) -> str:
        return str(self.summary["task_metric"])

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.summary["classes"]]

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", 0))

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """predictions.parquet (read on first use: only paired tests need it)."""
        return read_predictions(self.path / "predictions.parquet")

    def settings(self) -> dict[str, Any]:
        """The statistics settings that make two runs' CIs and tests comparable."""
        statistics = self.summary.get("statistics") or {}
        probe = self.summary.get("probe") or {}
        return {"bootstrap_unit": statistics.get("bootstrap_unit"),
                "n_bootstrap": self.summary.get("n_bootstrap", statistics.get("n_bootstrap")),
                "seed": self.seed, "Cs": [float(c) for c in probe.get("Cs") or []]}

    def backbone_info(self, label: str) -> dict[str, Any]:
        """run.json's entry for a result row's backbone (``"x (vision)"`` rows belong to ``x``)."""
        for info in self.summary.get("backbones") or []:
            if label in (info.get("label"), f"{info.get('label')} (vision)"):
                return info
        return {}


def task_of(summary: dict[str, Any]) -> tuple[str, str, str]:
    """``(task key, title, discipline)`` of a run: the study's task for a paper adapter (its
    discipline from :data:`~medprobe.data.paper.PAPER_TASKS`), else the data set's name and
    ``"other"`` (run.json has no discipline field of its own)."""
    data = summary.get("data") or {}
    paper = _PAPER_BY_ADAPTER.get(str(data.get("adapter")))
    if paper is not None:
        return paper.task_id, paper.title, paper.discipline
    name = str(data.get("name") or summary.get("name"))
    return name, name, OTHER_DISCIPLINE


def load_run(path: str | Path) -> RunFolder:
    """Read and check one run folder; every problem is a :class:`DataError` naming the folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (compare takes the output folders of finished runs)")
    if STAGING_TAG in folder.name:
        raise DataError(f"{folder}: the staging folder of a run that did not finish; rerun the run file and "
                        "compare its output folder")
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: not a finished medprobe run (missing {', '.join(missing)})")
    raw = (folder / "run.json").read_bytes()
    summary = read_json(folder / "run.json")
    if not isinstance(summary, dict) or not summary.get("finished"):
        raise DataError(f"{folder}: run.json does not record a finished run")
    version = check_version((summary.get("versions") or {}).get("medprobe"), folder)
    lacking = [k for k in ("name", "task_type", "task_metric", "classes", "data") if k not in summary]
    if lacking:
        raise DataError(f"{folder}: run.json lacks {lacking}")
    results = read_json(folder / "results.json")
    if not isinstance(results, list) or not results:
        raise DataError(f"{folder}: results.json holds no result rows")
    task, title, discipline = task_of(summary)
    return RunFolder(folder, summary, results, hashlib.sha256(raw).hexdigest()[:16], version, task, title,
                     discipline)


def load_runs(paths: list[str | Path]) -> list[RunFolder]:
    """Load every folder, then check them together: distinct run names, and one task type,
    class list and headline metric per task."""
    if not paths:
        raise ConfigError("compare needs at least one run folder")
    runs = [load_run(path) for path in paths]
    by_name: dict[str, RunFolder] = {}
    for run in runs:
        if run.name in by_name:
            raise ConfigError(f"two run folders hold runs named {run.name!r}: {by_name[run.name].path} and "
                              f"{run.path}; give each run file its own name")
        by_name[run.name] = run
    first: dict[str, RunFolder] = {}
    for run in runs:
        seen = first.setdefault(run.task, run)
        for what, ours, theirs in (("task type", run.task_type, seen.task_type),
                                   ("classes", run.classes, seen.classes),
                                   ("headline metric (task_metric)", run.task_metric, seen.task_metric)):
            if ours != theirs:
                raise DataError(f"{run.path}: task {run.task!r} mixes {what}s: {ours} here, {theirs} in {seen.path}; "
                                "runs of one task must share them to sit in one row")
    return runs


__all__ = ["RunFolder", "load_run", "load_runs", "task_of", "check_version", "RUN_FILES", "OTHER_DISCIPLINE"]
