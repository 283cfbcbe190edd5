"""The report's operating-points table: thresholds chosen on validation, what they give on test.

Its rows are ``operating_points.json``'s (:attr:`RunData.operating_points`; runs made before
medprobe wrote it, and multi-class runs, have no such section). The table says plainly where each number comes
from: the threshold and its validation sensitivity / specificity from the validation split, the
four test measures with the run's bootstrap CIs from the test split.
"""

from __future__ import annotations

from typing import Any

from medprobe.report.blocks import Header, Paragraph, Section, cell, make_table, table_block
from medprobe.report.format import fmt3, fmt_fraction, fmt_value_ci, num
from medprobe.report.load import RunData
from medprobe.report.stats_sections import resampling_statement

MEASURES = ("sensitivity", "specificity", "ppv", "npv")
LABELS = {"sensitivity": "test sensitivity", "specificity": "test specificity", "ppv": "test PPV", "npv": "test NPV"}


def _measure(summary: Any) -> Any:
    if not isinstance(summary, dict):
        return cell(None)
    return num(fmt_value_ci(summary.get("value"), summary.get("ci_low"), summary.get("ci_high")), summary.get("value"))


def operating_points_section(data: RunData) -> Section | None:
    """One row per selected probe x finding x operating point (see the module docstring)."""
    if not data.operating_points:
        return None
    body = []
    for row in data.operating_points:
        test = row.get("test") or {}
        body.append([row.get("backbone"), cell(row.get("layer"), "code"),
                     num(fmt_fraction(row.get("train_fraction")), row.get("train_fraction")),
                     num(str(row.get("seed")), row.get("seed")), row.get("finding"),
                     cell(row.get("operating_point"), "code"), num(fmt3(row.get("threshold")), row.get("threshold")),
                     num(f"{fmt3(row.get('val_sensitivity'))} / {fmt3(row.get('val_specificity'))}",
                         row.get("val_sensitivity")),
                     *(_measure(test.get(measure)) for measure in MEASURES)])
    intro = [Paragraph(
        "Thresholds for clinical use, chosen on the validation split only: Youden's optimum (largest sensitivity "
        "+ specificity - 1), the most specific threshold reaching each sensitivity level (sens90: 0.90) and the "
        "most sensitive one reaching each specificity level (stats.operating_points). An image is called "
        "positive when its probability is at least the threshold. The test columns apply that threshold "
        "unchanged to the test split. " + resampling_statement(data)
        + " medprobe predict --threshold NAME applies the same thresholds to new images.", "muted")]
    headers = ["backbone", "selected layer", Header("train fraction", True), Header("seed", True), "finding",
               "operating point", Header("threshold", True), Header("val sens / spec", True),
               *(Header(f"{LABELS[measure]} [95% CI]", True) for measure in MEASURES)]
    table = make_table(headers, body, table_id="operating-points", sortable=True, scroll=len(body) > 30)
    return Section("operating-points", "Operating points", "Operating points", [table_block(table, before=intro)])


__all__ = ["operating_points_section"]
