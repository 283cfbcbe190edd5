"""compare.html: one self-contained page (inline CSS, figures as base64 SVG, no script, no
request to anything outside the file), rendered with jinja2 from comparison.json's dict."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from medprobe.compare.figures import FIGURES, draw_figures
from medprobe.io import atomic_write_text


def number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def p_value(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def interval(entry: dict[str, Any]) -> str:
    return f"[{number(entry.get('ci_low'))}, {number(entry.get('ci_high'))}]"


def headline_grid(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the task x column table: ``{"task", "title", "metric", "cells": [cell or None per column]}``."""
    by_key = {(c["task"], c["column"]): c for c in comparison["cells"]}
    return [{"task": t["task"], "title": t["title"], "metric": t["metric"], "discipline": t["discipline"],
             "cells": [by_key.get((t["task"], column)) for column in comparison["columns"]]}
            for t in comparison["tasks"]]


def render(comparison: dict[str, Any], figures: dict[str, str]) -> str:
    """``compare.html`` as text: the comparison through the Jinja template, figures embedded as data URIs
    so that the page is one self-contained file."""
    environment = Environment(loader=PackageLoader("medprobe.compare", "templates"),
                              autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(number=number, p_value=p_value, interval=interval)
    embedded = [{"stem": stem, "title": title, "caption": caption,
                 "src": "data:image/svg+xml;base64," + base64.b64encode(figures[stem].encode()).decode("ascii")}
                for stem, title, caption, _ in FIGURES if stem in figures]
    return environment.get_template("compare.html.j2").render(c=comparison, grid=headline_grid(comparison),
                                                               figures=embedded)


def write_report(comparison: dict[str, Any], out: Path) -> Path:
    """Draw the figures (also kept as ``figures/<stem>.svg``) and write ``compare.html``."""
    figures = draw_figures(comparison)
    for stem, svg in figures.items():
        atomic_write_text(out / "figures" / f"{stem}.svg", svg)
    path = out / "compare.html"
    atomic_write_text(path, render(comparison, figures))
    return path


__all__ = ["write_report", "render"]
