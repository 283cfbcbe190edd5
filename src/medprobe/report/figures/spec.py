"""One entry of the figure registry: how to draw a figure, what the page says around it, and
whether it belongs in a given run at all.

Each figure family declares its own entries next to its drawing code, so adding a figure is one
module and one line in the registry's order (:data:`medprobe.report.figures.FIGURES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from matplotlib.figure import Figure

from medprobe.report.load import RunData


def always(run: RunData) -> bool:
    """The default "applies to this run" check: every run has data that may show the figure."""
    return True


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure.

    ``applies`` says whether the figure belongs in this kind of run at all: when it does not (a run
    without MCQ results or subgroups, a per-class AUROC that would repeat a binary task's headline),
    the page gets no figure and no note. When it applies but ``draw`` raises
    :class:`~medprobe.report.figures.style.FigureSkipped`, the page says why it is missing.
    """

    name: str
    title: str
    caption: str
    draw: Callable[[RunData], Figure]
    applies: Callable[[RunData], bool] = always


__all__ = ["FigureSpec", "always"]
