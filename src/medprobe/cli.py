"""The command line: a thin layer over run files and the library.

Every command turns medprobe's own errors (bad input, bad config, missing model, ...) into one
clear red message and exit code 2, never a bare traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from importlib.resources import files
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.table import Table

from medprobe.errors import MedprobeError
from medprobe.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Probe what (multimodal) models see in medical images.")


def friendly_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MedprobeError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; the feature cache keeps every finished chunk, rerun to resume[/]")
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except Exception as error:  # a bug or an environment problem: still one clear message
            if os.environ.get("MEDPROBE_DEBUG"):
                raise
            console.print(f"[bold red]unexpected error:[/] {type(error).__name__}: {error}\n"
                          "Set MEDPROBE_DEBUG=1 to see the traceback, and please report it.",
                          highlight=False)
            raise typer.Exit(1)
    return wrapper


def _load(run_file: Path, out: Optional[Path]):
    from medprobe.config import load_config

    config = load_config(run_file)
    return config, out or Path(config.output_dir)


@app.command()
@friendly_errors
def run(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: the run file's output_dir)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace results already in the output folder"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Run an experiment end to end: extract (cached), probe, statistics, report."""
    from medprobe.experiment import run_experiment

    config, out = _load(run_file, out)
    report = run_experiment(config, out, overwrite=overwrite, show_progress=not quiet)
    _print_summary(report.parent)


@app.command()
@friendly_errors
def extract(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    backbone: Optional[list[str]] = typer.Option(None, "--backbone", help="only these backbones (display names)"),
    engine: Optional[str] = typer.Option(None, "--engine", help="local or ray (default: the run file's)"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Fill the feature cache for a run file's backbones (resumes where a previous run stopped)."""
    from medprobe.experiment import Experiment

    config, _ = _load(run_file, None)
    if engine:
        from medprobe.config import parse_config

        data = config.model_dump()
        data["extraction"]["engine"] = engine  # validated like the run file itself
        config = parse_config(data, f"{run_file} (--engine)")
    experiment = Experiment(config, show_progress=not quiet)
    dataset = experiment.load_data()
    for spec in config.backbones:
        if backbone and spec.display_name not in backbone:
            continue
        cache, layers = experiment.extract(spec, dataset)
        console.print(f"[green]{spec.display_name}[/]: {len(layers)} layer(s) cached in {cache.path}")


@app.command()
@friendly_errors
def probe(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    out: Optional[Path] = typer.Option(None, "--out"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Probe, score and report from features already in the cache (never extracts)."""
    from medprobe.experiment import run_experiment

    config, out = _load(run_file, out)
    report = run_experiment(config, out, overwrite=overwrite, show_progress=not quiet, cached_only=True)
    _print_summary(report.parent)


@app.command()
@friendly_errors
def backbones() -> None:
    """List the registered backbones and their layers."""
    from medprobe.models.registry import list_backbones

    table = Table(title="medprobe backbones")
    for column in ("name", "family", "memory", "description"):
        table.add_column(column)
    for entry in list_backbones():
        table.add_row(entry.name, entry.family, entry.memory, entry.description)
    console.print(table)
    console.print("Layers of a backbone: [bold]medprobe layers NAME[/]")


@app.command()
@friendly_errors
def layers(name: str = typer.Argument(..., help="backbone name")) -> None:
    """List the layers of one backbone (builds it, so the model must be available)."""
    from medprobe.models.registry import create_backbone

    backbone = create_backbone(name)
    for index, layer in enumerate(backbone.layer_names()):
        console.print(f"{index:>4}  {layer}", highlight=False)


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output folder"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """PneumoniaMNIST (real chest X-rays) probed with raw pixels, a ViT-S and a VGG16."""
    import yaml

    from medprobe.config import parse_config
    from medprobe.experiment import run_experiment

    text = (files("medprobe") / "configs" / "demo.yaml").read_text()
    config = parse_config(yaml.safe_load(text), "medprobe/configs/demo.yaml")
    report = run_experiment(config, out, overwrite=overwrite, show_progress=not quiet)
    _print_summary(report.parent)


@app.command()
@friendly_errors
def mcq(
    run_file: Path = typer.Argument(..., help="YAML MCQ run file (see configs/mcq_example.yaml)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: the run file's output_dir)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Few-shot multiple-choice diagnosis (NEJM Image Challenge style) with a VLM."""
    import json

    from medprobe.mcq import run_mcq

    folder = run_mcq(run_file, out_dir=out, overwrite=overwrite, show_progress=not quiet)
    result = json.loads((folder / "mcq_results.json").read_text())
    console.print(f"{result['model']} ({result['method']}): accuracy {result['accuracy']:.3f} "
                  f"[{result['ci_low']:.3f}, {result['ci_high']:.3f}] on {result['n_cases']} cases; "
                  f"{result['n_unparseable']} unparseable")
    console.print(f"outputs: {folder}")


@app.command()
@friendly_errors
def bench(
    full: bool = typer.Option(False, "--full", help="the full sizes of benchmarks/README.md (minutes)"),
    only: Optional[list[str]] = typer.Option(None, "--only",
                                             help="bootstrap, probes, extraction and/or precision"),
) -> None:
    """Check this machine: baselines vs medprobe, side by side (small sizes by default). Every row
    names the baseline its ratio is measured against."""
    import importlib

    benchmarks = ("bootstrap", "probes", "extraction", "precision")
    names = only or list(benchmarks)
    table = Table(title="medprobe bench" + (" (full size)" if full else " (quick sizes)"))
    for column in ("benchmark", "baseline", "baseline result", "medprobe", "ratio", "agreement"):
        table.add_column(column)
    for name in names:
        if name not in benchmarks:
            raise typer.BadParameter(f"unknown benchmark {name!r}; choose from {', '.join(benchmarks)}")
        console.print(f"running {name} ...")
        result = importlib.import_module(f"medprobe.bench.{name}").run(quick=not full)
        if name == "extraction":
            table.add_row(result["name"], "study-style loop (batch 1, all hidden states)",
                          f"{result['study_images_per_s']:.1f} img/s", f"{result['medprobe_images_per_s']:.1f} img/s",
                          f"{result['ratio']:.1f}x", f"max |diff| {result['max_abs_diff_vs_study']:.1e}")
        elif name == "probes":
            table.add_row(result["name"], "scikit-learn LogisticRegression per C", f"{result['naive_s']:.2f} s",
                          f"{result['ours_s']:.2f} s", f"{result['ratio']:.1f}x",
                          f"AUC {result['auc_naive']:.4f} vs {result['auc_ours']:.4f}")
        elif name == "precision":
            for part, low in (("onnx", "int8"), ("torch", "bf16")):
                row = result[part]
                cosine = min(v["min_cosine"] for v in row["fidelity"].values())
                table.add_row(f"{part} {low} extraction", "the same backbone in fp32",
                              f"{row['fp32']['images_per_s']:.1f} img/s", f"{row[low]['images_per_s']:.1f} img/s",
                              f"{row[low]['images_per_s'] / row['fp32']['images_per_s']:.2f}x",
                              f"min cosine {cosine:.4f}")
        else:
            table.add_row(result["name"], "loop over sklearn roc_auc_score", f"{result['naive_s']:.2f} s",
                          f"{result['ours_s']:.3f} s", f"{result['ratio']:.1f}x", f"max |diff| {result['max_abs_diff']:.1e}")
            table.add_row(result["name"], "vectorised NumPy (sort once, draw counts)", f"{result['numpy_s']:.3f} s",
                          f"{result['ours_s']:.3f} s", f"{result['ratio_vs_numpy']:.2f}x",
                          f"max |diff| {result['max_abs_diff']:.1e}")
    console.print(table)


@app.command()
@friendly_errors
def report(run_dir: Path = typer.Argument(..., help="a run's output folder")) -> None:
    """Regenerate report.html (and figures) from a run's saved outputs."""
    from medprobe.report import build_report

    path = build_report(run_dir)
    console.print(f"report: {path}")


def _print_summary(run_dir: Path) -> None:
    import json

    rows = json.loads((run_dir / "results.json").read_text())
    summary = json.loads((run_dir / "run.json").read_text())
    metric = summary["task_metric"]
    table = Table(title=f"{summary['name']}: {metric} on test (95% bootstrap CI), layer chosen on validation")
    for column in ("backbone", "layer", "train fraction", "seed", metric, "95% CI", "n_test"):
        table.add_column(column)
    for row in rows:
        if row["selected"] and row["metric"] == metric:
            table.add_row(row["backbone"], row["layer"], f"{row['train_fraction']:g}", str(row["seed"]),
                          f"{row['value']:.3f}", f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]", str(row["n_test"]))
    console.print(table)
    console.print(f"results: {run_dir / 'results.json'}\nreport:  {run_dir / 'report.html'}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
