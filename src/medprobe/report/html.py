"""One self-contained HTML page per run: summary, tables, figures, provenance and caveats.

The page has to survive being mailed around and opened years later without the run folder or
the network, so everything lives in one file: CSS inline, figures embedded as base64 SVG data
URIs (vector, and each in its own document, so ids inside different SVGs can never clash), and
no external URL. The only script sorts tables on a header click; it is wrapped so it cannot throw,
and the page is complete without it.

All text that comes from files (sample ids, notes, class names, error messages, model output)
passes through :func:`html.escape`: cells are escaped unless built here as :class:`Markup`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

from medprobe.features.cache import atomic_write_bytes
from medprobe.report.figures import FigureSet, metric_label, render_figures
from medprobe.report.load import RunData, as_float, load_run

REPORT_NAME = "report.html"


class Markup(str):
    """HTML built by this module from escaped parts; :func:`esc` leaves it as it is."""


@dataclass(frozen=True)
class Cell:
    """A table cell: shown text (escaped unless Markup), a numeric sort key, and alignment."""

    text: Any
    sort: float | None = None
    numeric: bool = False


def esc(value: Any) -> str:
    """Escape anything that is not already Markup; None shows as an em dash."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return "—"
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------- number formats
def fmt3(value: Any) -> str:
    """Three decimals, the precision the report uses for every metric; 'n/a' when undefined."""
    number = as_float(value)
    return "n/a" if number is None else f"{number:.3f}"


def fmt_ci(low: Any, high: Any) -> str:
    if as_float(low) is None or as_float(high) is None:
        return "n/a"
    return f"[{fmt3(low)}, {fmt3(high)}]"


def fmt_value_ci(value: Any, low: Any, high: Any) -> str:
    """'0.912 [0.889, 0.934]': the form used in the headline table and the paper."""
    ci = fmt_ci(low, high)
    return fmt3(value) if ci == "n/a" else f"{fmt3(value)} {ci}"


def fmt_p(value: Any) -> str:
    number = as_float(value)
    if number is None:
        return "n/a"
    return "< 0.001" if number < 0.001 else f"{number:.3f}"


def fmt_fraction(value: Any) -> str:
    number = as_float(value)
    return "n/a" if number is None else f"{number:g}"


def num(text: str, value: Any) -> Cell:
    """A right-aligned numeric cell sorted by its number (undefined values sort last)."""
    return Cell(text, as_float(value), numeric=True)


# --------------------------------------------------------------------------- building blocks
def table(headers: Sequence[str | Cell], rows: Iterable[Sequence[Any]], *, table_id: str | None = None,
          sortable: bool = False, scroll: bool = False, row_classes: Sequence[str] | None = None) -> Markup:
    """An HTML table; plain values are escaped, Cells carry alignment and a sort key."""
    head = []
    for header in headers:
        cell = header if isinstance(header, Cell) else Cell(header)
        align = ' class="num"' if cell.numeric else ""
        head.append(f'<th scope="col"{align}>{esc(cell.text)}</th>')
    body = []
    for index, row in enumerate(rows):
        cells = []
        for value in row:
            cell = value if isinstance(value, Cell) else Cell(value)
            attributes = ' class="num"' if cell.numeric else ""
            if cell.sort is not None:
                attributes += f' data-sort="{cell.sort!r}"'
            cells.append(f"<td{attributes}>{esc(cell.text)}</td>")
        css = f' class="{esc(row_classes[index])}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    attributes = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    markup = (f"<table{attributes}><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return Markup(f'<div class="scroll">{markup}</div>' if scroll else f'<div class="tablewrap">{markup}</div>')


def facts(items: Sequence[tuple[str, Any]]) -> Markup:
    """A definition list of label/value pairs (values escaped unless Markup)."""
    return Markup('<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>")


def section(anchor: str, title: str, *parts: str) -> Markup:
    return Markup(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>')


def paragraph(text: Any, css: str = "") -> Markup:
    attribute = f' class="{css}"' if css else ""
    return Markup(f"<p{attribute}>{esc(text)}</p>")


def code_list(values: Iterable[Any]) -> Markup:
    return Markup(", ".join(f"<code>{esc(v)}</code>" for v in values) or "—")


def fingerprint_hash(fingerprint: Any) -> str:
    """A short, stable hash of a backbone's fingerprint (weights, config, preprocessing)."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- sections
def _duration(run: dict[str, Any]) -> str | None:
    try:
        start = datetime.fromisoformat(str(run["started"]))
        finish = datetime.fromisoformat(str(run["finished"]))
    except (KeyError, ValueError, TypeError):
        return None
    seconds = (finish - start).total_seconds()
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def summary_section(data: RunData) -> Markup:
    run = data.run
    info = run.get("data") or {}
    n_samples = info.get("n_samples") or {}
    rows = data.results
    seeds = sorted({int(s) for s in rows["seed"].dropna()})
    layers_total = sum(len(data.layers(b)) for b in data.backbones)
    items: list[tuple[str, Any]] = [
        ("Task", run.get("task") or run.get("name")),
        ("Data set", " — ".join(str(x) for x in (info.get("name"), info.get("description")) if x) or None),
        ("Adapter / root", " · ".join(str(x) for x in (info.get("adapter"), info.get("root")) if x) or None),
        ("Task type", data.task_type),
        ("Classes", code_list(data.classes)),
        ("Task metric", metric_label(data.task_metric, data.task_type)),
        ("Samples", " · ".join(f"{split} {n_samples[split]}" for split in ("train", "val", "test")
                               if split in n_samples) or None),
        ("Backbones", ", ".join(data.backbones)),
        ("Layers probed", f"{layers_total} (layer and C chosen on the validation split)"),
        ("Train fractions", ", ".join(fmt_fraction(f) for f in data.fractions)),
        ("Seeds", ", ".join(str(s) for s in seeds)),
        ("Bootstrap replicates", run.get("n_bootstrap")),
        ("Prompt", Markup(f"<code>{esc(run['prompt'])}</code>") if run.get("prompt") else "none (image only)"),
        ("Started", run.get("started")),
        ("Finished", str(run["finished"]) + (f" ({_duration(run)})" if _duration(run) else "")
         if run.get("finished") else None),
    ]
    parts = [facts(items)]
    counts = info.get("class_counts") or {}
    if counts:
        splits = [s for s in ("train", "val", "test") if s in counts] + [s for s in counts if s not in
                                                                          ("train", "val", "test")]
        classes = list(dict.fromkeys([*data.classes, *(c for s in splits for c in (counts[s] or {}))]))
        body = [[c, *(num(str(counts[s].get(c, 0)), counts[s].get(c, 0)) for s in splits)] for c in classes]
        body.append([Markup("<strong>total</strong>"),
                     *(num(str(sum(counts[s].values())), sum(counts[s].values())) for s in splits)])
        note = " (multi-label: a sample counts once per label)" if data.task_type == "multilabel" else ""
        parts += [Markup(f"<h3>Class counts per split{esc(note)}</h3>"),
                  table(["class", *(Cell(s, numeric=True) for s in splits)], body, table_id="class-counts")]
    parts.append(Markup("<h3>Models</h3>"))
    parts.append(models_table(data))
    return section("summary", "Run summary", *parts)


def models_table(data: RunData) -> Markup:
    """Each backbone with what identifies it: fingerprint hash, cache folder, provenance, layers."""
    specs = {str(s.get("label") or s.get("name")): s for s in data.run.get("backbones") or [] if isinstance(s, dict)}
    selected = data.results[data.results["selected"] & (data.results["metric"] == data.task_metric)]
    body = []
    for backbone in data.backbones:
        spec = specs.get(backbone, {})
        layers = [str(layer) for layer in spec.get("layers") or data.layers(backbone)]
        chosen = selected[selected["backbone"] == backbone]["layer"].value_counts()
        chosen_text = Markup("<br>".join(f"<code>{esc(layer)}</code> ({count} of {len(selected[selected['backbone'] == backbone])} fits)"
                                         for layer, count in chosen.items()) or "—")
        fingerprint = spec.get("fingerprint")
        key = spec.get("cache_key")
        identity = Markup(
            (f'<code title="sha256 of the fingerprint">{fingerprint_hash(fingerprint)}</code>' if fingerprint else "—")
            + (f'<br><span class="muted">cache key</span> <code>{esc(key)}</code>' if key else ""))
        body.append([
            Markup(f"<strong>{esc(backbone)}</strong>" + (f'<br><span class="muted">{esc(spec["name"])}</span>'
                                                             if spec.get("name") and spec["name"] != backbone else "")),
            Markup(f'{len(layers)}: <span class="layers">{code_list(layers)}</span>'),
            chosen_text,
            identity,
            Markup(f'<code class="path">{esc(spec.get("cache_dir"))}</code>') if spec.get("cache_dir") else "—",
            spec.get("provenance") or "—",
        ])
    return table(["backbone", "layers probed", "selected layer (task metric)", "fingerprint", "feature cache",
                  "provenance"], body, table_id="models")


def headline_section(data: RunData) -> Markup:
    """Selected-layer task metric per backbone x fraction x seed; the best value per fit is bold."""
    metric = data.task_metric
    rows = data.selected(metric).copy()
    order = {b: i for i, b in enumerate(data.backbones)}
    rows["_order"] = rows["backbone"].map(order)
    rows = rows.sort_values(["train_fraction", "seed", "_order"], ascending=[False, True, True])
    best = rows.groupby(["train_fraction", "seed"])["value"].transform("max")
    body, classes = [], []
    for (_, row), top in zip(rows.iterrows(), best):
        body.append([row["backbone"], Markup(f"<code>{esc(row['layer'])}</code>"),
                     num(fmt_fraction(row["train_fraction"]), row["train_fraction"]),
                     num(str(int(row["seed"])), row["seed"]),
                     num(fmt_value_ci(row["value"], row["ci_low"], row["ci_high"]), row["value"]),
                     num(str(int(row["n_test"])) if as_float(row["n_test"]) is not None else "n/a", row["n_test"]),
                     num(fmt3(row["val_score"]), row["val_score"])])
        several = len(data.backbones) > 1 and as_float(row["value"]) is not None
        classes.append("best" if several and row["value"] == top else "")
    label = metric_label(metric, data.task_type)
    intro = paragraph(f"Test {label} of the layer chosen on the validation split, with its 95% percentile-bootstrap "
                      "CI over test samples. Bold: the best backbone of each train fraction and seed.", "muted")
    headers = ["backbone", "selected layer", Cell("train fraction", numeric=True), Cell("seed", numeric=True),
               Cell(f"{label} [95% CI]", numeric=True), Cell("n_test", numeric=True),
               Cell("validation score", numeric=True)]
    return section("headline", "Headline results", intro,
                   table(headers, body, table_id="headline", sortable=True, scroll=len(body) > 40,
                         row_classes=classes))


def figures_section(figures: FigureSet) -> Markup:
    parts = []
    for number, figure in enumerate(figures.figures, start=1):
        svg = figure.paths["svg"].read_bytes()
        source = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
        parts.append(
            f'<figure id="fig-{esc(figure.name)}"><img src="{source}" alt="{esc(figure.title)}">'
            f"<figcaption><strong>Figure {number}. {esc(figure.title)}.</strong> {esc(figure.caption)}"
            f"</figcaption></figure>")
    if not parts:
        parts.append(paragraph("No figure could be drawn for this run; see the notes below.", "muted"))
    for note in figures.notes:
        parts.append(paragraph(note, "note"))
    return section("figures", "Figures", *parts)


def comparisons_section(data: RunData) -> Markup:
    if not data.comparisons:
        return section("comparisons", "Paired comparisons",
                       paragraph("none: paired tests need at least two backbones.", "muted"))
    body = []
    for c in data.comparisons:
        diff = fmt3(c.get("diff"))
        ci = fmt_ci(c.get("ci_low"), c.get("ci_high"))
        p_value = as_float(c.get("p_value"))
        p_text = fmt_p(p_value)
        body.append([
            c.get("metric"), num(fmt_fraction(c.get("train_fraction")), c.get("train_fraction")),
            num(str(c.get("seed")), c.get("seed")),
            Markup(f"{esc(c.get('backbone_a'))} <code>{esc(c.get('layer_a'))}</code>"),
            Markup(f"{esc(c.get('backbone_b'))} <code>{esc(c.get('layer_b'))}</code>"),
            {"paired_bootstrap": "paired bootstrap", "delong": "DeLong"}.get(str(c.get("test")), c.get("test")),
            num(diff if ci == "n/a" else f"{diff} {ci}", c.get("diff")),
            num(Markup(f"<strong>{esc(p_text)}</strong>") if p_value is not None and p_value < 0.05 else p_text,
                p_value),
        ])
    intro = paragraph("Difference A − B on the same test samples (paired bootstrap: same replicates for both; "
                      "DeLong: AUROC of a binary task). p-values are two-sided and not adjusted for multiple "
                      "comparisons; bold: p < 0.05.", "muted")
    headers = ["metric", Cell("train fraction", numeric=True), Cell("seed", numeric=True), "A", "B", "test",
               Cell("A − B [95% CI]", numeric=True), Cell("p-value", numeric=True)]
    return section("comparisons", "Paired comparisons", intro,
                   table(headers, body, table_id="comparisons", sortable=True))


def label_efficiency_rows(data: RunData) -> list[dict[str, Any]]:
    """run.json's label-efficiency summary, or the same summary computed from the selected rows."""
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
            rows.append({"backbone": backbone, "train_fraction": float(fraction), "value_mean": mean,
                         "value_sd": at["value"].std(ddof=0), "n_seeds": len(at),
                         "fraction_of_full": mean / full if full else None})
    return rows


def label_efficiency_section(data: RunData) -> Markup:
    rows = label_efficiency_rows(data)
    if not rows:
        return section("label-efficiency", "Label efficiency",
                       paragraph("none: the run used a single train fraction.", "muted"))
    body = []
    for row in rows:
        share = as_float(row.get("fraction_of_full"))
        body.append([row.get("backbone"), num(fmt_fraction(row.get("train_fraction")), row.get("train_fraction")),
                     num(str(row.get("n_seeds", "—")), row.get("n_seeds")),
                     num(fmt3(row.get("value_mean")) if row.get("n_seeds") == 1
                         else f"{fmt3(row.get('value_mean'))} ± {fmt3(row.get('value_sd'))}", row.get("value_mean")),
                     num("n/a" if share is None else f"{share:.1%}", share)])
    label = metric_label(data.task_metric, data.task_type)
    intro = paragraph(f"Mean ± SD over seeds of the selected layer's test {label} per share of training labels, "
                      "and that mean as a share of the value with all training labels.", "muted")
    headers = ["backbone", Cell("train fraction", numeric=True), Cell("seeds", numeric=True),
               Cell(f"{label} mean ± SD", numeric=True), Cell("share of full-data value", numeric=True)]
    return section("label-efficiency", "Label efficiency", intro,
                   table(headers, body, table_id="label-efficiency", sortable=True))


MCQ_CASE_COLUMNS = ("case_id", "method", "try", "parsed_option", "correct_option", "correct", "parse_method",
                    "human_correct", "specialty", "raw_answer")


def _clip(text: str, limit: int) -> str:
    """Shorten long model output for a table cell; the CSV keeps the full text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mcq_section(data: RunData) -> Markup:
    """The optional multiple-choice experiment; every key is optional, as its outputs may be partial."""
    parts = []
    body = []
    for item in data.mcq:
        unparseable = item.get("n_unparseable")
        body.append([item.get("model"), item.get("method"), num(str(item.get("n_cases", "—")), item.get("n_cases")),
                     num(str(item.get("n_shots", "—")), item.get("n_shots")),
                     num(fmt_value_ci(item.get("accuracy"), item.get("ci_low"), item.get("ci_high")),
                         item.get("accuracy")),
                     num(str(unparseable) if unparseable is not None else "—", unparseable)])
    if body:
        parts.append(table(["model", "method", Cell("cases", numeric=True), Cell("shots", numeric=True),
                            Cell("accuracy [95% CI]", numeric=True), Cell("unparseable answers", numeric=True)],
                           body, table_id="mcq"))
    for item in data.mcq:
        name = item.get("model") or "model"
        strata = [s for s in item.get("strata") or [] if isinstance(s, dict)]
        if strata:
            rows = [[s.get("stratum"), num(str(s.get("n", "—")), s.get("n")),
                     num(fmt_value_ci(s.get("accuracy"), s.get("ci_low"), s.get("ci_high")), s.get("accuracy")),
                     num(fmt3(s.get("human_mean")), s.get("human_mean"))] for s in strata]
            parts.append(Markup(f"<h3>{esc(name)}: accuracy by difficulty stratum</h3>"))
            parts.append(table(["stratum (human share correct)", Cell("cases", numeric=True),
                                Cell("accuracy [95% CI]", numeric=True), Cell("human mean", numeric=True)], rows))
        specialties = [s for s in item.get("per_specialty") or [] if isinstance(s, dict)]
        if specialties:
            rows = [[s.get("specialty"), num(str(s.get("n", "—")), s.get("n")),
                     num(fmt_value_ci(s.get("accuracy"), s.get("ci_low"), s.get("ci_high")), s.get("accuracy"))]
                    for s in specialties]
            parts.append(Markup(f"<h3>{esc(name)}: accuracy by specialty</h3>"))
            parts.append(table(["specialty", Cell("cases", numeric=True), Cell("accuracy [95% CI]", numeric=True)],
                               rows, sortable=True))
    if data.mcq_cases:
        columns = [c for c in MCQ_CASE_COLUMNS if c in data.mcq_cases[0]]
        rows = [[_clip(case.get(c) or "", 300) for c in columns] for case in data.mcq_cases]
        parts.append(Markup(f"<h3>Answers ({len(rows)} rows of mcq_cases.csv)</h3>"))
        parts.append(table(columns, rows, table_id="mcq-cases", sortable=True, scroll=True))
    return section("mcq", "Multiple-choice questions", *parts)


def results_section(data: RunData) -> Markup:
    """Every row of results.json, in file order; sortable by any column."""
    frame = data.results
    several_tasks = frame["task"].nunique() > 1
    body, marks = [], []
    for row in frame.itertuples(index=False):
        marks.append("sel" if row.selected else "")
        cells = [row.task] if several_tasks else []
        cells += [row.backbone, Markup(f"<code>{esc(row.layer)}</code>"),
                  num(fmt_fraction(row.train_fraction), row.train_fraction), num(str(row.seed), row.seed),
                  row.metric, num(fmt3(row.value), row.value), num(fmt_ci(row.ci_low, row.ci_high), row.ci_low),
                  num(fmt3(row.sd), row.sd), num(str(row.n_test), row.n_test),
                  Cell("✓" if row.selected else "", 1.0 if row.selected else 0.0),
                  num(f"{row.C:g}" if as_float(row.C) is not None else "n/a", row.C),
                  num(fmt3(row.val_score), row.val_score)]
        body.append(cells)
    headers = (["task"] if several_tasks else []) + [
        "backbone", "layer", Cell("train fraction", numeric=True), Cell("seed", numeric=True), "metric",
        Cell("value", numeric=True), Cell("95% CI", numeric=True), Cell("SD", numeric=True),
        Cell("n_test", numeric=True), "selected", Cell("C", numeric=True), Cell("validation score", numeric=True)]
    intro = paragraph(f"All {len(frame)} rows of results.json (every backbone, layer, train fraction, seed and "
                      "metric). ✓ marks the layer chosen on validation. Click a column header to sort.", "muted")
    return section("results", "All results", intro,
                   table(headers, body, table_id="results", sortable=True, scroll=len(body) > 25, row_classes=marks))


def _skipped_table(entries: Any, columns: Sequence[str], table_id: str) -> Markup:
    rows = [e for e in entries or [] if isinstance(e, dict)]
    if not rows:
        return paragraph("none", "muted")
    return table(list(columns), [[e.get(c) for c in columns] for e in rows], table_id=table_id,
                 scroll=len(rows) > 15)


def inputs_section(data: RunData) -> Markup:
    skipped = data.run.get("skipped") or []
    excluded = data.run.get("excluded") or []
    return section(
        "inputs", "Skipped inputs and excluded samples",
        Markup(f"<h3>Unreadable inputs, skipped ({len(skipped)})</h3>"),
        _skipped_table(skipped, ("sample_id", "source", "error"), "skipped"),
        Markup(f"<h3>Samples excluded by the data adapter ({len(excluded)})</h3>"),
        _skipped_table(excluded, ("sample_id", "reason"), "excluded"),
    )


def provenance_section(data: RunData) -> Markup:
    run = data.run
    versions = run.get("versions") or {}
    parts = [Markup("<h3>Software versions</h3>"),
             table(["package", "version"], [[k, Markup(f"<code>{esc(v)}</code>")] for k, v in versions.items()],
                   table_id="versions") if versions else paragraph("not recorded", "muted")]
    timings = run.get("timings") or {}
    if timings:
        parts += [Markup("<h3>Timings</h3>"),
                  table(["stage", Cell("seconds", numeric=True)],
                        [[k, num(f"{as_float(v):.1f}" if as_float(v) is not None else str(v), v)]
                         for k, v in timings.items()], table_id="timings")]
    if run.get("command"):
        parts += [Markup("<h3>Command</h3>"), Markup(f"<pre>{esc(run['command'])}</pre>")]
    fingerprints = {str(s.get("label") or s.get("name")): s.get("fingerprint")
                    for s in run.get("backbones") or [] if isinstance(s, dict) and s.get("fingerprint")}
    if fingerprints:
        parts.append(Markup("<details><summary>Backbone fingerprints (what the cache key is made of)</summary>"
                            f"<pre>{esc(json.dumps(fingerprints, indent=2, sort_keys=True, default=str))}</pre>"
                            "</details>"))
    if run.get("config"):
        parts.append(Markup("<details><summary>Run configuration as parsed</summary>"
                            f"<pre>{esc(json.dumps(run['config'], indent=2, sort_keys=True, default=str))}</pre>"
                            "</details>"))
    return section("provenance", "Provenance", *parts)


def caveats(data: RunData, figures: FigureSet) -> list[str]:
    """Caveats that follow from the run itself, stated so nobody over-reads the numbers."""
    notes = []
    n_boot = data.run.get("n_bootstrap")
    n_test = as_float(data.selected()["n_test"].max())  # group rows count only their group's samples
    notes.append(
        "95% CIs are percentile-bootstrap intervals over the test samples"
        + (f" ({n_boot} replicates)" if n_boot else "")
        + "; they reflect test-set sampling only, not variation between training subsets, seeds or data sets.")
    notes.append("Layers and the regularisation strength C were chosen on the validation split; the test split was "
                 "used only for the numbers reported here.")
    if n_test is not None and n_test < 100:
        notes.append(f"The test split is small (n = {int(n_test)}), so the CIs are wide and small differences "
                     "between backbones are not meaningful.")
    if data.comparisons:
        notes.append(f"{len(data.comparisons)} paired comparisons are reported without correction for multiple "
                     "testing.")
    if data.results["value"].isna().any():
        notes.append("Some metrics are undefined (n/a), e.g. a class without positive test samples.")
    skipped = data.run.get("skipped") or []
    if skipped:
        notes.append(f"{len(skipped)} input(s) could not be read and were left out of every split.")
    return notes + list(figures.notes)


def notes_section(data: RunData, figures: FigureSet) -> Markup:
    parts = []
    user_notes = data.run.get("notes")
    if user_notes:
        parts += [Markup("<h3>Notes from the run file</h3>"), Markup(f'<div class="usernotes">{esc(user_notes)}</div>')]
    parts.append(Markup("<h3>Caveats</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in caveats(data, figures))
                        + "</ul>"))
    return section("notes", "Notes and caveats", *parts)


# --------------------------------------------------------------------------- page
CSS = """
:root{--fg:#1d2733;--muted:#5b6776;--line:#dde3ea;--bg:#f3f5f8;--accent:#0b5cad;--head:#15304b}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:var(--fg);background:var(--bg)}
.wrap{max-width:1200px;margin:0 auto;padding:0 24px}
header.top{background:var(--head);color:#fff;padding:26px 0 20px}
header.top h1{margin:0 0 4px;font-size:25px;font-weight:600;letter-spacing:.2px}
header.top p{margin:0;color:#c5d3e2}
nav.toc{background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0;z-index:5}
nav.toc a{display:inline-block;padding:9px 11px;color:var(--accent);text-decoration:none;font-size:13px}
nav.toc a:hover{background:#eef4fb}
main{padding-bottom:40px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 24px 20px;margin:18px 0}
h2{font-size:19px;font-weight:600;margin:0 0 12px;padding-bottom:7px;border-bottom:2px solid #e6ebf1}
h3{font-size:14.5px;font-weight:600;margin:20px 0 8px}
p{margin:6px 0 10px}
.muted{color:var(--muted)}
p.note{color:#7a4b00;background:#fff7e6;border-left:3px solid #E69F00;padding:6px 10px;margin:6px 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:12px;
 background:#f1f4f8;border-radius:3px;padding:0 3px;overflow-wrap:anywhere}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:#edf1f6;font-weight:600;white-space:nowrap;border-bottom:1px solid #c9d2dd}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#f9fafc}
tbody tr:hover{background:#eaf3fc}
tr.best td{font-weight:650}
tr.sel td{background:#e9f3fb}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{background:#e2e9f1}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:9px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:9px}
.scroll{max-height:520px;overflow:auto;border:1px solid var(--line);border-radius:6px;margin:4px 0 8px}
.scroll table{margin:0;width:100%}
.scroll thead th{position:sticky;top:0;z-index:1}
#models td{max-width:340px}
#models .layers{display:block;max-height:90px;overflow:auto}
code.path{background:none;padding:0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 22px;margin:0 0 6px}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0}
figure{margin:22px 0 26px;padding-top:8px;border-top:1px solid #eef1f5}
figure:first-of-type{border-top:none;padding-top:0}
figure img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{color:var(--muted);font-size:13px;margin:8px auto 0;max-width:880px}
figcaption strong{color:var(--fg)}
details{margin:10px 0}
details summary{cursor:pointer;color:var(--accent)}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;border:1px solid var(--line);border-radius:6px;
 padding:10px;max-height:420px;overflow:auto;font-size:12px}
.usernotes{white-space:pre-wrap;background:#f6f8fa;border-left:3px solid var(--accent);padding:8px 12px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:10px 0 30px}
@media print{nav.toc{display:none}.scroll{max-height:none;overflow:visible}section{break-inside:avoid-page}
 body{background:#fff}}
"""

# Sorts a table on a header click (numbers by data-sort, text naturally, undefined values last).
# Wrapped in try/catch so that no browser quirk can surface as a page error.
SORT_SCRIPT = """
(function(){try{
function key(c){if(!c)return null;var s=c.getAttribute("data-sort");
 if(s!==null&&s!==""&&isFinite(+s))return +s;return c.hasAttribute("data-sort")?null:c.textContent.trim();}
function blank(v){return v===null||v==="";}
function cmp(a,b){if(typeof a==="number"&&typeof b==="number")return a-b;
 return String(a).localeCompare(String(b),undefined,{numeric:true});}
var tables=document.querySelectorAll("table.sortable");
for(var t=0;t<tables.length;t++){(function(table){
 if(!table.tHead||!table.tBodies.length)return;var heads=table.tHead.rows[0].cells;
 for(var i=0;i<heads.length;i++){(function(th,col){
  th.tabIndex=0;th.title="Sort by this column";
  function sort(){var body=table.tBodies[0];var up=th.getAttribute("aria-sort")!=="ascending";
   for(var h=0;h<heads.length;h++)heads[h].removeAttribute("aria-sort");
   th.setAttribute("aria-sort",up?"ascending":"descending");
   var rows=Array.prototype.slice.call(body.rows);
   rows.sort(function(r,s){var a=key(r.cells[col]),b=key(s.cells[col]);
    if(blank(a)||blank(b))return (blank(a)?1:0)-(blank(b)?1:0);  /* undefined values last either way */
    return up?cmp(a,b):-cmp(a,b);});
   for(var k=0;k<rows.length;k++)body.appendChild(rows[k]);}
  th.addEventListener("click",sort);
  th.addEventListener("keydown",function(e){if(e.key==="Enter"||e.key===" "){e.preventDefault();sort();}});
 })(heads[i],i);}
})(tables[t]);}
document.documentElement.setAttribute("data-sort-ready","1");
}catch(e){}})();
"""


def render_page(data: RunData, figures: FigureSet) -> str:
    """The whole HTML document as a string."""
    run = data.run
    name = run.get("name") or data.run_dir.name
    subtitle = (f"{data.task_type} · {len(data.classes)} classes · {metric_label(data.task_metric, data.task_type)}"
                f" · {len(data.backbones)} backbone{'s' if len(data.backbones) != 1 else ''}")
    sections = [summary_section(data), headline_section(data), figures_section(figures), comparisons_section(data),
                label_efficiency_section(data)]
    if data.mcq or data.mcq_cases:
        sections.append(mcq_section(data))
    sections += [results_section(data), inputs_section(data), provenance_section(data), notes_section(data, figures)]
    links = [("summary", "Summary"), ("headline", "Headline"), ("figures", "Figures"),
             ("comparisons", "Comparisons"), ("label-efficiency", "Label efficiency")]
    if data.mcq or data.mcq_cases:
        links.append(("mcq", "MCQ"))
    links += [("results", "All results"), ("inputs", "Skipped/excluded"), ("provenance", "Provenance"),
              ("notes", "Notes & caveats")]
    nav = "".join(f'<a href="#{anchor}">{esc(text)}</a>' for anchor, text in links)
    version = (run.get("versions") or {}).get("medprobe", "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>medprobe report: {esc(name)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><div class="wrap"><h1>medprobe report: {esc(name)}</h1>'
        f"<p>{esc(subtitle)}</p></div></header>"
        f'<nav class="toc"><div class="wrap">{nav}</div></nav>'
        f'<main class="wrap">{"".join(sections)}</main>'
        f'<footer>Generated by medprobe {esc(version)} from the files in the run folder '
        f"<code>{esc(str(data.run_dir))}</code>.</footer>"
        f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's figures (``run_dir/figures/``) and its self-contained HTML report.

    ``out`` is the report's path (default ``run_dir/report.html``; a folder means
    ``folder/report.html``). The file is written atomically. Returns its path.
    """
    data = load_run(run_dir)
    figures = render_figures(data)
    target = Path(out) if out is not None else data.run_dir / REPORT_NAME
    if target.is_dir():
        target = target / REPORT_NAME
    atomic_write_bytes(target, render_page(data, figures).encode("utf-8"))
    return target


__all__ = ["build_report", "render_page", "fmt_value_ci", "fmt3", "fmt_ci", "fmt_p", "Markup", "esc"]
