"""The report section "Study protocol vs medprobe protocol" (runs with ``probe.protocols``).

It shows, per backbone row, train fraction and seed, the headline metric under medprobe's protocol
(layer and C chosen on validation) and under the study's as it ran (its recipe, trained on every
non-test image, layer picked on test), their paired difference, and how much of it the test-picked
layer alone accounts for -- all from run.json's ``protocol_comparison``
(:mod:`medprobe.stats.protocols`). A run without it has no such section.
"""

from __future__ import annotations

from typing import Any

from medprobe.report.blocks import Paragraph, Section, cell, make_table, table_block
from medprobe.report.figures.style import metric_label
from medprobe.report.format import fmt_fraction, fmt_value_ci, num
from medprobe.report.load import RunData, as_float

PARTS = (("difference", "Study - medprobe"), ("layer_selection_on_test", "Due to the test-picked layer"),
         ("recipe_and_training_images", "Due to recipe and training images"))


def _value_ci(summary: dict[str, Any] | None) -> Any:
    summary = summary or {}
    return num(fmt_value_ci(summary.get("value"), summary.get("ci_low"), summary.get("ci_high")), summary.get("value"))


def _share(value: Any) -> str:
    number = as_float(value)
    return "n/a" if number is None else f"{100 * number + 0.0:.0f} %".replace("-0 %", "0 %")


def protocols_section(data: RunData) -> Section | None:
    """The section, or None when the run did not fit both protocols."""
    rows = data.run.get("protocol_comparison") or []
    if not rows:
        return None
    metric = metric_label(data.task_metric, data.task_type)
    table_rows = [[cell(row.get("backbone")), fmt_fraction(row.get("train_fraction")), cell(row.get("seed")),
                   cell(row.get("medprobe_layer"), "code"), _value_ci(row.get("medprobe")),
                   cell(f"{row.get('study_layer')}, {row.get('study_selection')}"), _value_ci(row.get("study")),
                   *(_value_ci(row.get(key)) for key, _ in PARTS), cell(_share(row.get("selection_share")))]
                  for row in rows]
    headers = ["Backbone", "Train fraction", "Seed", "medprobe layer (validation)", f"medprobe {metric} [95 % CI]",
               "Study layer", f"Study {metric} [95 % CI]", *(f"{title} [95 % CI]" for _, title in PARTS),
               "Share of the difference due to the test-picked layer"]
    recipe = rows[0].get("study_recipe", "study")
    before = [Paragraph(
        f"medprobe's protocol chooses C and the layer on the validation split and never looks at test. The "
        f"study's protocol as its code ran it: the {recipe!r} recipe (raw features, no validation split) trained "
        "on every non-test image, every layer scored on test and the best one reported -- the layer is "
        "selected on test (optimistic). The difference is split into the part the test-picked layer alone "
        "accounts for (the study's probe of the best-on-test layer minus its probe of the layer medprobe picked "
        "on validation) and the rest (the study's recipe and its extra training images, at medprobe's layer); "
        "the two add up to the difference. CIs are percentile intervals of paired differences on the run's "
        "shared bootstrap replicates.")]
    return Section("protocols", "Study protocol vs medprobe protocol", "Protocols",
                   [table_block(make_table(headers, table_rows, table_id="protocols", sortable=True, scroll=True),
                                before=before)])


__all__ = ["protocols_section"]
