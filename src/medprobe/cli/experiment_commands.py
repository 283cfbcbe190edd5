"""Commands that run the stages: ``run``, ``extract``, ``probe``, ``demo``, ``init`` and ``report``."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Optional

import typer

from medprobe.cli.app import (
    ENGINE_HELP,
    WAIT_HELP,
    _load,
    _print_summary,
    app,
    friendly_errors,
)
from medprobe.console_output import out as stdout
from medprobe.progress import console


@app.command()
@friendly_errors
def run(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: the run file's output_dir)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace results already in the output folder"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    engine: Optional[str] = typer.Option(None, "--engine", metavar="local|ray", help=ENGINE_HELP),
    wait_for_lock: Optional[float] = typer.Option(None, "--wait-for-lock", metavar="SECONDS", min=0, help=WAIT_HELP),
) -> None:
    """Run an experiment end to end: extract (cached), probe, statistics, report."""
    config, out = _load(run_file, out, engine, wait_for_lock)
    from medprobe.experiment import run_experiment

    report = run_experiment(config, out, overwrite=overwrite, show_progress=not quiet)
    _print_summary(report.parent)


@app.command()
@friendly_errors
def extract(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    backbone: Optional[list[str]] = typer.Option(None, "--backbone", help="only these backbones (display names)"),
    engine: Optional[str] = typer.Option(None, "--engine", metavar="local|ray", help=ENGINE_HELP),
    wait_for_lock: Optional[float] = typer.Option(None, "--wait-for-lock", metavar="SECONDS", min=0, help=WAIT_HELP),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Fill the feature cache for a run file's backbones (resumes where a previous run stopped)."""
    config, _ = _load(run_file, None, engine, wait_for_lock)
    from medprobe.stages.data import load_data
    from medprobe.stages.extract import extract_backbone

    dataset = load_data(config.data, val_fraction=config.probe.val_fraction, seed=config.seed)
    for spec in config.backbones:
        if backbone and spec.display_name not in backbone:
            continue
        features = extract_backbone(spec, dataset, config.extraction, config.resolved_cache_dir(),
                                    on_error=config.data.on_error, show_progress=not quiet)
        console.print(f"[green]{spec.display_name}[/]: {len(features.layers)} layer(s) cached as "
                      f"{features.cache.dtype_name} in {features.cache.path}")


@app.command()
@friendly_errors
def probe(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    out: Optional[Path] = typer.Option(None, "--out"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Probe, score and report from features already in the cache (never extracts)."""
    config, out = _load(run_file, out)
    from medprobe.experiment import run_experiment

    report = run_experiment(config, out, overwrite=overwrite, show_progress=not quiet, cached_only=True)
    _print_summary(report.parent)


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output folder"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet"),
    offline: bool = typer.Option(False, "--offline", help="never download the data (as MEDPROBE_OFFLINE=1)"),
) -> None:
    """PneumoniaMNIST (real chest X-rays) probed with raw pixels, a ViT-S and a VGG16; the data file
    is downloaded (MD5 checked) into the data cache on first use."""
    import yaml

    from medprobe.config import parse_config
    from medprobe.data.download import OFFLINE_ENV
    from medprobe.experiment import run_experiment

    if offline:
        os.environ[OFFLINE_ENV] = "1"
    text = (files("medprobe") / "configs" / "demo.yaml").read_text()
    config = parse_config(yaml.safe_load(text), "medprobe/configs/demo.yaml")
    report = run_experiment(config, out, overwrite=overwrite, show_progress=not quiet)
    _print_summary(report.parent)


@app.command()
@friendly_errors
def report(run_dir: Path = typer.Argument(..., help="a run's output folder")) -> None:
    """Regenerate report.html (and figures) from a run's saved outputs, replacing both at once."""
    from medprobe.outputs import rebuild_report

    path = rebuild_report(run_dir)
    stdout.print(f"report: {path}", highlight=False)


@app.command()
@friendly_errors
def init(
    data: Path = typer.Argument(..., help="an image folder (one subfolder per class) or a CSV/TSV/Parquet manifest"),
    out: Optional[Path] = typer.Option(None, "--out", help="run file to write (default: ./<data name>.yaml)"),
    name: Optional[str] = typer.Option(None, "--name", help="run name (default: the image folder's name, or "
                                       "the folder holding the manifest)"),
) -> None:
    """Write a starter run file for your own data: classes, splits and patient column detected."""
    from medprobe.data.starter import write_starter

    starter = write_starter(data, out, name=name)
    stdout.print(starter.summary(), highlight=False, markup=False)
    stdout.print(f"wrote {starter.path}; check it, then: medprobe run {starter.path}", highlight=False)


