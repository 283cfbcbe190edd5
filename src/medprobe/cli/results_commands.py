"""Commands on finished runs and beyond one run: ``mcq``, ``compare``, ``study``, ``predict``, ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medprobe.cli.app import (
    app,
    friendly_errors,
)
from medprobe.console_output import out as stdout
from medprobe.progress import console


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


