"""Report sections that say how uncertain the numbers are: resampling unit, calibration,
subgroups, per-class results, label efficiency and the statistics warnings of a run.

A CI means little without what was resampled: with several images per patient, resampling
images treats them as independent and gives intervals that are too narrow, so every table that
shows a CI here states the unit and the number of units beside it (from ``run.json``'s
``statistics``, else from the rows' ``bootstrap_unit`` / ``n_units``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medprobe.report.blocks import Block, Header, Paragraph, Part, Section, cell, make_table, paragraph_block, parts, \
    table_block
from medprobe.report.figures.style import metric_label
from medprobe.report.format import fmt3, fmt_fraction, fmt_value_ci, num
from medprobe.report.load import RunData, as_float, group_metrics

UNIT_NAMES = {"patient": ("patient", "patients"), "image": ("image", "images")}


def _first(values: Any) -> Any:
    for value in values:
        if value is not None and value == value:
            return value
    return None


def resampling(data: RunData) -> dict[str, Any]:
    """``bootstrap_unit``, ``n_units``, ``n_bootstrap``, ``bootstrap_unit_requested`` of the run;
    keys the run did not record are None (a run from before they were written)."""
    stats = data.run.get("statistics") if isinstance(data.run.get("statistics"), dict) else {}
    rows = data.results[~data.results["metric"].str.contains("@", regex=False)]
    unit = stats.get("bootstrap_unit") or (_first(rows["bootstrap_unit"]) if "bootstrap_unit" in rows else None)
    n_units = stats.get("n_units") or (_first(rows["n_units"]) if "n_units" in rows else None)
    return {"bootstrap_unit": unit, "n_units": as_float(n_units),
            "n_bootstrap": stats.get("n_bootstrap") or data.run.get("n_bootstrap"),
            "bootstrap_unit_requested": stats.get("bootstrap_unit_requested")}


def unit_phrase(unit: Any, n_units: Any) -> str:
    """'25 patients', '75 images', or 'the test images' when the count is unknown."""
    singular, plural = UNIT_NAMES.get(str(unit), ("test sample", "test samples"))
    count = as_float(n_units)
    if count is None:
        return f"the {plural}" if unit else "the test samples (resampling unit not recorded)"
    return f"{int(count):,} {singular if int(count) == 1 else plural}"


def resampling_statement(data: RunData) -> str:
    """'95 % CI: percentile bootstrap over 25 patients (1,000 replicates)', plus why when it matters."""
    facts = resampling(data)
    n_boot = as_float(facts["n_bootstrap"])
    text = (f"95 % CI: percentile bootstrap over {unit_phrase(facts['bootstrap_unit'], facts['n_units'])}"
            + (f" ({int(n_boot):,} replicates)" if n_boot is not None else ""))
    if facts["bootstrap_unit"] == "patient":
        text += "; all images of a drawn patient enter the replicate together"
    elif facts["bootstrap_unit"] == "image" and facts["bootstrap_unit_requested"] == "image":
        text += ("; image-level resampling was requested (stats.bootstrap_unit: image), which treats images "
                 "of one patient as independent")
    elif facts["bootstrap_unit"] == "image" and facts["bootstrap_unit_requested"] == "patient":
        text += "; no test patient has several images (or the data has no patient ids), so images are the unit"
    return text + "."


def statistics_warnings(data: RunData) -> list[str]:
    """Warnings the run recorded (e.g. a selected probe that did not converge), and any selected
    row flagged ``converged: false`` that the list does not already name."""
    stats = data.run.get("statistics") if isinstance(data.run.get("statistics"), dict) else {}
    warnings = [str(w) for w in stats.get("warnings") or []]
    if "converged" in data.results.columns:
        rows = data.selected()
        for row in rows[rows["converged"].map(is_false)].itertuples(index=False):  # not NaN: old rows
            text = (f"selected probe did not converge: {row.backbone} layer {row.layer} (train fraction "
                    f"{row.train_fraction}, seed {row.seed}")
            if not any(text in w for w in warnings):
                warnings.append(text + ")")
    return warnings


def warnings_block(data: RunData) -> Block | None:
    """The statistics warnings as one block, or None when there are none."""
    warnings = statistics_warnings(data)
    if not warnings:
        return None
    return paragraph_block(*(Paragraph("Warning: " + w, "note warn") for w in warnings),
                           heading=f"Statistics warnings ({len(warnings)})")


def field_of(row: Any, name: str) -> Any:
    """``name`` of a row given as a named tuple or a pandas Series / dict; None when absent or NaN."""
    value = row.get(name) if hasattr(row, "get") else getattr(row, name, None)
    return None if isinstance(value, float) and value != value else value


def is_false(value: Any) -> bool:
    """A recorded ``false`` (Python or numpy bool); a missing flag (older runs, NaN) is not one."""
    return isinstance(value, (bool, np.bool_)) and not bool(value)


def not_converged(row: Any) -> bool:
    return is_false(field_of(row, "converged"))


# --------------------------------------------------------------------------- calibration
def calibration_section(data: RunData) -> Section | None:
    """The report's calibration section (ECE of each selected probe), or None when the run has none."""
    rows = data.results[(data.results["metric"] == "ece") & data.results["selected"]]
    if rows.empty:
        return None
    body = []
    for row in rows.itertuples(index=False):
        bins = getattr(row, "reliability", None)
        filled = (sum(1 for b in bins if isinstance(b, dict) and (b.get("n") or 0) > 0)
                  if isinstance(bins, list) else None)
        n_bins = as_float(getattr(row, "n_bins", None))
        body.append([row.backbone, cell(row.layer, "code"), num(fmt_fraction(row.train_fraction), row.train_fraction),
                     num(str(row.seed), row.seed), num(fmt_value_ci(row.value, row.ci_low, row.ci_high), row.value),
                     getattr(row, "calibrated", None) or "—",
                     num("n/a" if n_bins is None else f"{filled}/{int(n_bins)}" if filled is not None
                         else str(int(n_bins)), n_bins),
                     num(str(row.n_test), row.n_test)])
    intro = [Paragraph("Expected calibration error (ECE) of each selected probe: the mean absolute gap between "
                       "predicted probability and observed frequency over equal-width probability bins, weighted "
                       "by the images in each bin (0 = perfectly calibrated). " + resampling_statement(data), "muted")]
    headers = ["backbone", "selected layer", Header("train fraction", True), Header("seed", True),
               Header("ECE [95% CI]", True), "what is calibrated", Header("bins used", True),
               Header("n_test", True)]
    table = make_table(headers, body, table_id="calibration", sortable=True, scroll=len(body) > 30)
    return Section("calibration", "Calibration", "Calibration", [table_block(table, before=intro)])


# --------------------------------------------------------------------------- subgroups
def subgroups_section(data: RunData) -> Section | None:
    """The report's subgroup section (metrics per group column value), or None when none was asked for."""
    metrics = group_metrics(data)
    if not metrics:
        return None
    frame = data.results
    rows = frame[frame["selected"] & frame["metric"].isin(list(metrics.values()))]
    label = metric_label(data.task_metric, data.task_type)
    body = []
    for row in rows.itertuples(index=False):
        column = getattr(row, "group_column", None)
        group = getattr(row, "group", None)
        if not isinstance(group, str):
            group = row.metric.partition("@")[2]
        unit = getattr(row, "bootstrap_unit", None)
        body.append([cell(column if isinstance(column, str) else None, "code"), group, row.backbone,
                     cell(row.layer, "code"), num(fmt_fraction(row.train_fraction), row.train_fraction),
                     num(str(row.seed), row.seed), num(fmt_value_ci(row.value, row.ci_low, row.ci_high), row.value),
                     num(str(row.n_test), row.n_test),
                     num(unit_phrase(unit, getattr(row, "n_units", None)) if isinstance(unit, str) else "n/a",
                         getattr(row, "n_units", None))])
    intro = [Paragraph(f"Test {label} of the selected layer within each subgroup of the test set, with a 95 % "
                       "percentile-bootstrap CI that resamples within the group (the unit and count per row). "
                       "Groups are small, so their CIs are wide; a difference between groups needs its own test.",
                       "muted")]
    headers = ["column", "group", "backbone", "selected layer", Header("train fraction", True), Header("seed", True),
               Header(f"{label} [95% CI]", True), Header("images", True), Header("resampled over", True)]
    table = make_table(headers, body, table_id="subgroups", sortable=True, scroll=len(body) > 30)
    return Section("subgroups", "Subgroups", "Subgroups", [table_block(table, before=intro)])


# --------------------------------------------------------------------------- per class
def per_class_section(data: RunData) -> Section | None:
    """Per-class AUROC and F1 (class vs rest) of each backbone's selected layer at the largest fraction.

    Binary tasks show only F1 per class: their per-class AUROCs equal the headline AUROC."""
    families = [f for f in ("auc", "f1") if not (f == "auc" and data.task_type == "binary")]
    present = set(data.results["metric"])
    families = [f for f in families if any(f"{f}[{c}]" in present for c in data.classes)]
    if not families:
        return None
    fraction = data.full_fraction
    rows = data.results
    body = []
    for backbone, layer, seed in data.reference_probes():
        fit = rows[(rows["backbone"] == backbone) & (rows["layer"] == layer) & (rows["train_fraction"] == fraction)
                   & (rows["seed"] == seed)].drop_duplicates("metric").set_index("metric")
        for name in data.classes:
            values = []
            for family in families:
                metric = f"{family}[{name}]"
                if metric in fit.index:
                    r = fit.loc[metric]
                    values.append(num(fmt_value_ci(r["value"], r["ci_low"], r["ci_high"]), r["value"]))
                else:
                    values.append(num("n/a", None))
            body.append([backbone, cell(layer, "code"), cell(name, "code"), *values])
    names = {"auc": "AUROC", "f1": "F1"}
    headers = ["backbone", "selected layer", "class",
               *(Header(f"{names[f]} (class vs rest) [95% CI]", True) for f in families)]
    intro = [Paragraph(f"Per-class results of each backbone's validation-selected layer at train fraction "
                       f"{fraction:g} (first seed). " + resampling_statement(data), "muted")]
    table = make_table(headers, body, table_id="per-class", sortable=True, scroll=len(body) > 30)
    return Section("per-class", "Per-class results", "Per class", [table_block(table, before=intro)])


# --------------------------------------------------------------------------- label efficiency
def label_efficiency_rows(data: RunData) -> list[dict[str, Any]]:
    """run.json's label-efficiency summary, or the same summary computed from the selected rows
    (mean and SD over seeds, ddof=1, undefined for one seed; training sizes when the rows have them)."""
    stored = data.run.get("label_efficiency")
    if isinstance(stored, list) and stored:
        return [row for row in stored if isinstance(row, dict)]
    selected = data.selected()
    if selected["train_fraction"].nunique() < 2:
        return []
    rows = []
    for backbone in data.backbones:
        part = selected[selected["backbone"] == backbone]
        full = part[part["train_fraction"] == part["train_fraction"].max()]["value"].mean()
        for fraction, at in part.groupby("train_fraction"):
            mean = at["value"].mean()
            entry = {"backbone": backbone, "train_fraction": float(fraction), "value_mean": mean,
                     "value_sd": at["value"].std(ddof=1) if len(at) > 1 else None, "n_seeds": len(at),
                     "fraction_of_full": mean / full if full else None}
            for size in ("n_train", "n_val"):
                if size in at.columns:
                    entry[size] = [as_float(n) for n in at[size]]
            rows.append(entry)
    return rows


def _sizes(values: Any) -> tuple[str, float | None]:
    """A per-seed list of sizes as '39' or '38–40' (and the mean to sort by); 'n/a' when unknown."""
    known = [v for v in (as_float(x) for x in (values if isinstance(values, list) else [values])) if v is not None]
    if not known:
        return "n/a", None
    low, high = int(min(known)), int(max(known))
    return (str(low) if low == high else f"{low}–{high}"), sum(known) / len(known)


def _ratio(value: Any, low: Any, high: Any) -> str:
    number = as_float(value)
    if number is None:
        return "n/a"
    text = f"{number:.1%}"
    if as_float(low) is not None and as_float(high) is not None:
        text += f" [{as_float(low):.1%}, {as_float(high):.1%}]"
    return text


def label_efficiency_section(data: RunData) -> Section:
    """The report's label-efficiency section: the metric at each train fraction over seeds."""
    rows = label_efficiency_rows(data)
    if not rows:
        return Section("label-efficiency", "Label efficiency", "Label efficiency",
                       [paragraph_block(Paragraph("none: the run used a single train fraction.", "muted"))])
    chance = any(as_float(r.get("chance_corrected_ratio")) is not None for r in rows)
    body = []
    for row in rows:
        n_train, train_sort = _sizes(row.get("n_train"))
        n_val, val_sort = _sizes(row.get("n_val"))
        # one seed has no spread: older runs stored 0 there, which would read as "no variation"
        sd = as_float(row.get("value_sd")) if as_float(row.get("n_seeds")) != 1 else None
        mean = fmt3(row.get("value_mean"))
        cells = [row.get("backbone"), num(fmt_fraction(row.get("train_fraction")), row.get("train_fraction")),
                 num(str(row.get("n_seeds", "—")), row.get("n_seeds")), num(n_train, train_sort),
                 num(n_val, val_sort),
                 num(f"{mean} ± {'n/a' if sd is None else fmt3(sd)}", row.get("value_mean")),
                 num(_ratio(row.get("fraction_of_full"), row.get("fraction_of_full_ci_low"),
                            row.get("fraction_of_full_ci_high")), row.get("fraction_of_full"))]
        if chance:
            cells.append(num(_ratio(row.get("chance_corrected_ratio"), row.get("chance_corrected_ci_low"),
                                    row.get("chance_corrected_ci_high")), row.get("chance_corrected_ratio")))
        body.append(cells)
    label = metric_label(data.task_metric, data.task_type)
    method = next((str(r["ratio_ci_method"]) for r in rows if r.get("ratio_ci_method")), None)
    text = (f"Mean ± SD over seeds (SD with ddof = 1; n/a with one seed) of the selected layer's test {label} per "
            "share of training labels; training and validation images actually used per fit (after the "
            "one-image-per-class top-up; a range when seeds differ); and the mean as a share of the full-data "
            "value")
    text += (", raw and chance-corrected ((AUROC − 0.5) / (full AUROC − 0.5))." if chance else ".")
    if method:
        text += (f" CIs of the shares: {method}, so they hold both the test-set and the seed-to-seed variation; "
                 + resampling_statement(data))
    headers = ["backbone", Header("train fraction", True), Header("seeds", True), Header("n_train", True),
               Header("n_val", True), Header(f"{label} mean ± SD", True), Header("share of full [95% CI]", True)]
    if chance:
        headers.append(Header("chance-corrected share [95% CI]", True))
    table = make_table(headers, body, table_id="label-efficiency", sortable=True)
    return Section("label-efficiency", "Label efficiency", "Label efficiency",
                   [table_block(table, before=[Paragraph(text, "muted")])])


def val_score_note(data: RunData) -> str:
    """Why the validation score is not an estimate of performance."""
    probe = data.run.get("probe") if isinstance(data.run.get("probe"), dict) else {}
    n_cs = len(probe.get("Cs") or []) or None
    layers = max((len(data.layers(b)) for b in data.backbones), default=0)
    grid = f"{n_cs} C values × {layers} layer(s)" if n_cs else f"the C values × {layers} layer(s)"
    return (f"The validation score is the best of the grid of {grid} it chose from, so it is optimistic; only the "
            "test value of the chosen probe estimates performance. Headline tables show only these "
            "validation-selected probes; test values of the other layers appear in the layer-sweep figure and in "
            "'All results', as analysis.")


def tie_parts(row: Any) -> tuple[Part, ...]:
    """'tie on validation' parts for a row that records one (``val_tie`` / ``tied_layers``), else none."""
    tied = field_of(row, "tied_layers")
    flag = field_of(row, "val_tie")
    if isinstance(tied, (list, tuple)) and len(tied) > 1:
        return (Part(f"tie on validation with {', '.join(str(t) for t in tied)}; first listed kept", "muted",
                     break_before=True),)
    if isinstance(flag, (bool, np.bool_)) and flag:
        return (Part("tie on validation; first listed kept", "muted", break_before=True),)
    return ()


def layer_cell_parts(row: Any) -> Any:
    """The selected layer as code, flagged when its probe did not converge or tied on validation."""
    items = [Part(field_of(row, "layer"), "code")]
    if not_converged(row):
        items.append(Part("not converged", "warn", break_before=True))
    items.extend(tie_parts(row))
    return parts(*items)


__all__ = ["resampling_statement", "calibration_section", "subgroups_section", "per_class_section",
           "label_efficiency_section", "label_efficiency_rows", "warnings_block", "val_score_note"]
