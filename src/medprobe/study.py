"""``medprobe study``: run several run files in order, then compare their run folders.

A study is hours to days of runs (``configs/paper/`` is the study's whole grid), so it must
survive being stopped: a run whose output folder already holds a finished run *of the same run
file* is not redone, and a run that was killed resumes from the feature cache and the run
folder's staging mechanism (:mod:`medprobe.outputs`). A failing run stops the study with its
error, or, with ``keep_going``, is listed and the others go on; the comparison then covers the
runs that finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medprobe.compare import compare_runs, load_run
from medprobe.config import RunConfig, load_config
from medprobe.errors import ConfigError, MedprobeError
from medprobe.progress import console
from medprobe.run_checks import check_options


@dataclass
class StudyOutcome:
    """What a study did with each run file, and where the comparison is."""

    finished: list[Path] = field(default_factory=list)
    reused: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    report: Path | None = None


def run_files(sources: list[str | Path]) -> list[Path]:
    """Run files in the order given; a folder stands for its ``*.yaml`` / ``*.yml`` files, sorted."""
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise ConfigError(f"{source}: no run files (*.yaml) in this folder")
            files.extend(found)
        elif source.is_file():
            files.append(source)
        else:
            raise ConfigError(f"{source}: no such run file or folder")
    if not files:
        raise ConfigError("study needs at least one run file or a folder of run files")
    return files


def plan_runs(files: list[Path], runs_dir: Path | None) -> list[tuple[Path, RunConfig, Path]]:
    """Read and check every run file before anything runs; two runs writing one folder are an error."""
    planned = []
    folders: dict[Path, Path] = {}
    for file in files:
        config = load_config(file)
        check_options(config)
        out = runs_dir / config.name if runs_dir is not None else Path(config.output_dir)
        other = folders.setdefault(out.resolve(), file)
        if other != file:
            raise ConfigError(f"{file} and {other} would both write {out}; give them different names or output_dir")
        planned.append((file, config, out))
    return planned


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def already_done(config: RunConfig, out: Path, file: Path) -> bool:
    """True when ``out`` holds a finished run of this very run file (its recorded config equal);
    a finished run of another config there is an error, so no result is silently replaced."""
    if not (out / "run.json").is_file():
        return False
    try:
        finished = load_run(out)
    except MedprobeError:
        return False  # not a finished run: the run below recovers or refuses the folder itself
    if finished.summary.get("config") == _as_json(config.model_dump()):
        return True
    raise ConfigError(f"{out} holds a finished run of another configuration than {file}; pass --overwrite to "
                      "replace it, or choose another --runs-dir")


def run_one(file: Path, config: RunConfig, out: Path, *, overwrite: bool, show_progress: bool) -> bool:
    """Run one file unless its folder already holds its finished run; True when it ran."""
    from medprobe.experiment import run_experiment

    if not overwrite and already_done(config, out, file):
        return False
    run_experiment(config, out, overwrite=overwrite, show_progress=show_progress)
    return True


def run_study(sources: list[str | Path], out: str | Path, *, runs_dir: str | Path | None = None,
              keep_going: bool = False, overwrite: bool = False, show_progress: bool = True,
              fraction: float = 1.0, reference: str | None = None) -> StudyOutcome:
    """Run every run file in order (resuming), then :func:`~medprobe.compare.compare_runs` them into ``out``."""
    planned = plan_runs(run_files(sources), Path(runs_dir) if runs_dir is not None else None)
    outcome = StudyOutcome()
    started = time.perf_counter()
    for number, (file, config, folder) in enumerate(planned, start=1):
        console.print(f"[bold]study {number}/{len(planned)}[/]: {config.name} ({file}) -> {folder}", highlight=False)
        try:
            ran = run_one(file, config, folder, overwrite=overwrite, show_progress=show_progress)
        except Exception as error:  # noqa: BLE001 -- with keep_going every failure is listed, bug or not
            if not keep_going:
                if isinstance(error, MedprobeError):
                    raise type(error)(f"study run {file}: {error}") from error
                raise
            outcome.failed.append((file, f"{type(error).__name__}: {error}"))
            console.print(f"[red]study {number}/{len(planned)}: {config.name} failed[/]: {error}", highlight=False)
            continue
        (outcome.finished if ran else outcome.reused).append(folder)
        state = "done" if ran else "already finished, not redone"
        console.print(f"study {number}/{len(planned)}: {config.name} {state} "
                      f"({time.perf_counter() - started:.0f} s since the study started)", highlight=False)
    folders = [folder for _, _, folder in planned if folder in outcome.finished or folder in outcome.reused]
    if folders:
        outcome.report = compare_runs(folders, out, fraction=fraction, reference=reference, overwrite=True)
    return outcome


__all__ = ["run_study", "run_files", "StudyOutcome"]
