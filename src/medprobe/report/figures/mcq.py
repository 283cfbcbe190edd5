"""The report's multiple-choice figure.

Runs written by ``medprobe mcq`` get the MCQ package's own study-style figure
(:func:`medprobe.mcq.figure.strata_figure`: primary and within-n accuracy per difficulty stratum,
the study's published values beside them); summaries of another shape (hand-made, partial or
several models at once) get :func:`mcq_strata`, which reads a loose schema.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from medprobe.report.figures.spec import FigureSpec
from medprobe.report.figures.style import (
    MARKERS,
    PALETTE,
    FigureSkipped,
    ci_errors,
    figure_style,
    new_figure,
    number_or_nan,
)
from medprobe.report.load import as_float


def mcq_strata(summaries: dict[str, Any] | Sequence[dict[str, Any]], chance: float = 0.2) -> Figure:
    """MCQ accuracy per human-difficulty stratum (95% CI) next to the human share, with a guessing line.

    Written against a loose schema: rows or keys that are missing are left out rather than failing,
    because MCQ outputs come from a separate experiment and may be partial.
    """
    items = [summaries] if isinstance(summaries, dict) else list(summaries)
    series = []
    for item in items:
        strata = [s for s in item.get("strata") or [] if isinstance(s, dict)]
        if any(as_float(s.get("accuracy")) is not None for s in strata):
            series.append((item, strata))
    if not series:
        raise FigureSkipped("mcq_results.json has no difficulty strata with an accuracy")

    def stratum_name(row: dict[str, Any]) -> str:
        low, high = as_float(row.get("low")), as_float(row.get("high"))
        name = f"{low:.0%}–{high:.0%}" if low is not None and high is not None else str(row.get("stratum", "?"))
        n = row.get("n")
        return f"{name}\n(n={n})" if n is not None else name

    labels = [stratum_name(row) for row in series[0][1]]
    with figure_style():
        fig = new_figure(8.0, 4.5)
        ax = fig.add_subplot()
        x = np.arange(len(labels))
        human_drawn = False
        for i, (item, strata) in enumerate(series):
            acc = np.array([number_or_nan(s.get("accuracy")) for s in strata], dtype=float)[: len(x)]
            low = np.array([number_or_nan(s.get("ci_low")) for s in strata], dtype=float)[: len(x)]
            high = np.array([number_or_nan(s.get("ci_high")) for s in strata], dtype=float)[: len(x)]
            label = str(item.get("model") or f"model {i + 1}")
            ax.errorbar(x[: len(acc)], acc, yerr=ci_errors(acc, low, high), marker=MARKERS[i % len(MARKERS)],
                        color=PALETTE[i % len(PALETTE)], capsize=3, label=f"{label} (95% CI)")
            human = np.array([number_or_nan(s.get("human_mean")) for s in strata], dtype=float)[: len(x)]
            if not human_drawn and np.isfinite(human).any():
                ax.plot(x[: len(human)], human, marker="s", color="0.35", linestyle=":",
                        label="human readers (mean share correct)")
                human_drawn = True
        ax.axhline(chance, color="#D55E00", linestyle="--", linewidth=1.0, label=f"random guessing ({chance:.0%})")
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("Case difficulty: share of human readers answering correctly")
        ax.set_ylabel("Accuracy (share of cases correct)")
        ax.set_title("Multiple-choice accuracy by case difficulty")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
    return fig


#: what :func:`medprobe.mcq.figure.strata_figure` reads from a summary (the schema ``medprobe mcq`` writes)
STUDY_FIGURE_KEYS = ("model", "n_shots", "n_cases", "strata")


def mcq_figure(summaries: Sequence[dict[str, Any]], chance: float) -> Figure:
    """The MCQ figure: the MCQ package's own study-style figure for the first summary written by
    ``medprobe mcq`` (primary and within-n accuracy, study reference lines); the loose
    :func:`mcq_strata` for summaries of another shape (hand-made or partial)."""
    from medprobe.mcq.figure import strata_figure

    first = summaries[0] if summaries else {}
    strata = first.get("strata") or []
    n_tries = int(as_float(first.get("n_tries")) or 0)
    complete = (all(key in first for key in STUDY_FIGURE_KEYS) and strata
                and all(isinstance(s, dict) and {"low", "high", "n"} <= set(s) for s in strata)
                and (not n_tries or str(n_tries) in (first.get("correct_within_n") or {})))
    if len(summaries) == 1 and complete:
        return strata_figure(first, chance)
    return mcq_strata(summaries, chance)


def mcq_chance(summaries: Sequence[dict[str, Any]]) -> float:
    """Guessing accuracy: 1 / number of options when the summary says, else 1/5 (five options)."""
    for item in summaries:
        chance = as_float(item.get("chance"))
        if chance is not None and 0 < chance < 1:
            return chance
        options = as_float(item.get("n_options"))
        if options is not None and options >= 2:
            return 1.0 / options
    return 0.2



MCQ_STRATA = FigureSpec(
    "mcq_strata",
    "Multiple-choice accuracy by difficulty",
    "Accuracy per human-difficulty stratum with 95% Wilson CI (primary answer and, when answers were "
    "sampled, correct within n tries), the mean share of human readers answering each stratum correctly, "
    "and the accuracy of random guessing (dashed); beside it, accuracy over all cases next to the study's "
    "published values (after its Fig. 1f).",
    lambda run: mcq_figure(run.mcq, chance=mcq_chance(run.mcq)),
    applies=lambda run: bool(run.mcq),
)


__all__ = ["MCQ_STRATA", "mcq_strata", "mcq_figure", "mcq_chance"]
