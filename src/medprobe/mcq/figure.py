"""The MCQ figure, after the study's Fig. 1f: accuracy by case difficulty.

Left: per difficulty stratum (share of human readers correct), the primary answer's accuracy and,
when answers were sampled, "correct within n tries", each with its Wilson CI, next to the human
readers' mean share and the random-guessing line (1 / number of options, 20 % for five). Right:
the same two accuracies over all cases beside the study's published values (40.4 %, 375 / 929
primary; 54.3 %, 504 / 929 within three tries), so a reproduction can be read off at a glance.

Built on a bare :class:`matplotlib.figure.Figure` (no pyplot state), written as PNG and SVG with
the project's atomic writer.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medprobe.io import atomic_write_bytes

PRIMARY_COLOR = "#0072B2"
WITHIN_COLOR = "#E69F00"
HUMAN_COLOR = "0.35"
CHANCE_COLOR = "#D55E00"


def _values(rows: list[dict[str, Any]], key: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy and CI bounds of each row (or of ``row[key]``), NaN where there is none."""
    def get(row: dict[str, Any], field: str) -> float:
        source = row.get(key) if key else row
        value = source.get(field) if isinstance(source, dict) else None
        return np.nan if value is None else float(value)

    return tuple(np.array([get(row, field) for row in rows], dtype=float)  # type: ignore[return-value]
                 for field in ("accuracy", "ci_low", "ci_high"))


def _errorbar(ax: Any, x: np.ndarray, values: tuple[np.ndarray, np.ndarray, np.ndarray], **style: Any) -> None:
    acc, low, high = values
    shown = np.isfinite(acc)
    ax.errorbar(x[shown], acc[shown], yerr=[acc[shown] - low[shown], high[shown] - acc[shown]], capsize=4, **style)


def strata_figure(summary: dict[str, Any], chance: float) -> Figure:
    """The two-panel figure for one ``mcq_results.json`` summary."""
    strata = summary["strata"]
    n_tries = int(summary.get("n_tries") or 0)
    level = float(summary.get("ci_level", 0.95))
    fig = Figure(figsize=(9.0, 4.2), dpi=150)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3.2, 1.3]})

    x = np.arange(len(strata))
    offset = 0.08 if n_tries else 0.0
    _errorbar(left, x - offset, _values(strata), fmt="o-", color=PRIMARY_COLOR, label="primary (greedy)"
              if summary.get("method") == "generate" else f"primary ({summary.get('method')})")
    if n_tries:
        _errorbar(left, x + offset, _values(strata, "within_n"), fmt="D-", color=WITHIN_COLOR,
                  label=f"correct within {n_tries} sampled tries")
    human = np.array([np.nan if row.get("human_mean") is None else row["human_mean"] for row in strata], dtype=float)
    left.plot(x, human, "s--", color=HUMAN_COLOR, label="human readers (mean share correct)")
    left.axhline(chance, linestyle="--", color=CHANCE_COLOR, linewidth=1, label=f"random guessing ({chance:.0%})")
    left.set_xticks(x, [f"{row['low']:.0%}–{row['high']:.0%}\n(n={row['n']})" for row in strata], fontsize=8)
    missing = summary.get("n_without_human_value") or 0
    left.set_xlabel("Difficulty stratum: share of human readers correct"
                    + (f"\n({missing} case{'s' if missing != 1 else ''} without a human value, in no stratum)"
                       if missing else ""), fontsize=8.5)
    left.set_ylabel("Accuracy")
    left.set_ylim(0, 1.25)  # head room for the legend above the data
    left.set_yticks(np.linspace(0, 1, 6))
    left.set_title(f"{summary['model']}, {summary['n_shots']}-shot: accuracy by difficulty ({level:.0%} CI)",
                   fontsize=9)
    left.legend(fontsize=7, loc="upper left", ncol=2)
    left.grid(axis="y", alpha=0.3)

    overall = [{"accuracy": summary.get("accuracy"), "ci_low": summary.get("ci_low"),
                "ci_high": summary.get("ci_high")}]
    _errorbar(right, np.array([0.0]), _values(overall), fmt="o", color=PRIMARY_COLOR)
    names = ["primary"]
    if n_tries:
        within = summary["correct_within_n"][str(n_tries)]
        _errorbar(right, np.array([1.0]), _values([within]), fmt="D", color=WITHIN_COLOR)
        names.append(f"within {n_tries}")
    reference = summary.get("study_reference") or {}
    for key, color, label in (("primary", PRIMARY_COLOR, "study primary"),
                              ("within_3", WITHIN_COLOR, "study within 3")):
        if key in reference:
            ref = reference[key]
            right.axhline(ref["k"] / ref["n"], color=color, linestyle=":", linewidth=1.2,
                          label=f"{label}: {ref['k'] / ref['n']:.1%} ({ref['k']}/{ref['n']})")
    right.axhline(chance, linestyle="--", color=CHANCE_COLOR, linewidth=1)
    right.set_xticks(range(len(names)), names, fontsize=8)
    right.set_xlim(-0.6, max(len(names), 2) - 0.4)
    right.set_ylim(0, 1.25)
    right.set_yticks(np.linspace(0, 1, 6))
    right.set_title(f"all {summary['n_cases']} cases", fontsize=9)
    right.legend(fontsize=6.5, loc="upper left")
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_strata(summary: dict[str, Any], stem: Path, chance: float) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``; returns their paths."""
    fig = strata_figure(summary, chance)
    paths = []
    for suffix in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix)
        path = stem.with_suffix(f".{suffix}")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths
