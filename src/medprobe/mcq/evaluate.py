"""Accuracy, difficulty strata and the outputs of a multiple-choice run.

Difficulty follows the study: a case's difficulty is the share of human readers who answered it
correctly (``human_correct``), cut into five equal intervals [0, 0.2), ..., [0.8, 1.0]. Per
stratum and per specialty we report the primary answer's accuracy and, when answers were sampled,
"correct within n tries", each with a Wilson CI, and the mean human share; cases without a human
value (or a specialty) are counted, not silently left out. The figure (:mod:`medprobe.mcq.figure`)
draws them as in the study's Fig. 1f.

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

from medprobe.errors import DataError
from medprobe.io import atomic_write_json, atomic_write_text
from medprobe.mcq.records import CaseResult
from medprobe.stats.binomial import binomial_ci

STRATA_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
CASES_CSV = "mcq_cases.csv"
RESULTS_JSON = "mcq_results.json"
FIGURE_STEM = "mcq_strata"
#: the study's NEJM Image Challenge results (Han et al.; IDEFICS-80B-instruct, 2 shots, 929 cases):
#: correct answers / cases, for the primary answer and within three sampled tries
STUDY_REFERENCE = {"primary": {"k": 375, "n": 929}, "within_3": {"k": 504, "n": 929}}


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


def _by_case(results: Sequence[CaseResult]) -> dict[str, list[CaseResult]]:
    grouped: dict[str, list[CaseResult]] = {}
    for r in results:
        grouped.setdefault(r.case_id, []).append(r)
    return grouped


def within_n(rows: Sequence[CaseResult], n: int) -> bool:
    """Whether one of a case's sampled tries 1..n is correct."""
    return any(r.correct for r in rows if 1 <= r.try_index <= n)


def _group_row(cases: Sequence[list[CaseResult]], n_tries: int, level: float) -> dict[str, Any]:
    """Primary accuracy of these cases and, with sampled tries, correct within ``n_tries``."""
    row = accuracy_row([rows[0].correct for rows in cases], level)
    if n_tries:
        row["within_n"] = accuracy_row([within_n(rows, n_tries) for rows in cases], level)
    return row


def _primary_first(results: Sequence[CaseResult]) -> list[list[CaseResult]]:
    """Each case's rows with the primary answer (try 0) first."""
    grouped = [sorted(rows, key=lambda r: r.try_index) for rows in _by_case(results).values()]
    for rows in grouped:
        if rows[0].try_index != 0:
            raise DataError(f"case {rows[0].case_id!r} has no primary answer (try 0) among its results")
    return grouped


def strata_rows(results: Sequence[CaseResult], level: float = 0.95, n_tries: int = 0) -> list[dict[str, Any]]:
    """Accuracy per human-difficulty stratum (cases without ``human_correct`` are in none; count
    them with :func:`summarize`'s ``n_without_human_value``)."""
    cases = _primary_first(results)
    rows = []
    for index, (low, high) in enumerate(zip(STRATA_EDGES[:-1], STRATA_EDGES[1:])):
        members = [c for c in cases if c[0].human_correct is not None and stratum_of(c[0].human_correct) == index]
        closing = "]" if index == len(STRATA_EDGES) - 2 else ")"
        row: dict[str, Any] = {"stratum": f"[{low:.1f}, {high:.1f}{closing}", "low": low, "high": high}
        row.update(_group_row(members, n_tries, level))
        row["human_mean"] = float(np.mean([c[0].human_correct for c in members])) if members else None
        rows.append(row)
    return rows


def specialty_rows(results: Sequence[CaseResult], level: float = 0.95, n_tries: int = 0) -> list[dict[str, Any]]:
    """Accuracy per specialty, for the cases that name one, alphabetical."""
    cases = _primary_first(results)
    rows = []
    for specialty in sorted({c[0].specialty for c in cases if c[0].specialty}):
        row: dict[str, Any] = {"specialty": specialty}
        row.update(_group_row([c for c in cases if c[0].specialty == specialty], n_tries, level))
        rows.append(row)
    return rows


def summarize(results: Sequence[CaseResult], *, model: str, method: str, n_shots: int,
              level: float = 0.95, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``mcq_results.json`` document for a run.

    The headline accuracy, strata and specialties are the primary answer's (try 0: greedy
    decoding or the log-likelihood argmax). With sampled tries (1..n), ``correct_within_n`` gives
    the share of cases answered correctly in at least one of the sampled tries 1..m for each m,
    and every stratum and specialty row carries ``within_n`` for m = n.
    """
    cases = _primary_first(results)
    primary = [rows[0] for rows in cases]
    n_tries = max((r.try_index for r in results), default=0)
    overall = accuracy_row([r.correct for r in primary], level)
    summary: dict[str, Any] = {
        "model": model,
        "method": method,
        "n_cases": overall["n"],
        "n_shots": n_shots,
        "accuracy": overall["accuracy"],
        "ci_low": overall["ci_low"],
        "ci_high": overall["ci_high"],
        "ci_level": level,
        "n_unparseable": sum(r.parsed_index is None for r in primary),
        "parse_methods": dict(Counter(r.parse_method for r in primary)),
        "n_tries": n_tries,
    }
    if n_tries:
        summary["correct_within_n"] = {str(m): accuracy_row([within_n(rows, m) for rows in cases], level)
                                       for m in range(1, n_tries + 1)}
        sampled = [r for r in results if r.try_index > 0]
        summary["n_unparseable_sampled"] = sum(r.parsed_index is None for r in sampled)
        summary["parse_methods_sampled"] = dict(Counter(r.parse_method for r in sampled))
    summary["strata"] = strata_rows(results, level, n_tries)
    summary["n_without_human_value"] = sum(r.human_correct is None for r in primary)
    summary["per_specialty"] = specialty_rows(results, level, n_tries)
    summary["n_without_specialty"] = sum(not r.specialty for r in primary)
    summary["study_reference"] = {key: {**value, "accuracy": value["k"] / value["n"]}
                                  for key, value in STUDY_REFERENCE.items()}
    if extra:
        summary.update(extra)
    return summary


def _study(key: str) -> str:
    k, n = STUDY_REFERENCE[key]["k"], STUDY_REFERENCE[key]["n"]
    return f"{k / n:.1%}, {k}/{n}"


def headline(summary: dict[str, Any]) -> list[str]:
    """What the CLI prints: the primary accuracy, correct within n tries, order robustness."""
    def pct(row: dict[str, Any]) -> str:
        return (f"{row['accuracy']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]" if row.get("accuracy") is not None
                else "n/a")

    lines = [f"{summary['model']} ({summary['method']}, {summary.get('prompt_style', '?')} prompt): primary "
             f"{pct(summary)} on {summary['n_cases']} cases; {summary['n_unparseable']} unparseable "
             f"(study: {_study('primary')})"]
    n = summary.get("n_tries") or 0
    if n:
        lines.append(f"correct within {n} sampled tries: {pct(summary['correct_within_n'][str(n)])} "
                     f"(study, within 3: {_study('within_3')})")
    robust = summary.get("order_robustness") or {}
    if "option_order" in robust:
        block = robust["option_order"]
        lines.append(f"options permuted ({block['permutations']} orders): {block['accuracy_mean']:.1%} "
                     f"± {block['accuracy_sd']:.1%}; answer changed in {block['share_changed_any']:.1%} of cases")
    if "shots_swapped" in robust:
        block = robust["shots_swapped"]
        lines.append(f"shots swapped: {pct(block)}; answer changed in {block['share_changed']:.1%} of cases")
    return lines


CSV_COLUMNS = ["case_id", "method", "try", "decoding", "seed", "raw_answer", "parsed_index", "parsed_option",
               "parse_method",
               "correct_index", "correct_option", "correct", "explanation", "human_correct", "specialty",
               "logprob_sum", "n_tokens", "logprob_mean"]


def write_cases_csv(path: Path, results: Sequence[CaseResult]) -> None:
    """Every answer, one row each; per-option scores as JSON lists (empty for generation)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({
            "case_id": r.case_id, "method": r.method, "try": r.try_index, "decoding": r.decoding, "seed": r.seed,
            "raw_answer": r.raw_answer, "parsed_index": r.parsed_index, "parsed_option": r.parsed_option,
            "parse_method": r.parse_method, "correct_index": r.correct_index,
            "correct_option": r.correct_option, "correct": r.correct, "explanation": r.explanation,
            "human_correct": r.human_correct, "specialty": r.specialty,
            **{key: json.dumps(getattr(r, key)) if getattr(r, key) else ""
               for key in ("logprob_sum", "n_tokens", "logprob_mean")},
        })
    atomic_write_text(path, buffer.getvalue())


def write_outputs(out_dir: Path, results: Sequence[CaseResult], summary: dict[str, Any], chance: float) -> None:
    """CSV, JSON and figure, each written atomically so a crash never leaves half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_cases_csv(out_dir / CASES_CSV, results)
    from medprobe.mcq.figure import plot_strata

    plot_strata(summary, out_dir / FIGURE_STEM, chance)
    atomic_write_json(out_dir / RESULTS_JSON, summary)
