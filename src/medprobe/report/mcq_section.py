"""The report's multiple-choice section, read from ``mcq_results.json`` / ``mcq_cases.csv``.

Every key is optional: MCQ outputs come from a separate experiment (``medprobe mcq``) and may be
partial or from an older version. What it shows when present: the primary answer's accuracy and
"correct within n tries" (seeded sampling) with Wilson CIs, overall, per difficulty stratum and
per specialty; how many cases had no human value (they are in no stratum) or no specialty; the
order-robustness check (options permuted, shots swapped); the prompt style; and the study's
published numbers beside them.
"""

from __future__ import annotations

from typing import Any

from medprobe.report.blocks import Header, Paragraph, Section, make_table, paragraph_block, table_block
from medprobe.report.format import fmt_value_ci, num
from medprobe.report.load import RunData, as_float

MCQ_CASE_COLUMNS = ("case_id", "method", "try", "parsed_option", "correct_option", "correct", "parse_method",
                    "human_correct", "specialty", "raw_answer")


def _clip(text: str, limit: int) -> str:
    """Shorten long model output for a table cell; the CSV keeps the full text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(value: Any) -> Any:
    return num(str(value) if value is not None else "—", value)


def _accuracy(row: Any) -> Any:
    row = row if isinstance(row, dict) else {}
    return num(fmt_value_ci(row.get("accuracy"), row.get("ci_low"), row.get("ci_high")), row.get("accuracy"))


def _n_tries(item: dict[str, Any]) -> int:
    return int(as_float(item.get("n_tries")) or 0)


def _within(item: dict[str, Any]) -> dict[str, Any] | None:
    """The overall "correct within n tries" row for the summary's n, if it sampled answers."""
    n = _n_tries(item)
    table = item.get("correct_within_n")
    return table.get(str(n)) if n and isinstance(table, dict) and isinstance(table.get(str(n)), dict) else None


def _percent(value: Any) -> str:
    number = as_float(value)
    return "n/a" if number is None else f"{number:.1%}"


def summary_block(summaries: list[dict[str, Any]]) -> Any:
    sampled = any(_n_tries(item) for item in summaries)
    body = []
    for item in summaries:
        row = [item.get("model"), item.get("method"), item.get("prompt_style") or "—", _count(item.get("n_cases")),
               _count(item.get("n_shots")), _accuracy(item)]
        if sampled:
            within = _within(item)
            row += [_count(_n_tries(item) or None), _accuracy(within) if within else num("—", None)]
        row += [_count(item.get("n_unparseable")), _count(item.get("n_without_human_value"))]
        body.append(row)
    headers = ["model", "method", "prompt style", Header("cases", True), Header("shots", True),
               Header("primary accuracy [95% CI]", True)]
    if sampled:
        headers += [Header("tries", True), Header("correct within n tries [95% CI]", True)]
    headers += [Header("unparseable answers", True), Header("cases without a human value", True)]
    return table_block(make_table(headers, body, table_id="mcq"), before=[Paragraph(
        "Primary: the greedy answer (generation) or the best-scored option (log-likelihood). Correct within n "
        "tries: at least one of n answers sampled with per-case seeds is correct. CIs: Wilson score intervals "
        "over cases. An unparseable answer (none, or several options named) counts as wrong.", "muted")])


def reference_block(summaries: list[dict[str, Any]]) -> Any | None:
    reference = next((item["study_reference"] for item in summaries if isinstance(item.get("study_reference"), dict)),
                     None)
    if not reference:
        return None
    names = {"primary": "primary answer", "within_3": "correct within three tries"}
    lines = []
    for key, value in reference.items():
        if isinstance(value, dict) and as_float(value.get("k")) is not None and as_float(value.get("n")):
            k, n = int(value["k"]), int(value["n"])
            lines.append(f"{names.get(key, key)}: {k / n:.1%} ({k} / {n})")
    if not lines:
        return None
    return paragraph_block(Paragraph("Study (Han et al., IDEFICS-80B-instruct on the NEJM Image Challenge): "
                                     + "; ".join(lines) + ".", "muted"), heading="Published reference")


def _group_rows(rows: list[dict[str, Any]], key: str, sampled: bool, human: bool) -> list[list[Any]]:
    body = []
    for s in rows:
        row = [s.get(key), _count(s.get("n")), _accuracy(s)]
        if sampled:
            row.append(_accuracy(s.get("within_n")) if isinstance(s.get("within_n"), dict) else num("—", None))
        if human:
            row.append(num(_percent(s.get("human_mean")), s.get("human_mean")))
        body.append(row)
    return body


def group_blocks(item: dict[str, Any]) -> list[Any]:
    name = item.get("model") or "model"
    n = _n_tries(item)
    blocks = []
    within = [Header(f"within {n} tries [95% CI]", True)] if n else []
    strata = [s for s in item.get("strata") or [] if isinstance(s, dict)]
    if strata:
        missing = item.get("n_without_human_value")
        after = ([Paragraph(f"{missing} case(s) had no human-percent value and are in no stratum (they count in the "
                            "overall accuracy).", "note")] if missing else [])
        headers = ["stratum (share of human readers correct)", Header("cases", True),
                   Header("primary [95% CI]", True), *within, Header("human mean", True)]
        blocks.append(table_block(make_table(headers, _group_rows(strata, "stratum", bool(n), True)),
                                  heading=f"{name}: accuracy by difficulty stratum", after=after))
    specialties = [s for s in item.get("per_specialty") or [] if isinstance(s, dict)]
    if specialties:
        missing = item.get("n_without_specialty")
        after = [Paragraph(f"{missing} case(s) name no specialty.", "muted")] if missing else []
        headers = ["specialty", Header("cases", True), Header("primary [95% CI]", True), *within]
        blocks.append(table_block(make_table(headers, _group_rows(specialties, "specialty", bool(n), False),
                                             sortable=True),
                                  heading=f"{name}: accuracy by specialty", after=after))
    robust = item.get("order_robustness")
    if isinstance(robust, dict):
        blocks.append(robustness_block(name, robust))
    return blocks


def robustness_block(name: str, robust: dict[str, Any]) -> Any:
    """Accuracy when the options are permuted / the shots swapped, and how many answers change:
    a model that answers by position is not diagnosing."""
    body = [["original order", _count(robust.get("n_cases")),
             num(_percent(robust.get("original_accuracy")), robust.get("original_accuracy")), num("—", None)]]
    options = robust.get("option_order")
    if isinstance(options, dict):
        mean, sd = as_float(options.get("accuracy_mean")), as_float(options.get("accuracy_sd"))
        text = "n/a" if mean is None else f"{mean:.1%} ± {'n/a' if sd is None else f'{sd:.1%}'}"
        low, high = as_float(options.get("accuracy_min")), as_float(options.get("accuracy_max"))
        if low is not None and high is not None:
            text += f" (range {low:.1%}–{high:.1%})"
        body.append([f"options permuted ({options.get('permutations', '?')} seeded orders; mean ± SD)",
                     _count(robust.get("n_cases")), num(text, mean),
                     num(_percent(options.get("share_changed_any")), options.get("share_changed_any"))])
    shots = robust.get("shots_swapped")
    if isinstance(shots, dict):
        body.append(["the two shots swapped", _count(shots.get("n")), _accuracy(shots),
                     num(_percent(shots.get("share_changed")), shots.get("share_changed"))])
    headers = ["variant", Header("cases", True), Header("accuracy", True),
               Header("cases whose answer changed", True)]
    return table_block(make_table(headers, body, table_id="mcq-robustness"),
                       heading=f"{name}: order robustness", before=[Paragraph(
                           "The same cases with the options in other orders and with the shots swapped. A model "
                           "that diagnoses should keep its answers; many changed answers mean it answers partly "
                           "by position.", "muted")])


def mcq_section(data: RunData) -> Section:
    """The report's multiple-choice section: summary, study reference, groups and the case table."""
    blocks: list[Any] = []
    if data.mcq:
        blocks.append(summary_block(data.mcq))
        reference = reference_block(data.mcq)
        if reference is not None:
            blocks.append(reference)
    for item in data.mcq:
        blocks.extend(group_blocks(item))
    if data.mcq_cases:
        columns = [c for c in MCQ_CASE_COLUMNS if c in data.mcq_cases[0]]
        rows = [[_clip(case.get(c) or "", 300) for c in columns] for case in data.mcq_cases]
        blocks.append(table_block(make_table(columns, rows, table_id="mcq-cases", sortable=True, scroll=True),
                                  heading=f"Answers ({len(rows)} rows of mcq_cases.csv)"))
    return Section("mcq", "Multiple-choice questions", "MCQ", blocks)


__all__ = ["mcq_section"]
