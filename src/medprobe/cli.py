"""The command line: a thin layer over run files and the library.

Every command turns medprobe's own errors (bad input, bad config, missing model, ...) into one
clear red message and exit code 2, never a bare traceback. Run files are validated (keys, and the
options of the adapter and of every backbone) before the heavy libraries are imported, so a typo
is reported in well under a second.

Commands map to the stages of :mod:`medprobe.stages`: ``run`` / ``demo`` run all of them
(:func:`medprobe.experiment.run_experiment`), ``probe`` all but extraction (features from the
cache), ``extract`` the data and extract stages; ``bench`` reads its benchmarks from
:data:`medprobe.bench.BENCHMARKS`.
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

from medprobe.console_output import FORMAT_HELP, plain_help_placeholders, print_data_summary, print_rows
from medprobe.console_output import out as stdout
from medprobe.errors import ConfigError, MedprobeError
from medprobe.progress import console

plain_help_placeholders()

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Probe what (multimodal) models see in medical images.")

ENGINE_HELP = "extraction engine (default: the run file's extraction.engine)"
WAIT_HELP = "if another run is writing the same feature cache, wait up to SECONDS for it instead of failing"


def _show_version(value: bool) -> None:
    if value:
        from medprobe import __version__

        typer.echo(f"medprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Probe what (multimodal) models see in medical images."""


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


def _load(run_file: Path, out: Optional[Path], engine: Optional[str] = None, wait_for_lock: Optional[float] = None):
    """Read and fully check a run file (keys and options) before anything heavy is imported;
    ``--engine`` / ``--wait-for-lock`` override the run file and are validated like it."""
    from medprobe.config import load_config, parse_config
    from medprobe.run_checks import check_options

    if run_file.is_dir():
        raise ConfigError(f"{run_file} is a folder, not a run file: give a YAML run file (`medprobe init "
                          f"{run_file}` writes one for a folder of images)")
    config = load_config(run_file)
    if engine is not None or wait_for_lock is not None:
        data = config.model_dump()
        if engine is not None:
            data["extraction"]["engine"] = engine
        if wait_for_lock is not None:
            data["extraction"]["lock_wait_s"] = wait_for_lock
        config = parse_config(data, f"{run_file} (command-line options)")
    check_options(config)
    return config, out or Path(config.output_dir)


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
    from medprobe.mcq.evaluate import headline

    for line in headline(json.loads((folder / "mcq_results.json").read_text())):
        stdout.print(line, highlight=False)
    stdout.print(f"outputs: {folder}", highlight=False)


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
def report(run_dir: Path = typer.Argument(..., help="a run's output folder")) -> None:
    """Regenerate report.html (and figures) from a run's saved outputs, replacing both at once."""
    from medprobe.outputs import rebuild_report

    path = rebuild_report(run_dir)
    stdout.print(f"report: {path}", highlight=False)


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
    stdout.print(f"{report.chunks_checked} chunk(s) in {report.entries} entr{'y' if report.entries == 1 else 'ies'} "
                  f"checked: {len(report.bad)} bad", highlight=False, soft_wrap=True)
    if report.bad:
        console.print("A bad chunk is never used: the next read moves it aside and the next "
                      "`medprobe extract RUN.yaml` (or `medprobe run`) recomputes it.", soft_wrap=True)
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


FRACTION_HELP = "train fraction of the table's cells (default: all labels)"
REFERENCE_HELP = "test every backbone against this one only (default: every pair of backbones)"


@app.command()
@friendly_errors
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="output folders of finished runs"),
    out: Path = typer.Option(..., "--out", help="folder for compare.html, comparison.json and comparison.csv"),
    fraction: float = typer.Option(1.0, "--fraction", help=FRACTION_HELP),
    reference: Optional[str] = typer.Option(None, "--reference", help=REFERENCE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a comparison already in --out"),
) -> None:
    """Put finished runs side by side: task x backbone table, paired tests across runs, figures."""
    from medprobe.compare import compare_runs

    report = compare_runs(run_dirs, out, fraction=fraction, reference=reference, overwrite=overwrite)
    stdout.print(f"comparison: {out / 'comparison.json'}\nreport:     {report}", highlight=False)


@app.command()
@friendly_errors
def study(
    sources: list[Path] = typer.Argument(..., help="run files, or folders of run files (e.g. configs/paper/)"),
    out: Path = typer.Option(Path("runs/study"), "--out", help="folder for the comparison of the runs"),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="put each run in RUNS_DIR/<name> "
                                            "(default: each run file's output_dir)"),
    keep_going: bool = typer.Option(False, "--keep-going", help="list a failing run and go on with the others"),
    overwrite: bool = typer.Option(False, "--overwrite", help="redo runs that already finished"),
    fraction: float = typer.Option(1.0, "--fraction", help=FRACTION_HELP),
    reference: Optional[str] = typer.Option(None, "--reference", help=REFERENCE_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Run several run files in order (finished ones are not redone), then compare them."""
    from medprobe.study import run_study

    outcome = run_study(sources, out, runs_dir=runs_dir, keep_going=keep_going, overwrite=overwrite,
                        show_progress=not quiet, fraction=fraction, reference=reference)
    for file, error in outcome.failed:
        console.print(f"[red]failed[/]: {file}: {error}", highlight=False)
    if outcome.report is not None:
        stdout.print(f"report: {outcome.report}", highlight=False)
    if outcome.failed:
        raise typer.Exit(1)

def _print_summary(run_dir: Path) -> None:
    import json

    from rich.markup import escape

    rows = json.loads((run_dir / "results.json").read_text())
    summary = json.loads((run_dir / "run.json").read_text())
    metric = summary["task_metric"]
    on_test = any(row.get("layer_selection") for row in rows)  # a study protocol (issue 27) picked some on test
    table = Table(title=f"{summary['name']}: {metric} on test (95% bootstrap CI), layer chosen on validation"
                  + (" (rows marked 'selected on test (optimistic)': on test)" if on_test else ""))
    for column in ("backbone", "layer", "train fraction", "seed", metric, "95% CI", "n_test"):
        table.add_column(column)
    for row in rows:
        if row["selected"] and row["metric"] == metric:
            table.add_row(escape(row["backbone"]), row["layer"], f"{row['train_fraction']:g}", str(row["seed"]),
                          f"{row['value']:.3f}", f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]", str(row["n_test"]))
    stdout.print(table)
    for info in summary.get("backbones", []):
        if info.get("cache_dtype"):
            console.print(f"features of {info['label']}: read as {info['cache_dtype']} from {info['cache_dir']}",
                          highlight=False)
    stdout.print(f"results: {run_dir / 'results.json'}\nreport:  {run_dir / 'report.html'}", highlight=False)


PREDICT_CHOICE_HELP = "which saved probe: the result row's backbone (needed when the run has several)"


@app.command()
@friendly_errors
def predict(
    run_dir: Path = typer.Argument(..., help="a finished run's output folder (its probes/)"),
    images: Optional[list[str]] = typer.Argument(None, help="image files, folders, or manifest CSV/TSV/Parquet"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help=PREDICT_CHOICE_HELP),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="train fraction (default: the largest)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of that fraction (default: the smallest)"),
    layer: Optional[str] = typer.Option(None, "--layer", help="another saved layer (probe.save: all)"),
    threshold: Optional[str] = typer.Option(None, "--threshold",
                                            help="operating point: youden, sens90, sens95, spec<L>, or a number "
                                                 "(default youden; none for multi-class tasks)"),
    data: Optional[Path] = typer.Option(None, "--data", help="classify a split of this run file's data instead"),
    split: str = typer.Option("test", "--split", help="the split of --data"),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help=".csv, .tsv or .parquet"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
    option: Optional[list[str]] = typer.Option(None, "--option", help="backbone option KEY=VALUE (e.g. a moved "
                                                                       "model file's path)"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch",
                                        help="predict even if the backbone's fingerprint differs from the probe's"),
    on_error: str = typer.Option("raise", "--on-error", help="unreadable images: raise (stop) or skip (and list)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Classify new images with a probe the run saved: one row per image (scores, class, decision)."""
    from medprobe.deploy.predict import parse_options, predict_command

    frame, skipped, probe = predict_command(
        run_dir, images or [], data=data, split=split, out=out, overwrite=overwrite, threshold=threshold,
        on_error=on_error, show_progress=not quiet, backbone=backbone, fraction=fraction, seed=seed, layer=layer,
        backbone_options=parse_options(option or []), allow_mismatch=allow_mismatch)
    for difference in probe.mismatches:
        console.print(f"[yellow]warning:[/] fingerprint differs (allowed): {difference}", highlight=False)
    for item in skipped:
        console.print(f"[yellow]skipped[/] {item['sample_id']}: {item['error']}", highlight=False)
    typer.echo(f"{len(frame)} image(s), probe {probe.record['backbone_row']} {probe.layer} (train fraction "
               f"{probe.record['train_fraction']:g}, seed {probe.record['seed']}): {out}")


@app.command()
@friendly_errors
def export(
    run_dir: Path = typer.Argument(..., help="a finished run's output folder (its probes/)"),
    onnx: Path = typer.Option(..., "--onnx", help="the ONNX file to write"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help=PREDICT_CHOICE_HELP),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="train fraction (default: the largest)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of that fraction (default: the smallest)"),
    layer: Optional[str] = typer.Option(None, "--layer", help="another saved layer (probe.save: all)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file"),
) -> None:
    """Write a saved probe with its ONNX backbone (truncated at the probe's layer) as one ONNX graph."""
    from medprobe.deploy.export_onnx import export_onnx
    from medprobe.deploy.loaded import load_probe

    if onnx.exists() and not overwrite:
        raise typer.BadParameter(f"{onnx} exists; pass --overwrite or choose another file")
    probe = load_probe(run_dir, backbone, fraction, seed, layer=layer)
    try:
        export_onnx(probe, onnx)
    finally:
        probe.close()
    typer.echo(f"wrote {onnx}: {probe.record['backbone_row']} up to {probe.layer} + probe; input 'image', "
               "output 'probabilities' (see its metadata)")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
