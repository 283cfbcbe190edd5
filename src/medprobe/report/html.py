"""One self-contained HTML page per run: summary, tables, figures, provenance and caveats.

The page has to survive being mailed around and opened years later without the run folder or
the network, so everything lives in one file: CSS inline, figures embedded as base64 SVG data
URIs (vector, and each in its own document, so ids inside different SVGs can never clash), and
no external URL. The only script sorts tables on a header click; it is wrapped so it cannot throw,
and the page is complete without it.

The page structure is in Jinja2 templates (``report/templates/``) with autoescaping on, so every
piece of text that comes from files (sample ids, notes, class names, error messages, model output)
is escaped by the template engine; this module only decides *what* goes in each table and
paragraph, as plain :class:`~medprobe.report.blocks.Part` / ``Cell`` values with a style name,
never HTML.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

from medprobe.io import atomic_write_bytes
from medprobe.report.blocks import (
    Block,
    Cell,
    Header,
    Paragraph,
    Part,
    Section,
    Table,
    as_cell,
    cell,
    code_parts,
    make_table,
    paragraph_block,
    parts,
    table_block,
)
from medprobe.report.comparisons_section import comparisons_section
from medprobe.report.figures import FigureSet, render_figures
from medprobe.report.figures.style import metric_label
from medprobe.report.format import fmt3, fmt_ci, fmt_fraction, fmt_p, fmt_value_ci, num
from medprobe.report.load import RunData, as_float, load_run, selection_metric
from medprobe.report.mcq_section import mcq_section
from medprobe.report.operating_points_section import operating_points_section
from medprobe.report.protocols_section import protocols_section
from medprobe.report.stats_sections import (
    calibration_section,
    label_efficiency_section,
    layer_cell_parts,
    per_class_section,
    resampling_statement,
    subgroups_section,
    val_score_note,
    warnings_block,
)

REPORT_NAME = "report.html"


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


def summary_section(data: RunData) -> Section:
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
        ("Classes", parts(*code_parts(data.classes))),
        ("Task metric", metric_label(data.task_metric, data.task_type)),
        ("Samples", " · ".join(f"{split} {n_samples[split]}" for split in ("train", "val", "test")
                               if split in n_samples) or None),
        ("Backbones", ", ".join(data.backbones)),
        ("Layers probed", f"{layers_total} (layer and C chosen on the validation split)"),
        ("Train fractions", ", ".join(fmt_fraction(f) for f in data.fractions)),
        ("Seeds", ", ".join(str(s) for s in seeds)),
        ("Uncertainty", resampling_statement(data)),
        ("Multiplicity", _multiplicity(data)),
        ("Prompt", cell(run["prompt"], "code") if run.get("prompt") else "none (image only)"),
        ("Started", run.get("started")),
        ("Finished", str(run["finished"]) + (f" ({_duration(run)})" if _duration(run) else "")
         if run.get("finished") else None),
    ]
    blocks = [Block("facts", items=[(label, as_cell(value)) for label, value in items if value is not None])]
    warned = warnings_block(data)
    if warned is not None:
        blocks.append(warned)
    counts = info.get("class_counts") or {}
    if counts:
        splits = [s for s in ("train", "val", "test") if s in counts] + [s for s in counts if s not in
                                                                          ("train", "val", "test")]
        classes = list(dict.fromkeys([*data.classes, *(c for s in splits for c in (counts[s] or {}))]))
        body = [[c, *(num(str(counts[s].get(c, 0)), counts[s].get(c, 0)) for s in splits)] for c in classes]
        body.append([cell("total", "strong"),
                     *(num(str(sum(counts[s].values())), sum(counts[s].values())) for s in splits)])
        note = " (multi-label: a sample counts once per label)" if data.task_type == "multilabel" else ""
        blocks.append(table_block(make_table(["class", *(Header(s, numeric=True) for s in splits)], body,
                                             table_id="class-counts"), heading=f"Class counts per split{note}"))
    blocks.append(table_block(models_table(data), heading="Models"))
    return Section("summary", "Run summary", "Summary", blocks)


def _multiplicity(data: RunData) -> str | None:
    """How the paired tests were adjusted, with the largest family, when the run says so."""
    stats = data.run.get("statistics") if isinstance(data.run.get("statistics"), dict) else {}
    families = [int(f) for f in (as_float(c.get("n_family")) for c in data.comparisons) if f is not None]
    if not families and not stats.get("multiplicity"):
        return None
    text = str(stats.get("multiplicity") or "Holm and Benjamini-Hochberg")
    if families and max(families) > 1:
        text += f"; adjusted within families of up to {max(families)} comparisons (same pair, test, metric kind)"
    elif families:
        text += "; every family holds one comparison (no per-class tests), so adjusted p = raw p"
    return text


def models_table(data: RunData) -> Table:
    """Each backbone with what identifies it: fingerprint hash, cache folder, provenance, layers."""
    specs = {str(s.get("label") or s.get("name")): s for s in data.run.get("backbones") or [] if isinstance(s, dict)}
    selected = data.results[data.results["selected"] & (data.results["metric"] == data.task_metric)]
    body = []
    for backbone in data.backbones:
        spec = specs.get(backbone, {})
        layers = [str(layer) for layer in spec.get("layers") or data.layers(backbone)]
        mine = selected[selected["backbone"] == backbone]
        chosen = mine["layer"].value_counts()
        chosen_parts = []
        for index, (layer, count) in enumerate(chosen.items()):
            chosen_parts += [Part(layer, "code", break_before=index > 0), Part(f" ({count} of {len(mine)} fits)")]
        fingerprint = spec.get("fingerprint")
        key = spec.get("cache_key")
        identity = [Part(fingerprint_hash(fingerprint), "hash") if fingerprint else Part("—")]
        if key:
            identity += [Part("cache key", "muted", break_before=True), Part(" "), Part(key, "code")]
        name = [Part(backbone, "strong")]
        if spec.get("name") and spec["name"] != backbone:
            name.append(Part(spec["name"], "muted", break_before=True))
        body.append([
            parts(*name),
            parts(Part(f"{len(layers)}: "), Part(style="layers", items=tuple(layers))),
            parts(*chosen_parts),
            parts(*identity),
            cell(spec.get("cache_dir"), "path"),
            spec.get("provenance") or "—",
        ])
    return make_table(["backbone", "layers probed", "selected layer (task metric)", "fingerprint", "feature cache",
                       "provenance"], body, table_id="models")


def headline_section(data: RunData) -> Section:
    """Selected-layer task metric per backbone x fraction x seed; the best value per fit is bold."""
    metric = data.task_metric
    rows = data.selected(metric).copy()
    order = {b: i for i, b in enumerate(data.backbones)}
    rows["_order"] = rows["backbone"].map(order)
    rows = rows.sort_values(["train_fraction", "seed", "_order"], ascending=[False, True, True])
    best = rows.groupby(["train_fraction", "seed"])["value"].transform("max")
    body, classes = [], []
    for (_, row), top in zip(rows.iterrows(), best):
        body.append([row["backbone"], layer_cell_parts(row),
                     num(fmt_fraction(row["train_fraction"]), row["train_fraction"]),
                     num(str(int(row["seed"])), row["seed"]),
                     num(fmt_value_ci(row["value"], row["ci_low"], row["ci_high"]), row["value"]),
                     num(str(int(row["n_test"])) if as_float(row["n_test"]) is not None else "n/a", row["n_test"]),
                     num(fmt3(row["val_score"]), row["val_score"])])
        several = len(data.backbones) > 1 and as_float(row["value"]) is not None
        classes.append("best" if several and row["value"] == top else "")
    label = metric_label(metric, data.task_type)
    intro = Paragraph(f"Test {label} of the layer chosen on the validation split. {resampling_statement(data)} "
                      "Bold: the best backbone of each train fraction and seed.", "muted")
    optimism = Paragraph(val_score_note(data), "muted")
    headers = ["backbone", "selected layer", Header("train fraction", True), Header("seed", True),
               Header(f"{label} [95% CI]", True), Header("n_test", True), Header("validation score", True)]
    table = make_table(headers, body, table_id="headline", sortable=True, scroll=len(body) > 40,
                       row_classes=classes)
    return Section("headline", "Headline results", "Headline", [table_block(table, before=[intro], after=[optimism])])



def figures_section(figures: FigureSet) -> Section:
    shown = []
    for figure in figures.figures:
        svg = figure.paths["svg"].read_bytes()
        shown.append({"name": figure.name, "title": figure.title, "caption": figure.caption,
                      "source": "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")})
    block = Block("figures", figures=shown, notes=[Paragraph(note, "note") for note in figures.notes])
    return Section("figures", "Figures", "Figures", [block])


def _binary_duplicates(data: RunData) -> set[int]:
    """Positions of binary-task rows that repeat the probe's ``auc`` row: ``auc_macro`` and the two
    per-class AUROCs are the same number (one class's ranking is the other's reversed). Only rows
    whose value really equals the ``auc`` row are hidden; results.json keeps them all."""
    if data.task_type != "binary":
        return set()
    frame = data.results
    keys = ["task", "backbone", "layer", "train_fraction", "seed"]
    auc = frame[frame["metric"] == "auc"].set_index(keys)["value"]
    auc = auc[~auc.index.duplicated()]
    hidden = set()
    for position, row in enumerate(frame.itertuples(index=False)):
        if row.metric == "auc_macro" or (row.metric.startswith("auc[") and row.metric.endswith("]")):
            key = tuple(getattr(row, k) for k in keys)
            reference = as_float(auc.get(key))
            value = as_float(row.value)
            if reference is not None and value is not None and abs(value - reference) < 1e-12:
                hidden.add(position)
    return hidden


def results_section(data: RunData) -> Section:
    """Every row of results.json in file order (binary: one AUROC row per probe); sortable."""
    frame = data.results
    several_tasks = frame["task"].nunique() > 1
    hidden = _binary_duplicates(data)
    body, marks = [], []
    for position, row in enumerate(frame.itertuples(index=False)):
        if position in hidden:
            continue
        marks.append("sel" if row.selected else "")
        cells = [cell(row.task)] if several_tasks else []
        cells += [cell(row.backbone), layer_cell_parts(row),
                  num(fmt_fraction(row.train_fraction), row.train_fraction), num(str(row.seed), row.seed),
                  cell(row.metric), num(fmt3(row.value), row.value),
                  num(fmt_ci(row.ci_low, row.ci_high), row.ci_low),
                  num(fmt3(row.sd), row.sd), num(str(row.n_test), row.n_test),
                  Cell((Part("✓"),) if row.selected else (Part(""),), 1.0 if row.selected else 0.0),
                  num(f"{row.C:g}" if as_float(row.C) is not None else "n/a", row.C),
                  num(fmt3(row.val_score), row.val_score)]
        body.append(cells)
    headers = (["task"] if several_tasks else []) + [
        "backbone", "layer", Header("train fraction", True), Header("seed", True), "metric",
        Header("value", True), Header("95% CI", True), Header("SD", True), Header("n_test", True), "selected",
        Header("C", True), Header("validation score", True)]
    shown = f"All {len(frame)} rows" if not hidden else f"{len(body)} of the {len(frame)} rows"
    text = (f"{shown} of results.json (every backbone, layer, train fraction, seed and metric), for analysis: rows "
            "without ✓ are layers not chosen on validation, whose test values must not be reported as results "
            "(picking the best of them on test is optimistic). ✓ marks the layer chosen on validation. "
            f"{resampling_statement(data)} Click a column header to sort.")
    if hidden:
        text += (f" Binary task: auc_macro and the two per-class AUROCs equal each probe's auc, so those "
                 f"{len(hidden)} rows are not repeated here (results.json has them).")
    table = make_table(headers, body, table_id="results", sortable=True, scroll=len(body) > 25, row_classes=marks)
    return Section("results", "All results (analysis)", "All results",
                   [table_block(table, before=[Paragraph(text, "muted")])])


def _skipped_block(entries: Any, columns: Sequence[str], table_id: str, heading: str) -> Block:
    rows = [e for e in entries or [] if isinstance(e, dict)]
    if not rows:
        return paragraph_block(Paragraph("none", "muted"), heading=heading)
    return table_block(make_table(list(columns), [[e.get(c) for c in columns] for e in rows], table_id=table_id,
                                  scroll=len(rows) > 15), heading=heading)


def inputs_section(data: RunData) -> Section:
    skipped = data.run.get("skipped") or []
    excluded = data.run.get("excluded") or []
    return Section("inputs", "Skipped inputs and excluded samples", "Skipped/excluded", [
        _skipped_block(skipped, ("sample_id", "source", "error"), "skipped",
                       f"Unreadable inputs, skipped ({len(skipped)})"),
        _skipped_block(excluded, ("sample_id", "reason"), "excluded",
                       f"Samples excluded by the data adapter ({len(excluded)})"),
    ])


def provenance_section(data: RunData) -> Section:
    run = data.run
    versions = run.get("versions") or {}
    blocks = [table_block(make_table(["package", "version"], [[k, cell(v, "code")] for k, v in versions.items()],
                                     table_id="versions"), heading="Software versions") if versions
              else paragraph_block(Paragraph("not recorded", "muted"), heading="Software versions")]
    timings = run.get("timings") or {}
    if timings:
        blocks.append(table_block(make_table(
            ["stage", Header("seconds", True)],
            [[k, num(f"{as_float(v):.1f}" if as_float(v) is not None else str(v), v)] for k, v in timings.items()],
            table_id="timings"), heading="Timings"))
    if run.get("command"):
        blocks.append(Block("pre", heading="Command", text=str(run["command"])))
    fingerprints = {str(s.get("label") or s.get("name")): s.get("fingerprint")
                    for s in run.get("backbones") or [] if isinstance(s, dict) and s.get("fingerprint")}
    if fingerprints:
        blocks.append(Block("details", heading="Backbone fingerprints (what the cache key is made of)",
                            text=json.dumps(fingerprints, indent=2, sort_keys=True, default=str)))
    if run.get("config"):
        blocks.append(Block("details", heading="Run configuration as parsed",
                            text=json.dumps(run["config"], indent=2, sort_keys=True, default=str)))
    return Section("provenance", "Provenance", "Provenance", blocks)


def caveats(data: RunData, figures: FigureSet) -> list[str]:
    """Caveats that follow from the run itself, stated so nobody over-reads the numbers."""
    notes = []
    n_test = as_float(data.selected()["n_test"].max())  # group rows count only their group's samples
    notes.append(resampling_statement(data)[:-1] + "; the CIs reflect test-set sampling only, not variation "
                 "between training subsets, seeds or data sets (the label-efficiency shares also resample seeds).")
    notes.append(f"Layers and the regularisation strength C were chosen on the validation split (by validation "
                 f"{metric_label(selection_metric(data), data.task_type)}); the test split was used only for the "
                 "numbers reported here. " + val_score_note(data))
    if n_test is not None and n_test < 100:
        notes.append(f"The test split is small (n = {int(n_test)}), so the CIs are wide and small differences "
                     "between backbones are not meaningful.")
    if data.comparisons and not any("p_holm" in c for c in data.comparisons):
        notes.append(f"{len(data.comparisons)} paired comparisons are reported without correction for multiple "
                     "testing.")
    elif data.comparisons:
        notes.append(f"{len(data.comparisons)} paired comparisons: read the Holm / BH columns when judging several "
                     "classes at once; the raw p-values are not adjusted.")
    if any(c.get("test") == "replicate_t_test" for c in data.comparisons):
        notes.append("The t-test on bootstrap replicates is shown for reproducing the study only; it is not a valid "
                     "test (its t grows with the number of replicates).")
    if data.results["value"].isna().any():
        notes.append("Some metrics are undefined (n/a), e.g. a class without positive test samples.")
    skipped = data.run.get("skipped") or []
    if skipped:
        notes.append(f"{len(skipped)} input(s) could not be read and were left out of every split.")
    return notes + list(figures.notes)


def notes_section(data: RunData, figures: FigureSet) -> Section:
    blocks = []
    user_notes = data.run.get("notes")
    if user_notes:
        blocks.append(Block("usernotes", heading="Notes from the run file", text=str(user_notes)))
    blocks.append(Block("list", heading="Caveats", items=caveats(data, figures)))
    return Section("notes", "Notes and caveats", "Notes & caveats", blocks)


# --------------------------------------------------------------------------- page
@lru_cache(maxsize=1)
def _environment() -> Any:
    """The Jinja2 environment: templates from the package, autoescaping on for every template."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("medprobe.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)


def _asset(name: str) -> Any:
    """The page's own CSS / script, inlined as is (trusted package files, not user text)."""
    from markupsafe import Markup

    return Markup((files("medprobe.report") / "templates" / name).read_text(encoding="utf-8"))


def render_page(data: RunData, figures: FigureSet) -> str:
    """The whole HTML document as a string."""
    run = data.run
    name = run.get("name") or data.run_dir.name
    subtitle = (f"{data.task_type} · {len(data.classes)} classes · {metric_label(data.task_metric, data.task_type)}"
                f" · {len(data.backbones)} backbone{'s' if len(data.backbones) != 1 else ''}")
    sections = [summary_section(data), headline_section(data), figures_section(figures), comparisons_section(data),
                label_efficiency_section(data)]
    sections += [s for s in (protocols_section(data),) if s is not None]
    sections += [s for s in (per_class_section(data), calibration_section(data), operating_points_section(data),
                             subgroups_section(data)) if s is not None]
    if data.mcq or data.mcq_cases:
        sections.append(mcq_section(data))
    sections += [results_section(data), inputs_section(data), provenance_section(data), notes_section(data, figures)]
    return _environment().get_template("report.html.j2").render(
        name=name, subtitle=subtitle, sections=sections, css=_asset("report.css"), script=_asset("sort.js"),
        version=(run.get("versions") or {}).get("medprobe", ""), run_dir=str(data.run_dir))


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


__all__ = ["build_report", "render_page", "fmt_value_ci", "fmt3", "fmt_ci", "fmt_p"]
