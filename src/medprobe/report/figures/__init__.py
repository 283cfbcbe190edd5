"""The report's figures: a registry of figure families, drawn and saved as PNG and SVG.

Each family module (:mod:`.bars`, :mod:`.statistics`, :mod:`.layers`, :mod:`.label_efficiency`,
:mod:`.roc`, :mod:`.mcq`) takes the parsed run (:class:`RunData`) and returns a
:class:`~matplotlib.figure.Figure`, or raises :class:`FigureSkipped` saying why the run has no
data for it (one layer -> no layer curve, one train fraction -> no label-efficiency curve, ...);
it also declares its registry entries (:class:`FigureSpec`: title, caption, and whether the figure
applies to a run at all). :mod:`.style` holds what they share. This package's ``__init__`` is the
registry itself, in page order, and :func:`save_figures` writes every figure a run supports into
``figures/``.

Conventions shared by all figures, so they read the same way: the Okabe-Ito palette (distinct
under the common colour-vision deficiencies) with one fixed colour per backbone across figures,
error bars and bands are 95% percentile-bootstrap CIs over test samples unless a caption says
otherwise, and single-fit figures (per class, per layer, ROC) show the largest train fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from matplotlib.figure import Figure

from medprobe.io import atomic_write_bytes
from medprobe.report.figures.bars import METRIC_BARS, PER_CLASS_AUC, PER_CLASS_F1, metric_bars, per_class_bars
from medprobe.report.figures.label_efficiency import LABEL_EFFICIENCY, label_efficiency_curves
from medprobe.report.figures.layers import LAYER_CURVES, layer_curves
from medprobe.report.figures.mcq import MCQ_STRATA, mcq_strata
from medprobe.report.figures.roc import ROC_CURVES, roc_curves
from medprobe.report.figures.spec import FigureSpec
from medprobe.report.figures.statistics import PER_GROUP, RELIABILITY, reliability_diagram, subgroup_forest
from medprobe.report.figures.style import FigureSkipped, figure_style
from medprobe.report.load import RunData, load_run

FIGURE_DIR = "figures"
FORMATS = ("png", "svg")
PNG_DPI = 150

#: name -> figure; the order is the order on the page.
FIGURES: dict[str, FigureSpec] = {spec.name: spec for spec in (
    METRIC_BARS, PER_CLASS_AUC, PER_CLASS_F1, PER_GROUP, RELIABILITY, LAYER_CURVES, LABEL_EFFICIENCY, ROC_CURVES,
    MCQ_STRATA,
)}


@dataclass
class SavedFigure:
    """One figure as written to disk, with the words the HTML page shows around it."""

    name: str
    title: str
    caption: str
    paths: dict[str, Path] = field(default_factory=dict)


@dataclass
class FigureSet:
    """Figures written for a run, and a note per figure that was not drawn."""

    figures: list[SavedFigure]
    notes: list[str]

    @property
    def paths(self) -> list[Path]:
        return [path for figure in self.figures for path in figure.paths.values()]


def write_figure(fig: Figure, stem: Path) -> dict[str, Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (temp file + rename): a reader never sees half a file."""
    paths = {}
    with figure_style():
        for fmt in FORMATS:
            buffer = BytesIO()
            metadata = {"Date": None} if fmt == "svg" else {"Software": "medprobe (matplotlib)"}
            fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
            path = stem.with_suffix(f".{fmt}")
            atomic_write_bytes(path, buffer.getvalue())
            paths[fmt] = path
    return paths


def render_figures(run: RunData, out_dir: Path | None = None) -> FigureSet:
    """Draw and save every figure the run supports; record a note for each one that is skipped.

    Files of a skipped figure left by an earlier build are removed, so ``figures/`` always matches
    the report built from it.
    """
    out_dir = Path(out_dir) if out_dir is not None else run.run_dir / FIGURE_DIR
    saved, notes = [], []
    for name, spec in FIGURES.items():
        if spec.applies(run):
            try:
                fig = spec.draw(run)
            except FigureSkipped as skipped:
                notes.append(f"{spec.title} not drawn: {skipped}.")
            else:
                saved.append(SavedFigure(name, spec.title, spec.caption, write_figure(fig, out_dir / name)))
                continue
        for fmt in FORMATS:
            (out_dir / f"{name}.{fmt}").unlink(missing_ok=True)
    return FigureSet(saved, notes)


def save_figures(run_dir: str | Path) -> list[Path]:
    """Write every figure a run folder supports into ``run_dir/figures/`` as PNG and SVG; returns the paths."""
    return render_figures(load_run(run_dir)).paths


__all__ = ["FIGURES", "FIGURE_DIR", "FORMATS", "FigureSet", "FigureSkipped", "FigureSpec", "SavedFigure",
           "label_efficiency_curves", "layer_curves", "mcq_strata", "metric_bars", "per_class_bars",
           "reliability_diagram", "render_figures", "roc_curves", "save_figures", "subgroup_forest", "write_figure"]
