"""The command line's shared pieces: the Typer app, one clear message per error, run-file loading."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.table import Table

from medprobe.console_output import out as stdout
from medprobe.console_output import plain_help_placeholders
from medprobe.errors import ConfigError, MedprobeError
from medprobe.progress import console

plain_help_placeholders()
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
    """Wrap a command so that medprobe's errors and interrupts end in one readable line and an exit
    code, not a traceback; unexpected exceptions too, unless ``MEDPROBE_DEBUG`` is set."""
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


