"""Accuracy, difficulty strata and the outputs of a multiple-choice run.

Difficulty follows the study: a case's difficulty is the share of human readers who answered it
correctly (``human_correct``), cut into five equal intervals [0, 0.2), ..., [0.8, 1.0]. Per
stratum we report the model's accuracy with a binomial CI and the mean human share, and draw
them against the chance line (1 / number of options) as in the study's Fig. 1f.

Unparseable generated answers are wrong answers here (they count in ``n`` and not in ``k``),
and their number is reported next to the accuracy.
"""

from __future__ import annotations

import csv
import io
import json
from bisect import bisect_right
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medprobe.features.cache import atomic_write_bytes, atomic_write_json
from medprobe.mcq.records import CaseResult
from medprobe.stats.binomial import binomial_ci

STRATA_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
CASES_CSV = "mcq_cases.csv"
RESULTS_JSON = "mcq_results.json"
FIGURE_STEM = "mcq_strata"


def accuracy_row(correct: Sequence[bool], level: float = 0.95) -> dict[str, Any]:
    """``n``, ``accuracy`` and a Wilson CI; ``None`` values for an empty group."""
    n = len(correct)
    if n == 0:
        return {"n": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    k = int(sum(bool(c) for c in correct))
    interval = binomial_ci(k, n, level=level, method="wilson")
    return {"n": n, "accuracy": k / n, "ci_low": interval["ci_low"], "ci_high": interval["ci_high"]}


def stratum_of(share: float) -> int:
    """Index 0-4 of the difficulty stratum holding ``share``; the last interval includes 1.0."""
    return bisect_right(STRATA_EDGES[1:-1], share)


def strata_rows(results: Sequence[CaseResult], level: float = 0.95) -> list[dict[str, Any]]:
    """Accuracy per human-difficulty stratum; cases without ``human_correct`` are left out."""
    rows = []
    for index, (low, high) in enumerate(zip(STRATA_EDGES[:-1], STRATA_EDGES[1:])):
        members = [r for r in results if r.human_correct is not None and stratum_of(r.human_correct) == index]
        closing = "]" if index == len(STRATA_EDGES) - 2 else ")"
        row = {"stratum": f"[{low:.1f}, {high:.1f}{closing}", "low": low, "high": high}
        row.update(accuracy_row([r.correct for r in members], level))
        row["human_mean"] = float(np.mean([r.human_correct for r in members])) if members else None
        rows.append(row)
    return rows


def specialty_rows(results: Sequence[CaseResult], level: float = 0.95) -> list[dict[str, Any]]:
    """Accuracy per specialty, for the cases that name one, alphabetical."""
    specialties = sorted({r.specialty for r in results if r.specialty})
    rows = []
    for specialty in specialties:
        row = {"specialty": specialty}
        row.update(accuracy_row([r.correct for r in results if r.specialty == specialty], level))
        rows.append(row)
    return rows


def summarize(results: Sequence[CaseResult], *, model: str, method: str, n_shots: int,
              level: float = 0.95, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``mcq_results.json`` document for a run.

    With several sampled tries per case, the headline accuracy, strata and specialties use the
    first try (one answer per case, comparable with greedy decoding), and ``correct_within_n``
    gives the share of cases answered correctly in at least one of the first 1..n tries.
    """
    first = [r for r in results if r.try_index == 0]
    overall = accuracy_row([r.correct for r in first], level)
    summary: dict[str, Any] = {
        "model": model,
        "method": method,
        "n_cases": overall["n"],
        "n_shots": n_shots,
        "accuracy": overall["accuracy"],
        "ci_low": overall["ci_low"],
        "ci_high": overall["ci_high"],
        "ci_level": level,
        "n_unparseable": sum(r.parsed_index is None for r in first),
        "parse_methods": dict(Counter(r.parse_method for r in first)),
    }
    n_tries = 1 + max((r.try_index for r in results), default=0)
    if n_tries > 1:
        by_case: dict[str, list[CaseResult]] = {}
        for r in results:
            by_case.setdefault(r.case_id, []).append(r)
        within = {}
        for n in range(1, n_tries + 1):
            hits = [any(r.correct for r in rows if r.try_index < n) for rows in by_case.values()]
            within[str(n)] = accuracy_row(hits, level)
        summary["correct_within_n"] = within
        summary["n_unparseable_all_tries"] = sum(r.parsed_index is None for r in results)
    summary["strata"] = strata_rows(first, level)
    summary["per_specialty"] = specialty_rows(first, level)
    if extra:
        summary.update(extra)
    return summary


CSV_COLUMNS = ["case_id", "method", "try", "seed", "raw_answer", "parsed_index", "parsed_option", "parse_method",
               "correct_index", "correct_option", "correct", "explanation", "human_correct", "specialty",
               "logprob_sum", "n_tokens", "logprob_mean"]


def write_cases_csv(path: Path, results: Sequence[CaseResult]) -> None:
    """Every answer, one row each; per-option scores as JSON lists (empty for generation)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({
            "case_id": r.case_id, "method": r.method, "try": r.try_index, "seed": r.seed,
            "raw_answer": r.raw_answer, "parsed_index": r.parsed_index, "parsed_option": r.parsed_option,
            "parse_method": r.parse_method, "correct_index": r.correct_index,
            "correct_option": r.correct_option, "correct": r.correct, "explanation": r.explanation,
            "human_correct": r.human_correct, "specialty": r.specialty,
            **{key: json.dumps(getattr(r, key)) if getattr(r, key) else ""
               for key in ("logprob_sum", "n_tokens", "logprob_mean")},
        })
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def plot_strata(summary: dict[str, Any], out_dir: Path, chance: float) -> list[Path]:
    """Accuracy per difficulty stratum with CI bars, human share, and the chance line (PNG + SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strata = summary["strata"]
    x = np.arange(len(strata))
    labels = [f"{row['low']:.0%}–{row['high']:.0%}\n(n={row['n']})" for row in strata]
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=150)
    has = [row["accuracy"] is not None for row in strata]
    acc = np.array([row["accuracy"] if ok else np.nan for row, ok in zip(strata, has)], dtype=float)
    low = np.array([row["ci_low"] if ok else np.nan for row, ok in zip(strata, has)], dtype=float)
    high = np.array([row["ci_high"] if ok else np.nan for row, ok in zip(strata, has)], dtype=float)
    ax.errorbar(x, acc, yerr=[acc - low, high - acc], fmt="o-", capsize=4, color="tab:blue",
                label=f"{summary['model']} ({summary['method']})")
    human = np.array([row["human_mean"] if row["human_mean"] is not None else np.nan for row in strata], dtype=float)
    ax.plot(x, human, "s--", color="tab:gray", label="human readers (mean share correct)")
    ax.axhline(chance, linestyle="--", color="tab:red", linewidth=1, label=f"random guessing ({chance:.0%})")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Difficulty stratum (share of human readers correct)")
    ax.set_ylabel("Accuracy")
    ax.set_title(f"Accuracy by case difficulty (95% CI), {summary['n_cases']} cases, {summary['n_shots']}-shot",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths = []
    for suffix in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix)
        path = out_dir / f"{FIGURE_STEM}.{suffix}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def write_outputs(out_dir: Path, results: Sequence[CaseResult], summary: dict[str, Any], chance: float) -> None:
    """CSV, JSON and figure, each written atomically so a crash never leaves half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_cases_csv(out_dir / CASES_CSV, results)
    plot_strata(summary, out_dir, chance)
    atomic_write_json(out_dir / RESULTS_JSON, summary)
