"""All-or-nothing run folders: a run killed (SIGKILL) anywhere while overwriting an older run leaves
the old complete outputs, or none plus a marked staging folder; never new numbers next to an old
report. The kills are real: a forked copy of this process runs the experiment and SIGKILLs itself
at a chosen point (fast and deterministic); a slow test also kills a real `medprobe run` at random
moments from outside."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medprobe.config import parse_config
from medprobe.errors import ConfigError
from medprobe.experiment import run_experiment
from medprobe.outputs import INCOMPLETE_MARKER, PREVIOUS_TAG, STAGING_TAG, recover
from medprobe.stages.outputs import OUTPUT_FILES, RUN_FOLDER_OWNED
from medprobe.report.html import fmt_ci

DETERMINISTIC = ("results.json", "comparisons.json", "predictions.parquet")


def _write_medmnist(path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in {"train": 60, "val": 30, "test": 40}.items():
        labels = rng.integers(0, 2, size=count)
        offset = rng.normal(0, 20, size=(count, 1, 1))  # per-image brightness: an imperfect signal
        images = np.clip(rng.random((count, 28, 28)) * 160 + labels[:, None, None] * 12 + offset, 0, 255)
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _config(root: Path, out: Path, n_bootstrap: int) -> dict:
    return {
        "name": "folder-run", "output_dir": str(out), "cache_dir": str(root / "cache"),
        "data": {"adapter": "medmnist", "root": str(root / "data"), "options": {"flag": "pneumoniamnist"}},
        "backbones": [{"name": "pixels", "options": {"size": 6}},
                      {"name": "pixels", "label": "px4", "options": {"size": 4}}],
        "probe": {"train_fractions": [1.0], "Cs": [0.1, 1.0]},
        "stats": {"n_bootstrap": n_bootstrap, "reference": "pixels"},
    }


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs with 20 and 40 bootstrap replicates, and the old run folder to overwrite."""
    root = tmp_path_factory.mktemp("runs")
    _write_medmnist(root / "data" / "medmnist" / "pneumoniamnist.npz")
    refs = {}
    for n in (20, 40):
        run_experiment(parse_config(_config(root, root / f"ref{n}", n)), show_progress=False)
        refs[n] = _files(root / f"ref{n}")
    rows = {n: json.loads(refs[n]["results.json"]) for n in refs}
    # a CI the report of each run shows and the other's does not: tells which run a report belongs to
    marks = {}
    for n, other in ((20, 40), (40, 20)):
        for mine, theirs in zip(rows[n], rows[other]):
            shown = fmt_ci(mine["ci_low"], mine["ci_high"])
            if mine["selected"] and shown != fmt_ci(theirs["ci_low"], theirs["ci_high"]):
                marks[n] = shown
                break
    assert set(marks) == {20, 40}
    return root, refs, marks


def _assert_whole_run(folder: Path, refs, marks) -> int:
    """Every output present and all from one run (the 20- or the 40-replicate one); returns which."""
    files = _files(folder)
    assert all(name in files for name in OUTPUT_FILES), sorted(files)
    n = json.loads(files["run.json"])["n_bootstrap"]
    for name in DETERMINISTIC:
        assert files[name] == refs[n][name], f"{name} is not from the run with n_bootstrap={n}"
    figures = {k: v for k, v in files.items() if k.startswith("figures/")}
    assert figures == {k: v for k, v in refs[n].items() if k.startswith("figures/")}, "figures from another run"
    report = files["report.html"].decode()
    assert marks[n] in report and marks[40 if n == 20 else 20] not in report, "report of another run"
    assert INCOMPLETE_MARKER not in files
    return n


def _old_run(root: Path, name: str) -> Path:
    out = root / name
    run_experiment(parse_config(_config(root, out, 20)), show_progress=False)
    (out / "notes.txt").write_text("my notes")  # a user's file: must survive whatever happens
    (out / "extra").mkdir()
    (out / "extra" / "a.csv").write_text("1,2\n")
    return out


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _inject(point: str) -> None:
    """Arrange for this (forked) process to SIGKILL itself at ``point`` of the overwrite run."""
    import medprobe.experiment as experiment_module
    import medprobe.outputs as outputs_module
    import medprobe.staging as staging_module
    import medprobe.stages.outputs as stage_outputs
    import medprobe.report.figures as figures_module

    if point == "probing":
        experiment_module.probe_protocols = lambda *args, **kwargs: _kill_self()
    elif point == "between_outputs":  # results.json and comparisons.json written, predictions not
        stage_outputs.write_predictions = lambda *args, **kwargs: _kill_self()
    elif point == "figures":
        original, calls = figures_module.write_figure, []

        def write_figure(fig, stem):
            calls.append(stem)
            if len(calls) == 2:
                _kill_self()
            return original(fig, stem)

        figures_module.write_figure = write_figure
    elif point == "report":
        original_write = outputs_module.atomic_write_bytes

        def write(path, data):
            if Path(path).name == "report.html":
                _kill_self()
            return original_write(path, data)

        outputs_module.atomic_write_bytes = write
    elif point in ("mid_swap", "after_swap"):
        original_rename, renames = os.rename, []

        def rename(src, dst):
            renames.append(dst)
            if point == "mid_swap" and len(renames) == 2:  # old moved aside, new not yet in place
                _kill_self()
            original_rename(src, dst)
            if point == "after_swap" and len(renames) == 2:  # new in place, your files not yet moved over
                _kill_self()

        staging_module.os.rename = rename
    else:
        raise AssertionError(point)


SERVER = """
import json, os, sys, traceback
from pathlib import Path
sys.path[:0] = {tests!r}
import test_run_folder as t
from medprobe.config import parse_config
from medprobe.experiment import run_experiment

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            t._inject(job["point"])
            run_experiment(parse_config(t._config(Path(job["root"]), Path(job["out"]), 40)), overwrite=True,
                           show_progress=False)
        except BaseException:
            traceback.print_exc()
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({{"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}}), flush=True)
"""


@pytest.fixture(scope="module")
def killer(tmp_path_factory):
    """A helper process that forks one child per killed run. It never computes anything itself, and
    runs with one thread per math library, so forking it is safe (a fork of a process whose OpenMP
    pool has run can deadlock)."""
    script = tmp_path_factory.mktemp("server") / "server.py"
    here = Path(__file__).resolve().parent  # this module, and conftest one folder up
    script.write_text(SERVER.format(tests=[str(here), str(here.parent)]))
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    server = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, **threads})

    def run_killed(root: Path, out: Path, point: str) -> int | None:
        """Overwrite ``out`` with the 40-replicate run, SIGKILLed at ``point``; returns the signal."""
        server.stdin.write(json.dumps({"root": str(root), "out": str(out), "point": point}) + "\n")
        server.stdin.flush()
        ready, _, _ = select.select([server.stdout], [], [], 300)
        assert ready, f"run killed at {point} hung"
        return json.loads(server.stdout.readline())["signal"]

    yield run_killed
    server.kill()
    server.wait()


def _siblings(out: Path, tag: str) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(out.name + tag)]


@pytest.mark.parametrize("point, survivor", [
    ("probing", 20), ("between_outputs", 20), ("figures", 20), ("report", 20), ("mid_swap", None),
    ("after_swap", 40),
])
def test_sigkill_during_overwrite_leaves_old_or_nothing_never_a_mix(references, killer, point, survivor):
    root, refs, marks = references
    out = _old_run(root, f"killed-{point}")
    assert killer(root, out, point) == signal.SIGKILL, f"not killed at {point}"
    staging = _siblings(out, STAGING_TAG)
    if survivor is None:
        # killed between the two renames: no folder at the target; beside it, the previous outputs and
        # the finished new ones, both whole, in folders whose names say what they are
        assert not out.exists()
        previous = _siblings(out, PREVIOUS_TAG)
        assert len(previous) == 1 and _assert_whole_run(previous[0], refs, marks) == 20
        assert len(staging) == 1 and _assert_whole_run(staging[0], refs, marks) == 40
    else:
        assert _assert_whole_run(out, refs, marks) == survivor
        if survivor == 20:  # the partial new outputs, marked as such
            assert len(staging) == 1 and (staging[0] / INCOMPLETE_MARKER).is_file()
            assert "NOT a result" in (staging[0] / INCOMPLETE_MARKER).read_text()
    # the next run for this folder cleans up: one whole run at the target, nothing beside it
    notes = recover(out, RUN_FOLDER_OWNED)
    assert notes
    final = _assert_whole_run(out, refs, marks)
    assert final == (survivor or 40)  # a finished run interrupted mid-swap is completed
    assert (out / "notes.txt").read_text() == "my notes" and (out / "extra" / "a.csv").read_text() == "1,2\n"
    assert not _siblings(out, STAGING_TAG) and not _siblings(out, PREVIOUS_TAG)


def test_overwrite_keeps_unknown_files_and_drops_old_medprobe_outputs(references):
    root, refs, marks = references
    out = _old_run(root, "overwritten")
    (out / "figures" / "stale_figure.png").write_bytes(b"from an older medprobe")  # figures/ is medprobe's
    run_experiment(parse_config(_config(root, out, 40)), overwrite=True, show_progress=False)
    assert _assert_whole_run(out, refs, marks) == 40
    assert (out / "notes.txt").read_text() == "my notes" and (out / "extra" / "a.csv").is_file()
    assert not (out / "figures" / "stale_figure.png").exists()
    assert not _siblings(out, STAGING_TAG) and not _siblings(out, PREVIOUS_TAG)
    assert str(out) in (out / "report.html").read_text()  # the report names the final folder, not the staging one
    assert STAGING_TAG not in (out / "report.html").read_text()


def test_failed_run_removes_its_staging_and_leaves_the_old_outputs(references, monkeypatch):
    root, refs, marks = references
    out = _old_run(root, "failed")
    before = _files(out)

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure while drawing figures")

    monkeypatch.setattr("medprobe.report.figures.write_figure", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        run_experiment(parse_config(_config(root, out, 40)), overwrite=True, show_progress=False)
    assert _files(out) == before
    assert not _siblings(out, STAGING_TAG) and not _siblings(out, PREVIOUS_TAG)


def test_a_second_run_for_the_same_folder_is_refused_while_one_is_writing(references):
    from medprobe.outputs import staged_run_folder

    root, _, _ = references
    out = root / "busy"
    with staged_run_folder(out, RUN_FOLDER_OWNED):
        with pytest.raises(ConfigError, match="another medprobe run is writing"):
            run_experiment(parse_config(_config(root, out, 20)), show_progress=False)
    assert not out.exists() or not any(out.iterdir())  # the staging folder held nothing yet


@pytest.mark.slow
def test_external_sigkill_of_medprobe_run_at_random_moments(references, tmp_path):
    """A real `medprobe run --overwrite` killed from outside at random moments (8 times)."""
    import random

    import yaml

    root, refs, marks = references
    out = _old_run(root, "random-kills")
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(_config(root, out, 40)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    rng = random.Random(7)
    seen = set()
    for _ in range(8):
        process = subprocess.Popen([sys.executable, "-m", "medprobe.cli", "run", str(run_file), "--overwrite",
                                    "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 12.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if out.exists():
            seen.add(_assert_whole_run(out, refs, marks))
        else:
            previous = _siblings(out, PREVIOUS_TAG)
            assert len(previous) == 1 and _assert_whole_run(previous[0], refs, marks)
        recover(out, RUN_FOLDER_OWNED)
        final = _assert_whole_run(out, refs, marks)
        assert (out / "notes.txt").read_text() == "my notes"
        if final == 40:  # the overwrite finished before the kill: start again from the old run
            out = _old_run(root, f"random-kills-{len(seen)}-{rng.random():.6f}")
            run_file.write_text(yaml.safe_dump(_config(root, out, 40)))


def test_symlinked_output_folder_stays_a_link_to_the_new_outputs(references, tmp_path):
    root, refs, marks = references
    real = _old_run(root, "real-target")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    report = run_experiment(parse_config(_config(root, link, 40)), overwrite=True, show_progress=False)
    assert report == link / "report.html"
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert _assert_whole_run(real, refs, marks) == 40 and (real / "notes.txt").is_file()


def test_overwriting_the_current_folder_keeps_the_process_in_it(references, monkeypatch):
    root, refs, marks = references
    out = _old_run(root, "cwd-run")
    monkeypatch.chdir(out)
    report = run_experiment(parse_config(_config(root, Path("."), 40)), overwrite=True, show_progress=False)
    assert Path(report).is_file() and Path("notes.txt").read_text() == "my notes"
    assert Path.cwd() == out.resolve() and _assert_whole_run(out, refs, marks) == 40
