"""What commands print as their result: on stdout, readable on a screen and usable in a pipe.

Unix convention, so that ``medprobe backbones | grep clip`` and ``medprobe layers NAME > file``
work: results, tables and listings go to stdout (:data:`out`); progress, warnings and errors to
stderr (:data:`medprobe.progress.console`). Piped, a table is not wrapped to 80 columns (each row
stays one line), and ``--format tsv`` / ``json`` give scripts a stable layout without box drawing.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

out = Console()
if not out.is_terminal:
    out = Console(width=100_000, soft_wrap=True)

FORMATS = ("table", "tsv", "json")
FORMAT_HELP = "table (for people), tsv or json (for scripts)"


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else a ConfigError listing them."""
    from medprobe.errors import ConfigError

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def print_rows(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> None:
    """Rows as a table (``table``: a rich table on a terminal; piped, aligned plain lines, one per
    row, so grep sees whole rows), tab-separated lines with a header (``tsv``; tabs and newlines
    inside cells become spaces) or a JSON list of objects (``json``), on stdout."""
    check_format(fmt)
    if fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(columns, row)) for row in rows], indent=1, default=str) + "\n")
    elif fmt == "tsv":
        for row in (columns, *rows):
            sys.stdout.write("\t".join(" ".join(str(cell).split()) for cell in row) + "\n")
    elif not out.is_terminal:  # piped: one line per row, columns aligned, the last one unpadded
        cells = [[" ".join(str(cell).split()) for cell in row] for row in (columns, *rows)]
        widths = [max(len(row[k]) for row in cells) for k in range(len(columns) - 1)]
        for row in cells:
            sys.stdout.write("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() + "\n")
    else:
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        out.print(table)
    sys.stdout.flush()


def print_data_summary(summary: dict, show_excluded: int) -> None:
    """``medprobe data``'s tables: images, patients and positives per split, selection rules, and
    the excluded rows (the first ``show_excluded`` by name)."""
    splits = summary["splits"]
    out.print(f"[bold]{summary['name']}[/] ({summary['task_type']}, {len(summary['classes'])} classes): "
                  f"{summary['description']}", highlight=False)
    table = Table(title="images and patients per split")
    columns = {**splits, "train+val": summary["train+val"], "all": summary["all"]}
    for column in ("", *columns):
        table.add_column(column, justify="right")
    for key, title in (("images", "images"), ("patients", "patients"),
                       ("images_without_patient_id", "images without patient id")):
        table.add_row(title, *(str(s[key]) for s in columns.values()))
    out.print(table)
    positives = Table(title="positive images per class")
    for column in ("class", *columns):
        positives.add_column(column, justify="right")
    for name in summary["classes"]:
        positives.add_row(name, *(str(s["positives"][name]) for s in columns.values()))
    out.print(positives)
    if summary["selection"]:
        rules = Table(title="selection rules")
        for column in ("rule", "selected", "of"):
            rules.add_column(column, justify="left" if column == "rule" else "right")
        for rule in summary["selection"]:
            rules.add_row(rule["rule"], f"{rule['selected']} {rule['unit']}", f"{rule['of']} {rule['unit']}")
        out.print(rules)
    excluded = summary["excluded"]
    if not excluded["count"]:
        out.print("excluded: none")
        return
    reasons = Table(title=f"excluded rows ({excluded['count']})")
    reasons.add_column("reason")
    reasons.add_column("rows", justify="right")
    for reason, n in excluded["by_reason"].items():
        reasons.add_row(reason, str(n))
    out.print(reasons)
    for row in excluded["rows"][:show_excluded]:
        out.print("  " + ", ".join(f"{k}={v}" for k, v in row.items() if v not in (None, "")), highlight=False)
    if excluded["count"] > show_excluded:
        out.print(f"  ... {excluded['count'] - show_excluded} more (all of them with --json)")


def layer_rows(name: str, options: dict[str, Any] | None = None, *, layers: Any = None) -> list[tuple[str, str]]:
    """``(stack, layer)`` of every layer a backbone offers (or that ``layers`` requests), for
    ``medprobe layers --format tsv|json``: Hugging Face models from config.json alone, language
    model (``lm``) then vision tower (``vision``); other backbones are built (stack ``main``)."""
    from medprobe.plan import is_hf_backbone

    if is_hf_backbone(name):
        from medprobe.models.architectures import stacks_for_backbone
        from medprobe.models.stacks import resolve_layer_spec

        stacks = stacks_for_backbone(name, options)
        is_clip = stacks.lm_layers is None
        lm = [] if is_clip else [str(k) for k in range(stacks.num_lm_layers + 1)]
        offered = [*lm, *(f"vision.{k}" for k in range(stacks.num_vision_layers + 1)),
                   *(["image_embeds"] if is_clip else [])]
        if layers is not None:
            offered = resolve_layer_spec(name, layers, num_lm=None if is_clip else stacks.num_lm_layers,
                                         num_vision=stacks.num_vision_layers,
                                         extra=["image_embeds"] if is_clip else [], default=offered)
        return [("vision" if layer.startswith("vision.") else "lm" if layer in lm else "main", layer)
                for layer in offered]
    from medprobe.models.registry import create_backbone

    backbone = create_backbone(name, **dict(options or {}))
    try:
        return [("main", layer) for layer in (backbone.layer_names() if layers is None else
                                               backbone.resolve_layers(layers))]
    finally:
        backbone.close()


def plain_help_placeholders() -> None:
    """Make ``--help`` read the usual Unix way: ``medprobe run [OPTIONS] RUN_FILE`` instead of
    ``{run_file}``, and no ``<bool>`` after flags. typer 0.29 hard-codes both forms; its private
    hooks are replaced only where they exist, so another typer version simply keeps its own."""
    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - another typer layout
        return
    if hasattr(TyperArgument, "_usage_display_name"):
        def usage_name(self) -> str:
            name = self.display_name_raw.upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        TyperArgument._usage_display_name = usage_name
    if hasattr(TyperArgument, "_rich_display_name"):
        original = TyperArgument._rich_display_name
        TyperArgument._rich_display_name = lambda self: original(self).upper()
    if hasattr(TyperOption, "display_type_rich"):
        shown = TyperOption.display_type_rich
        def type_shown(self, ctx):
            return None if getattr(self, "is_bool_flag", False) else shown(self, ctx)

        TyperOption.display_type_rich = type_shown


__all__ = ["FORMATS", "FORMAT_HELP", "check_format", "layer_rows", "out", "plain_help_placeholders",
           "print_data_summary", "print_rows"]
