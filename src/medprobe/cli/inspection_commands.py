"""Commands that look before running: ``backbones``, ``layers``, ``plan``, ``bench``, ``data``, ``cache``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medprobe.cli.app import (
    _load,
    app,
    friendly_errors,
)
from medprobe.console_output import FORMAT_HELP, print_data_summary, print_rows
from medprobe.console_output import out as stdout
from medprobe.progress import console


@app.command()
@friendly_errors
def backbones(fmt: str = typer.Option("table", "--format", help=FORMAT_HELP)) -> None:
    """List the registered backbones (on stdout: `medprobe backbones | grep clip`)."""
    from medprobe.models.registry import list_backbones

    print_rows("medprobe backbones", ("name", "family", "memory", "description"),
               [(e.name, e.family, e.memory, e.description) for e in list_backbones()], fmt)
    console.print("Layers of a backbone: [bold]medprobe layers NAME[/]")


@app.command()
@friendly_errors
def layers(
    name: Optional[str] = typer.Argument(None, help="backbone name (omit with --path or --run)"),
    path: Optional[Path] = typer.Option(None, "--path", help="a local checkpoint folder: its config.json is enough"),
    run_file: Optional[Path] = typer.Option(None, "--run", help="a run file: the layers each backbone requests"),
    fmt: str = typer.Option("table", "--format", help=FORMAT_HELP + "; tsv/json: one row per layer"),
) -> None:
    """List a backbone's layers (on stdout). Hugging Face models are built from config.json on the meta
    device (no weights, no tokenizer); other backbones are built, so their model must be present."""
    from medprobe.console_output import check_format, layer_rows
    from medprobe.plan import layer_listing

    check_format(fmt)
    if run_file is not None:
        from medprobe.config import load_config

        wanted = [(s.display_name, s.name, s.options, s.layers) for s in load_config(run_file).backbones]
    elif name is None and path is None:
        raise typer.BadParameter("give a backbone name, --path FOLDER or --run RUN.yaml")
    else:
        wanted = [(name or f"hf:{path}", name or f"hf:{path}", {"path": str(path)} if path is not None else {}, None)]
    if fmt != "table":
        rows = [(label, stack, layer) for label, backbone, options, layers in wanted
                for stack, layer in layer_rows(backbone, options, layers=layers)]
        print_rows("layers", ("backbone", "stack", "layer"), rows, fmt)
        return
    for label, backbone, options, layers in wanted:
        for line in layer_listing(backbone, options, layers=layers, label=label):
            stdout.print(line, highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def plan(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="plan for these GPUs instead of the visible ones, "
                                       "e.g. 4x48GB (the study's machine)"),
    cpu_memory: str = typer.Option("256GB", "--cpu-memory", help="CPU RAM assumed with --gpus"),
    images: Optional[int] = typer.Option(None, "--images", help="number of images (default: count the run's data)"),
) -> None:
    """What each backbone of a run needs: for Hugging Face models memory, placement, cache size and
    FLOPs from config.json alone (no weights are read); for the others layers, a timed image and the
    probe grid's size and time."""
    from medprobe.config import load_config
    from medprobe.plan import count_images, is_hf_backbone, parse_gpus, parse_size, plan_run
    from medprobe.plan.other import dataset_or_none, plan_other_backbone

    config = load_config(run_file)
    memory = {**parse_gpus(gpus), "cpu": parse_size(cpu_memory, where="--cpu-memory")} if gpus else None
    n_images = images if images is not None else count_images(config)
    for backbone_plan in plan_run(config, max_memory=memory, n_images=n_images):
        for line in backbone_plan.lines():
            stdout.print(line, highlight=False, soft_wrap=True)
    others = [spec for spec in config.backbones if not is_hf_backbone(spec.name)]
    if others:
        dataset = dataset_or_none(config)
        for spec in others:
            for line in plan_other_backbone(config, spec, dataset):
                stdout.print(line, highlight=False, soft_wrap=True)



@app.command()
@friendly_errors
def bench(
    full: bool = typer.Option(False, "--full", help="the full sizes of benchmarks/README.md (minutes)"),
    only: Optional[list[str]] = typer.Option(None, "--only",
                                             help="bootstrap, probes, extraction and/or precision"),
) -> None:
    """Check this machine: baselines vs medprobe, side by side (small sizes by default). Every row
    names the baseline its ratio is measured against."""
    from medprobe.bench import BENCHMARKS, prepare

    names = only or list(BENCHMARKS)
    console.print(prepare(names), highlight=False)  # every benchmark's inputs checked before any runs
    table = Table(title="medprobe bench" + (" (full size)" if full else " (quick sizes)"))
    for column in ("benchmark", "baseline", "baseline result", "medprobe", "ratio", "agreement"):
        table.add_column(column)
    for name in names:
        console.print(f"running {name} ...")
        benchmark = BENCHMARKS[name]
        for row in benchmark.rows(benchmark.run(quick=not full)):
            table.add_row(*row)
    stdout.print(table)


@app.command()
@friendly_errors
def data(
    run_file: Path = typer.Argument(..., help="YAML run file"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON, every excluded row listed"),
    check_files: Optional[bool] = typer.Option(
        None, "--check-files/--no-check-files", help="override the run file's data.check_files"),
    show_excluded: int = typer.Option(10, "--show-excluded", help="excluded rows to list (table view)"),
) -> None:
    """Summarise a run file's data without extracting: per split images, patients, positives per
    class, and every excluded row with its reason."""
    import json

    from medprobe.data.loaders import load_dataset
    from medprobe.data.summary import summarize_dataset

    config, _ = _load(run_file, None)
    data_config = config.data if check_files is None else config.data.model_copy(update={"check_files": check_files})
    summary = summarize_dataset(load_dataset(data_config))
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=1, default=str) + "\n")
        return
    print_data_summary(summary, show_excluded)


cache_app = typer.Typer(no_args_is_help=True, help="Check and clean the feature cache.")
app.add_typer(cache_app, name="cache")


def _default_cache_root() -> Path:
    from medprobe.config import RunConfig

    return RunConfig.model_construct(cache_dir=None).resolved_cache_dir()


@cache_app.command("verify")
@friendly_errors
def cache_verify(
    path: Optional[Path] = typer.Argument(None, help="a cache root or one entry (default: $MEDPROBE_CACHE_DIR "
                                                      "or ~/.cache/medprobe/features)"),
) -> None:
    """Read every feature chunk against its checksum; list the bad ones (exit 1 if any). Changes nothing."""
    from medprobe.features.maintenance import verify_cache

    report = verify_cache(path or _default_cache_root())
    for error in report.bad:
        stdout.print(f"[red]bad[/] {error.path}: {error.reason}", highlight=False, soft_wrap=True)
    for entry in report.other_format:
        stdout.print(f"[yellow]not checked[/] {entry}: another cache format, never read by this medprobe "
                      "(`medprobe cache gc` removes it)", highlight=False, soft_wrap=True)
    for chunk in report.quarantined:
        stdout.print(f"[yellow]moved aside[/] {chunk}: failed a read; the next extraction recomputes it",
                      highlight=False, soft_wrap=True)
    params = f" and {report.params_checked} 8-bit parameters file(s)" if report.params_checked else ""
    stdout.print(f"{report.chunks_checked} chunk(s){params} in {report.entries} "
                  f"entr{'y' if report.entries == 1 else 'ies'} checked: {len(report.bad)} bad",
                  highlight=False, soft_wrap=True)
    if report.bad:
        console.print("A bad chunk is never used: the next read moves it aside and the next "
                      "`medprobe extract RUN.yaml` (or `medprobe run`) recomputes it. A bad 8-bit parameters "
                      "file is not repaired that way: delete its layer folder and extract again (each line "
                      "above says which).", soft_wrap=True)
        raise typer.Exit(1)


@cache_app.command("gc")
@friendly_errors
def cache_gc(
    runs: list[Path] = typer.Option(..., "--runs", help="folder(s) searched (recursively) for run.json files; "
                                                         "repeat for several"),
    path: Optional[Path] = typer.Argument(None, help="the cache root (default: $MEDPROBE_CACHE_DIR or "
                                                      "~/.cache/medprobe/features)"),
    yes: bool = typer.Option(False, "--yes", help="really delete (default: only list what would go)"),
) -> None:
    """Remove cache entries that no run.json under --runs references (dry run unless --yes)."""
    from medprobe.features.maintenance import collect_garbage

    report = collect_garbage(path or _default_cache_root(), runs, delete=yes)
    verb = "deleted" if yes else "would delete"
    for entry, size in report.unreferenced:
        stdout.print(f"{verb} {entry} ({size / 2**20:.1f} MiB)", highlight=False, soft_wrap=True)
    for entry in report.skipped:
        stdout.print(f"[yellow]skipped[/] {entry}: being written by another process, or not writable",
                      highlight=False, soft_wrap=True)
    total = sum(size for _, size in report.unreferenced) / 2**20
    stdout.print(f"{len(report.referenced)} entr{'y' if len(report.referenced) == 1 else 'ies'} referenced by "
                  f"{report.run_files} run.json file(s) kept; {len(report.unreferenced)} unreferenced "
                  f"({total:.1f} MiB) {verb}" + ("" if yes else "; pass --yes to delete them"),
                  highlight=False, soft_wrap=True)


