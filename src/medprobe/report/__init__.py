"""The report stage: figures (PNG + SVG) and one self-contained HTML page per run folder.

``build_report(run_dir)`` is what ``medprobe run`` calls at the end and what ``medprobe report``
reruns from saved outputs; ``save_figures(run_dir)`` writes the figures alone.
"""

from medprobe.report.figures import (
    FigureSkipped,
    label_efficiency_curves,
    layer_curves,
    mcq_strata,
    metric_bars,
    per_class_bars,
    reliability_diagram,
    render_figures,
    roc_curves,
    save_figures,
    subgroup_forest,
)
from medprobe.report.html import build_report
from medprobe.report.load import RunData, load_run

__all__ = [
    "build_report",
    "save_figures",
    "render_figures",
    "load_run",
    "RunData",
    "FigureSkipped",
    "metric_bars",
    "per_class_bars",
    "subgroup_forest",
    "reliability_diagram",
    "layer_curves",
    "label_efficiency_curves",
    "roc_curves",
    "mcq_strata",
]
