"""Report stage: figures and the self-contained HTML page, built from synthetic run folders.

The run folders are written by :func:`make_run_dir` in exactly the schema the experiment writes
(results.json, predictions.parquet, comparisons.json, run.json, optional MCQ files). Metric values
come from scikit-learn on synthetic scores, so the ROC figure can be checked against an
independent AUROC (scipy's Mann-Whitney U) and the tables against the JSON they were built from.
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import mannwhitneyu
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from medprobe.errors import DataError
from medprobe.report import (
    build_report,
    label_efficiency_curves,
    layer_curves,
    load_run,
    mcq_strata,
    metric_bars,
    reliability_diagram,
    subgroup_forest,
    roc_curves,
    save_figures,
)

TOL = 5e-4 + 1e-9  # half a unit in the third decimal (rounding of x.xxx5 may go either way)
EVIL = '<script>alert("x")</script>'


# --------------------------------------------------------------------------- synthetic run folders
def _fit_scores(rng: np.random.Generator, y: np.ndarray, n_classes: int, strength: float) -> np.ndarray:
    """Class probabilities whose separation grows with ``strength``."""
    logits = rng.normal(size=(len(y), n_classes)) + strength * np.eye(n_classes)[y]
    expo = np.exp(logits - logits.max(axis=1, keepdims=True))
    return expo / expo.sum(axis=1, keepdims=True)


def _multilabel_scores(rng: np.random.Generator, truth: np.ndarray, strength: float) -> np.ndarray:
    """Independent per-label probabilities (sigmoids), higher for present labels."""
    return 1 / (1 + np.exp(-(strength * (2 * truth - 1) + rng.normal(size=truth.shape))))


def _multilabel_metrics(truth: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    predicted = (scores >= 0.5).astype(int)
    out = {"auc": roc_auc_score(truth, scores, average="macro"),
           "f1_macro": f1_score(truth, predicted, average="macro"),
           "accuracy": accuracy_score(truth, predicted)}
    for k, name in enumerate(classes):
        out[f"auc[{name}]"] = roc_auc_score(truth[:, k], scores[:, k])
        out[f"f1[{name}]"] = f1_score(truth[:, k], predicted[:, k])
    return out


def _metrics(y: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    predicted = scores.argmax(axis=1)
    if len(classes) == 2:
        auc = roc_auc_score(y, scores[:, 1])
    else:
        auc = roc_auc_score(y, scores, multi_class="ovr", average="macro")
    out = {"auc": auc, "f1_macro": f1_score(y, predicted, average="macro"), "accuracy": accuracy_score(y, predicted)}
    for k, name in enumerate(classes):
        out[f"auc[{name}]"] = roc_auc_score(y == k, scores[:, k])
        out[f"f1[{name}]"] = f1_score(y == k, predicted == k)
    return out


def make_run_dir(path: Path, *, classes: Sequence[str] = ("normal", "pneumonia"),
                 backbones: dict[str, Sequence[str]] | None = None, fractions: Sequence[float] = (0.1, 0.5, 1.0),
                 seeds: Sequence[int] = (0, 1), n_test: int = 80, notes: str = "", skipped: Sequence[dict] = (),
                 predictions: bool = True, label_efficiency: bool = True, multilabel: bool = False,
                 groups: Sequence[str] = (), seed: int = 0) -> Path:
    """Write a run folder with the experiment's output schema; full-data fits use the first seed only.

    ``groups``: per-group AUC rows (``auc@<group>``) for the selected layers, as with
    ``stats.group_column``; the last group's AUC of the last backbone is undefined (null).
    """
    backbones = backbones or {"clip-vit": ["layer_0", "layer_4", "layer_8", "layer_11"], "pixels": ["raw"]}
    rng = np.random.default_rng(seed)
    y = np.arange(n_test) % len(classes)
    truth = (rng.random((n_test, len(classes))) < 0.4).astype(int)
    truth[np.arange(len(classes)), np.arange(len(classes))] = 1  # every label present at least once
    truth[len(classes):2 * len(classes)] = 0  # ... and absent at least once
    task_type = "multilabel" if multilabel else "binary" if len(classes) == 2 else "multiclass"
    rows, prediction_frames, selected_values = [], [], {}
    for b_index, (backbone, layers) in enumerate(backbones.items()):
        for fraction in fractions:
            for fit_seed in (seeds if fraction < 1 else seeds[:1]):
                fits = []
                for l_index, layer in enumerate(layers):
                    strength = 0.4 + 1.2 * fraction + 0.35 * l_index * (1 - 0.1 * l_index) - 0.4 * b_index
                    if multilabel:
                        scores = _multilabel_scores(rng, truth, strength)
                        metrics = _multilabel_metrics(truth, scores, classes)
                    else:
                        scores = _fit_scores(rng, y, len(classes), strength)
                        metrics = _metrics(y, scores, classes)
                    fits.append((layer, scores, metrics, metrics["auc"] + rng.normal(0, 0.02)))
                best = max(range(len(fits)), key=lambda i: fits[i][3])
                for i, (layer, scores, metrics, val_score) in enumerate(fits):
                    for metric, value in metrics.items():
                        sd = float(np.sqrt(max(value * (1 - value), 1e-4) / n_test))
                        rows.append({"task": "synthetic", "backbone": backbone, "layer": layer,
                                     "train_fraction": fraction, "seed": fit_seed, "metric": metric,
                                     "value": float(value), "sd": sd, "ci_low": float(max(0.0, value - 1.96 * sd)),
                                     "ci_high": float(min(1.0, value + 1.96 * sd)), "n_test": n_test,
                                     "selected": i == best, "C": float(10.0 ** (i % 3 - 1)),
                                     "val_score": float(val_score)})
                    frame = pd.DataFrame({"sample_id": [f"t{k:03d}" for k in range(n_test)], "backbone": backbone,
                                          "layer": layer, "train_fraction": fraction, "seed": fit_seed})
                    for k, name in enumerate(classes):
                        if multilabel:
                            frame[f"true[{name}]"] = truth[:, k]
                        else:
                            frame["y_true"] = y
                        frame[f"score[{name}]"] = scores[:, k]
                    prediction_frames.append(frame)
                    if i == best:
                        selected_values[(backbone, fraction, fit_seed)] = (layer, metrics["auc"])
                        member = (np.arange(n_test) // len(classes)) % max(len(groups), 1)
                        for g_index, group in enumerate(groups):
                            inside = member == g_index
                            value = _metrics(y[inside], scores[inside], classes)["auc"]
                            undefined = g_index == len(groups) - 1 and b_index == len(backbones) - 1
                            rows.append({"task": "synthetic", "backbone": backbone, "layer": layer,
                                         "train_fraction": fraction, "seed": fit_seed, "metric": f"auc@{group}",
                                         "value": None if undefined else value, "sd": None if undefined else 0.05,
                                         "ci_low": None if undefined else value - 0.1,
                                         "ci_high": None if undefined else min(1.0, value + 0.1),
                                         "n_test": int(inside.sum()), "n_bootstrap_dropped": 0, "selected": True,
                                         "C": float(10.0 ** (i % 3 - 1)), "val_score": float(val_score)})
    comparisons = []
    names = list(backbones)
    for (backbone, fraction, fit_seed), (layer, value) in selected_values.items():
        if backbone == names[0]:
            continue
        ref_layer, ref_value = selected_values[(names[0], fraction, fit_seed)]
        base = {"task": "synthetic", "metric": "auc", "train_fraction": fraction, "seed": fit_seed,
                "backbone_a": backbone, "layer_a": layer, "backbone_b": names[0], "layer_b": ref_layer,
                "diff": value - ref_value}
        comparisons.append({**base, "test": "paired_bootstrap", "ci_low": value - ref_value - 0.05,
                            "ci_high": value - ref_value + 0.05, "p_value": float(rng.uniform(0, 0.2))})
        if task_type == "binary":
            comparisons.append({**base, "test": "delong", "ci_low": None, "ci_high": None, "p_value": 0.0004})
    counts = {split: {c: n for c in classes} for split, n in (("train", 200), ("val", 40), ("test", n_test // 2))}
    run = {
        "name": "synthetic-run", "task": "synthetic", "task_type": task_type, "classes": list(classes),
        "task_metric": "auc",
        "data": {"adapter": "medmnist", "root": "/data/medmnist", "name": "pneumoniamnist",
                 "description": "Synthetic stand-in for a chest X-ray task",
                 "n_samples": {"train": 200 * len(classes), "val": 40 * len(classes), "test": n_test},
                 "class_counts": counts},
        "backbones": [{"name": name, "label": name, "layers": list(layers),
                       "fingerprint": {"backbone": name, "weights_sha256": f"{index:064x}"},
                       "cache_key": f"key{index}", "cache_dir": f"/cache/{name}",
                       "provenance": f"{name} weights from a local file"}
                      for index, (name, layers) in enumerate(backbones.items())],
        "prompt": "Describe the image.", "seed": seeds[0], "n_bootstrap": 1000,
        "versions": {"medprobe": "0.1.0", "python": "3.11.7", "numpy": np.__version__, "torch": "2.13"},
        "skipped": list(skipped), "excluded": [{"sample_id": "x1", "reason": "duplicate image"}],
        "started": "2025-01-01T10:00:00+00:00", "finished": "2025-01-01T10:03:30+00:00",
        "timings": {"load_data_s": 0.5, "total_s": 210.0}, "notes": notes,
    }
    if label_efficiency:
        frame = pd.DataFrame([r for r in rows if r["selected"] and r["metric"] == "auc"])
        summary = []
        for backbone, part in frame.groupby("backbone", sort=False):
            full = part[part["train_fraction"] == max(fractions)]["value"].mean()
            for fraction, at in part.groupby("train_fraction"):
                summary.append({"backbone": backbone, "train_fraction": fraction, "value_mean": at["value"].mean(),
                                "value_sd": at["value"].std(ddof=0), "n_seeds": len(at),
                                "fraction_of_full": at["value"].mean() / full})
        run["label_efficiency"] = summary
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(rows, indent=1))
    (path / "comparisons.json").write_text(json.dumps(comparisons, indent=1))
    (path / "run.json").write_text(json.dumps(run, indent=1))
    if predictions:
        pd.concat(prediction_frames, ignore_index=True).to_parquet(path / "predictions.parquet", index=False)
    return path


MCQ_SUMMARY = {
    "model": "tiny-vlm", "method": "generate", "n_cases": 50, "n_shots": 0, "accuracy": 0.42, "ci_low": 0.29,
    "ci_high": 0.56, "n_unparseable": 3,
    "strata": [
        {"stratum": "[0.0, 0.2)", "low": 0.0, "high": 0.2, "n": 10, "accuracy": 0.2, "ci_low": 0.06, "ci_high": 0.51,
         "human_mean": 0.12},
        {"stratum": "[0.2, 0.4)", "low": 0.2, "high": 0.4, "n": 0, "accuracy": None, "ci_low": None,
         "ci_high": None, "human_mean": None},
        {"stratum": "[0.4, 0.6)", "low": 0.4, "high": 0.6, "n": 15, "accuracy": 0.4, "human_mean": 0.5},
        {"stratum": "[0.6, 0.8)", "low": 0.6, "high": 0.8, "n": 12, "accuracy": 0.5, "ci_low": 0.25,
         "ci_high": 0.75, "human_mean": 0.7},
        {"stratum": "[0.8, 1.0]", "low": 0.8, "high": 1.0, "n": 13, "accuracy": 0.62, "ci_low": 0.36,
         "ci_high": 0.82, "human_mean": 0.9},
    ],
}


# --------------------------------------------------------------------------- HTML parsing
class TableParser(HTMLParser):
    """Collect every table (by id) as a header row and body rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False
        self._anonymous = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._anonymous += 1
            self._table = attributes.get("id") or f"_table{self._anonymous}"
            self.tables[self._table] = {"head": [], "rows": []}
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attributes.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            target = self.tables[self._table]
            if self._in_head:
                target["head"] = self._row
            else:
                target["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> TableParser:
    parser = TableParser()
    parser.feed(text)
    return parser


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+", text)]


def one_auc_row_per_binary_probe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the report's full table shows: in a binary task (two per-class AUROCs) the rows
    ``auc_macro`` / ``auc[<class>]`` that equal the probe's ``auc`` are shown once, as ``auc``."""
    per_class = {r["metric"] for r in rows if r["metric"].startswith("auc[")}
    if len(per_class) != 2:
        return rows
    probe = lambda r: (r["backbone"], r["layer"], r["train_fraction"], r["seed"])  # noqa: E731
    auc = {probe(r): r["value"] for r in rows if r["metric"] == "auc"}
    return [r for r in rows if not ((r["metric"] == "auc_macro" or r["metric"] in per_class)
                                    and r["value"] is not None and auc.get(probe(r)) is not None
                                    and abs(r["value"] - auc[probe(r)]) < 1e-12)]


def check_results_tables(page: str, rows: list[dict[str, Any]], metric: str = "auc") -> None:
    """Headline and full results tables agree with results.json to three decimals (shared with the browser test)."""
    tables = parse(page).tables
    full = tables["results"]
    rows = one_auc_row_per_binary_probe(rows)
    assert len(full["rows"]) == len(rows)
    head = full["head"]
    col = {name: head.index(name) for name in ("backbone", "layer", "metric", "value", "95% CI", "selected")}
    for cells, row in zip(full["rows"], rows):
        assert cells[col["backbone"]] == row["backbone"] and cells[col["layer"]] == row["layer"]
        assert cells[col["metric"]] == row["metric"]
        if row["value"] is None:  # undefined metric (JSON null)
            assert cells[col["value"]] == "n/a" and cells[col["95% CI"]] == "n/a"
            continue
        assert numbers(cells[col["value"]]) == pytest.approx([row["value"]], abs=TOL)
        assert numbers(cells[col["95% CI"]]) == pytest.approx([row["ci_low"], row["ci_high"]], abs=TOL)
        assert (cells[col["selected"]] == "✓") == row["selected"]

    headline = tables["headline"]
    expected = {(r["backbone"], r["layer"], f"{r['train_fraction']:g}", str(r["seed"])): r
                for r in rows if r["selected"] and r["metric"] == metric}
    assert len(headline["rows"]) == len(expected)
    for cells in headline["rows"]:
        row = expected[(cells[0], cells[1], cells[2], cells[3])]
        # "0.912 [0.889, 0.934]"
        assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", cells[4]), cells[4]
        assert numbers(cells[4]) == pytest.approx([row["value"], row["ci_low"], row["ci_high"]], abs=TOL)
        assert cells[5] == str(row["n_test"])


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_run_dir(tmp_path_factory.mktemp("binary"), notes=f"note with {EVIL} and\nsecond line",
                        skipped=[{"sample_id": EVIL, "source": "/data/bad.png", "error": "truncated <file>"}])
    build_report(path)
    return path


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_run_dir(tmp_path_factory.mktemp("multilabel"), classes=("effusion", "nodule", "cardiomegaly"),
                        backbones={"vlm": ["l4", "l8"], "pixels": ["raw"]}, fractions=(0.5, 1.0), seeds=(0,),
                        multilabel=True, seed=2)
    build_report(path)
    return path


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_run_dir(tmp_path_factory.mktemp("multiclass"), classes=("adenosis", "fibroadenoma", "carcinoma & <b>"),
                        backbones={"vlm": ["l2", "l6", "l10"], "cnn": ["pool", "fc"], "pixels": ["raw"]},
                        fractions=(0.05, 0.25, 1.0), seeds=(3, 4, 5), label_efficiency=False,
                        groups=("liver", "kidney", "lung"), seed=1)
    build_report(path)
    return path


# --------------------------------------------------------------------------- tables
@pytest.mark.parametrize("run_fixture", ["binary_run", "multiclass_run", "multilabel_run"])
def test_tables_match_results_json(run_fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(run_fixture)
    rows = json.loads((path / "results.json").read_text())
    check_results_tables((path / "report.html").read_text(encoding="utf-8"), rows)


def test_summary_comparisons_and_label_efficiency(binary_run: Path) -> None:
    page = (binary_run / "report.html").read_text(encoding="utf-8")
    tables = parse(page).tables
    run = json.loads((binary_run / "run.json").read_text())
    counts = {cells[0]: cells[1:] for cells in tables["class-counts"]["rows"]}
    assert counts["pneumonia"] == ["200", "40", "40"] and counts["total"] == ["400", "80", "80"]
    assert "Describe the image." in page and "/cache/clip-vit" in page and "duplicate image" in page
    assert all(v in page for v in run["versions"].values())

    comparisons = json.loads((binary_run / "comparisons.json").read_text())
    table = tables["comparisons"]
    assert len(table["rows"]) == len(comparisons)
    for cells, comparison in zip(table["rows"], comparisons):
        values = numbers(cells[6])
        expected = [comparison["diff"]] + ([comparison["ci_low"], comparison["ci_high"]]
                                           if comparison["ci_low"] is not None else [])
        assert values == pytest.approx(expected, abs=TOL)
        p = comparison["p_value"]
        assert cells[7] == ("< 0.001" if p < 0.001 else f"{p:.3f}")

    efficiency = tables["label-efficiency"]["rows"]
    assert len(efficiency) == len(run["label_efficiency"])
    for cells, row in zip(efficiency, run["label_efficiency"]):
        spread = [row["value_sd"]] if row["n_seeds"] > 1 else []  # one seed: no SD shown
        assert numbers(cells[5]) == pytest.approx([row["value_mean"], *spread], abs=TOL)
        assert float(cells[6].rstrip("%")) == pytest.approx(100 * row["fraction_of_full"], abs=0.05)


def test_label_efficiency_table_computed_when_run_json_has_none(multiclass_run: Path) -> None:
    rows = pd.DataFrame(json.loads((multiclass_run / "results.json").read_text()))
    selected = rows[rows["selected"] & (rows["metric"] == "auc")]
    table = parse((multiclass_run / "report.html").read_text(encoding="utf-8")).tables["label-efficiency"]["rows"]
    assert len(table) == 3 * 3
    for cells in table:
        part = selected[(selected["backbone"] == cells[0]) & (selected["train_fraction"] == float(cells[1]))]
        assert int(cells[2]) == len(part)
        spread = [part["value"].std(ddof=1)] if len(part) > 1 else []  # sample SD; one seed: "n/a"
        assert numbers(cells[5]) == pytest.approx([part["value"].mean(), *spread], abs=TOL)
        assert cells[5].endswith("n/a") == (len(part) == 1)


# --------------------------------------------------------------------------- safety of the page
@pytest.mark.parametrize("run_fixture", ["binary_run", "multiclass_run"])
def test_page_is_self_contained(run_fixture: str, request: pytest.FixtureRequest) -> None:
    page = (request.getfixturevalue(run_fixture) / "report.html").read_text(encoding="utf-8")
    lowered = page.lower()
    for pattern in ('src="http', "src='http", 'href="http', "href='http", "url(", "@import", "<link", "<iframe",
                    'src="//', 'href="//'):
        assert pattern not in lowered, pattern
    images = parse(page).images
    assert images and all(src.startswith("data:image/svg+xml;base64,") for src in images)


def test_user_text_is_escaped(binary_run: Path, multiclass_run: Path) -> None:
    page = (binary_run / "report.html").read_text(encoding="utf-8")
    assert page.count("<script") == 1  # only the report's own table-sorting script
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page  # sample id and note, escaped (markupsafe)
    assert "truncated &lt;file&gt;" in page
    skipped = parse(page).tables["skipped"]["rows"]
    assert skipped == [[EVIL, "/data/bad.png", "truncated <file>"]]  # the browser shows the original text
    multi = (multiclass_run / "report.html").read_text(encoding="utf-8")
    assert "carcinoma &amp; &lt;b&gt;" in multi and "carcinoma & <b>" not in multi


def test_report_is_deterministic_and_atomic(binary_run: Path, tmp_path: Path) -> None:
    first = (binary_run / "report.html").read_bytes()
    out = build_report(binary_run, tmp_path)
    assert out == tmp_path / "report.html"
    assert out.read_bytes() == first
    assert not [p for p in list(tmp_path.iterdir()) + list((binary_run / "figures").iterdir())
                if p.name.startswith(".")], "temporary files left behind"


# --------------------------------------------------------------------------- figures
@pytest.mark.parametrize("run_fixture, expected", [
    ("binary_run", {"metric_bars", "per_class_f1", "layer_curves", "label_efficiency", "roc_curves"}),
    ("multiclass_run", {"metric_bars", "per_class_auc", "per_class_f1", "per_group", "layer_curves",
                        "label_efficiency", "roc_curves"}),
    ("multilabel_run", {"metric_bars", "per_class_auc", "per_class_f1", "layer_curves", "label_efficiency",
                        "roc_curves"}),
])
def test_figures_saved_as_png_and_svg(run_fixture: str, expected: set[str], request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(run_fixture)
    written = save_figures(path)
    assert {p.stem for p in written} == expected
    assert sorted(p.name for p in (path / "figures").iterdir()) == sorted(f"{n}.{f}" for n in expected
                                                                          for f in ("png", "svg"))
    for p in written:
        if p.suffix == ".png":
            with Image.open(p) as image:
                image.load()
                assert image.width >= 500 and image.height >= 300
                assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
        else:
            assert ET.parse(p).getroot().tag.endswith("svg")


def test_metric_bars_show_values_and_cis(binary_run: Path) -> None:
    run = load_run(binary_run)
    fig = metric_bars(run)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]
    assert [b.get_label() for b in bars] == ["clip-vit", "pixels"]
    rows = run.selected("auc")
    for container in bars:
        part = rows[rows["backbone"] == container.get_label()].sort_values("train_fraction")
        means = part.groupby("train_fraction")["value"].mean().to_numpy()
        assert [p.get_height() for p in container.patches] == pytest.approx(means)
        segments = container.errorbar.lines[2][0].get_segments()
        full = part[part["train_fraction"] == 1.0].iloc[0]  # one seed: error bar = that fit's CI
        assert segments[-1][:, 1] == pytest.approx([full["ci_low"], full["ci_high"]])
    assert ax.get_ylabel() == "Test AUROC (positive class)"


def test_subgroup_forest(multiclass_run: Path) -> None:
    """One row per group (top to bottom in row order), one marker + CI per backbone's selected layer."""
    run = load_run(multiclass_run)
    ax = subgroup_forest(run).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert [label.split(" (n=")[0] for label in labels] == ["liver", "kidney", "lung"]
    rows = run.results
    containers = [c for c in ax.containers if hasattr(c, "lines")]
    assert [c.get_label().split(" (")[0] for c in containers] == ["vlm", "cnn", "pixels"]
    for container in containers:
        backbone = container.get_label().split(" (")[0]
        part = rows[(rows["backbone"] == backbone) & (rows["train_fraction"] == 1.0) & rows["selected"]]
        expected = [part[part["metric"] == f"auc@{g}"]["value"].iloc[0] for g in ("liver", "kidney", "lung")]
        xs = np.asarray(container.lines[0].get_xdata(), dtype=float)
        assert list(xs) == pytest.approx(expected, nan_ok=True)
        ys = np.asarray(container.lines[0].get_ydata(), dtype=float)
        assert list(np.argsort(-ys)) == [0, 1, 2]  # the first group is drawn on top
    assert np.isnan(xs[-1])  # undefined in that group: no marker, an "n/a" label instead
    assert any(t.get_text() == "n/a" for t in ax.texts)
    page = (multiclass_run / "report.html").read_text(encoding="utf-8")
    cells = [r for r in parse(page).tables["results"]["rows"] if r[4] == "auc@lung" and r[0] == "pixels"]
    assert cells and all(c[5] == "n/a" and c[6] == "n/a" for c in cells)
    assert "Some metrics are undefined (n/a)" in page


def test_layer_curves_for_every_fraction_with_validation(multiclass_run: Path) -> None:
    """One panel per backbone x train fraction (first seed); test curve, validation curve, star."""
    run = load_run(multiclass_run)
    fig = layer_curves(run)
    assert len(fig.axes) == 2 * 3  # "pixels" has a single layer and gets no row; three fractions
    rows = run.results
    panels = [(b, f) for b in ["vlm", "cnn"] for f in (0.05, 0.25, 1.0)]
    for ax, (backbone, fraction) in zip(fig.axes, panels):
        seed = min(rows[(rows["backbone"] == backbone) & (rows["train_fraction"] == fraction)]["seed"])
        assert ax.get_title(loc="left") == f"{backbone}: train fraction {fraction:g}, seed {seed}"
        assert [t.get_text() for t in ax.get_xticklabels()] == run.layers(backbone)
        fit = rows[(rows["backbone"] == backbone) & (rows["train_fraction"] == fraction) & (rows["seed"] == seed)
                   & (rows["metric"] == "auc")].set_index("layer").loc[run.layers(backbone)]
        test_line = [line for line in ax.lines if line.get_label().startswith("test ")][0]
        val_line = [line for line in ax.lines if line.get_label().startswith("validation ")][0]
        assert list(test_line.get_ydata()) == pytest.approx(fit["value"].tolist())
        assert list(val_line.get_ydata()) == pytest.approx(fit["val_score"].tolist())
        star = [line for line in ax.lines if line.get_marker() == "*"][0]
        chosen = fit[fit["selected"]]
        assert star.get_xdata()[0] == run.layers(backbone).index(chosen.index[0])
        assert star.get_ydata()[0] == pytest.approx(chosen["value"].iloc[0])
        # the selected layer is the best on validation (what the dashed curve shows)
        assert chosen["val_score"].iloc[0] == fit["val_score"].max()


def test_layer_sweep_names_the_study_index_only_when_rows_carry_it(tmp_path: Path) -> None:
    """Rows with ``study_layer`` (a study recipe or protocol) get the study's file index on a top
    axis and an x label saying how it relates; a default run's figure does not mention it."""
    from medprobe.probes.study_recipes import study_layer

    path = make_run_dir(tmp_path / "run", backbones={"idefics": [str(k) for k in range(1, 9)], "pixels": ["raw"]},
                        fractions=(1.0,), seeds=(0,))
    plain = layer_curves(load_run(path))
    assert all("study" not in ax.get_xlabel() for ax in plain.axes)
    assert not [child for ax in plain.axes for child in ax.child_axes]
    rows = json.loads((path / "results.json").read_text())
    for row in rows:
        row["study_layer"] = study_layer(row["layer"])  # None for "raw", as the run writes it
    (path / "results.json").write_text(json.dumps(rows))
    fig = layer_curves(load_run(path))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "medprobe layer (top axis: study file index = layer \N{MINUS SIGN} 1)"
    (top,) = ax.child_axes
    assert [t.get_text() for t in top.get_xticklabels()] == [str(k) for k in range(8)]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(1, 9)]


def test_label_efficiency_axis_spans_the_data(binary_run: Path) -> None:
    run = load_run(binary_run)
    ax = label_efficiency_curves(run).axes[0]
    selected = run.selected("auc")
    low, high = ax.get_ylim()
    assert low <= selected["ci_low"].min() and high >= selected["ci_high"].max()
    spread = selected["ci_high"].max() - selected["ci_low"].min()
    assert high - low <= spread + 2 * max(0.02, 0.08 * spread) + 1e-9  # no wasted range beyond the margin
    chance = [line for line in ax.lines if line.get_label().startswith("chance")]
    assert bool(chance) == (low <= 0.5 <= high)


def test_label_efficiency_uses_log_x_and_seed_means(multiclass_run: Path) -> None:
    run = load_run(multiclass_run)
    ax = label_efficiency_curves(run).axes[0]
    assert ax.get_xscale() == "log"
    line = [line for line in ax.lines if line.get_label() == "vlm"][0]
    selected = run.selected("auc")
    expected = selected[selected["backbone"] == "vlm"].groupby("train_fraction")["value"].mean()
    assert list(line.get_xdata()) == pytest.approx([0.05, 0.25, 1.0])
    assert list(line.get_ydata()) == pytest.approx(expected.to_numpy())


@pytest.mark.parametrize("run_fixture", ["binary_run", "multiclass_run", "multilabel_run"])
def test_roc_auc_matches_mann_whitney(run_fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(run_fixture)
    run = load_run(path)
    ax = roc_curves(run).axes[0]
    predictions = pd.read_parquet(path / "predictions.parquet")
    results = run.results
    for backbone in run.backbones:
        chosen = results[(results["backbone"] == backbone) & (results["train_fraction"] == 1.0) & results["selected"]
                         & (results["metric"] == "auc")].iloc[0]
        part = predictions[(predictions["backbone"] == backbone) & (predictions["layer"] == chosen["layer"])
                           & (predictions["train_fraction"] == 1.0)]
        if run.task_type == "binary":
            truth, scores = part["y_true"].to_numpy() == 1, part[f"score[{run.classes[1]}]"].to_numpy()
        elif run.task_type == "multilabel":  # micro-average: every label decision pooled
            truth = (part[[f"true[{c}]" for c in run.classes]].to_numpy() == 1).ravel()
            scores = part[[f"score[{c}]" for c in run.classes]].to_numpy().ravel()
        else:  # micro-average: every class-vs-rest decision pooled
            truth = (np.eye(len(run.classes))[part["y_true"]] == 1).ravel()
            scores = part[[f"score[{c}]" for c in run.classes]].to_numpy().ravel()
        u = mannwhitneyu(scores[truth], scores[~truth]).statistic
        expected = u / (truth.sum() * (~truth).sum())
        label = [line.get_label() for line in ax.lines if line.get_label().startswith(f"{backbone} (")][0]
        assert label.startswith(f"{backbone} ({chosen['layer']}): ")
        assert float(label.rsplit(" ", 1)[1]) == pytest.approx(expected, abs=TOL)
        if run.task_type == "binary":
            assert expected == pytest.approx(chosen["value"])
            assert "micro" not in label
        else:
            assert "micro AUROC" in label


def test_missing_data_skips_figures_with_notes(tmp_path: Path) -> None:
    path = make_run_dir(tmp_path / "run", backbones={"pixels": ["raw"]}, fractions=(1.0,), seeds=(0,),
                        predictions=False, label_efficiency=False)
    stale = path / "figures" / "layer_curves.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old figure from an earlier build")
    build_report(path)
    assert sorted(p.name for p in (path / "figures").iterdir()) == [
        "metric_bars.png", "metric_bars.svg", "per_class_f1.png", "per_class_f1.svg"]
    page = (path / "report.html").read_text(encoding="utf-8")
    assert "Layer sweep not drawn: every backbone was probed at a single layer" in page
    assert "Label efficiency not drawn: the run used a single train fraction" in page
    assert "ROC curves not drawn: the run folder has no predictions.parquet" in page
    assert "none: paired tests need at least two backbones." in page
    assert "Multiple-choice" not in page


def test_mcq_section_and_figure(tmp_path: Path) -> None:
    path = make_run_dir(tmp_path / "run", backbones={"pixels": ["raw"]}, fractions=(1.0,), seeds=(0,))
    (path / "mcq_results.json").write_text(json.dumps(MCQ_SUMMARY))
    with (path / "mcq_cases.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "parsed_option", "correct_option", "correct", "raw_answer"])
        writer.writerow(["c1", "B", "B", "True", f"B {EVIL}"])
        writer.writerow(["c2", "", "D", "False", "no idea"])
    build_report(path)
    page = (path / "report.html").read_text(encoding="utf-8")
    tables = parse(page).tables
    assert tables["mcq"]["rows"][0] == ["tiny-vlm", "generate", "—", "50", "0", "0.420 [0.290, 0.560]", "3", "—"]
    assert tables["mcq-cases"]["rows"][0][-1] == f"B {EVIL}"
    assert "0.400" in page  # stratum without CI still listed
    assert (path / "figures" / "mcq_strata.svg").is_file() and 'id="fig-mcq_strata"' in page

    ax = mcq_strata(MCQ_SUMMARY).axes[0]
    guess = [line for line in ax.lines if line.get_label().startswith("random guessing")][0]
    assert list(guess.get_ydata()) == [0.2, 0.2] and guess.get_linestyle() == "--"
    model = [c for c in ax.containers if c.get_label() == "tiny-vlm (95% CI)"][0].lines[0]
    assert list(model.get_ydata())[0] == 0.2 and np.isnan(model.get_ydata()[1])

    (path / "mcq_results.json").write_text(json.dumps({"model": "partial", "accuracy": 0.3}))
    build_report(path)
    page = (path / "report.html").read_text(encoding="utf-8")
    assert "Multiple-choice accuracy by difficulty not drawn" in page and "0.300" in page
    assert not (path / "figures" / "mcq_strata.svg").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "results.json").unlink(), "results.json is missing"),
    (lambda p: (p / "results.json").write_text('[{"task": '), "results.json is not valid JSON"),
    (lambda p: (p / "results.json").write_text('[{"task": "t"}]'), "result rows lack the field(s)"),
    (lambda p: (p / "run.json").write_text("[]"), "run.json must hold a JSON object"),
    (lambda p: (p / "results.json").write_text(json.dumps(
        [{**json.loads((p / "results.json").read_text())[0], "seed": "zero"}])), "row 0 needs a train_fraction"),
])
def test_damaged_run_folder_names_the_file(tmp_path: Path, damage: Any, message: str) -> None:
    path = make_run_dir(tmp_path / "run", backbones={"pixels": ["raw"]}, fractions=(1.0,), seeds=(0,),
                        predictions=False)
    damage(path)
    with pytest.raises(DataError, match=re.escape(message)):
        build_report(path)


# --------------------------------------------------------------------------- what the page explains
def test_binary_task_shows_one_auc_row_per_probe(binary_run: Path) -> None:
    rows = json.loads((binary_run / "results.json").read_text())
    page = (binary_run / "report.html").read_text(encoding="utf-8")
    table = parse(page).tables["results"]
    metric = table["head"].index("metric")
    shown = [cells[metric] for cells in table["rows"]]
    probes = {(r["backbone"], r["layer"], r["train_fraction"], r["seed"]) for r in rows}
    assert shown.count("auc") == len(probes) and not [m for m in shown if m.startswith("auc[")]
    assert f"{len(table['rows'])} of the {len(rows)} rows" in page


def test_p_value_disagreement_is_explained(binary_run: Path, multiclass_run: Path) -> None:
    comparisons = json.loads((binary_run / "comparisons.json").read_text())
    pairs: dict[tuple, dict[str, float]] = {}
    for c in comparisons:
        pairs.setdefault((c["backbone_a"], c["train_fraction"], c["seed"]), {})[c["test"]] = c["p_value"]
    differing = [k for k, t in pairs.items() if abs(t["paired_bootstrap"] - t["delong"]) > 0.05
                 or (t["paired_bootstrap"] < 0.05) != (t["delong"] < 0.05)]
    assert differing  # the fixture's DeLong p = 0.0004 against bootstrap p in (0, 0.2)
    page = (binary_run / "report.html").read_text(encoding="utf-8")
    assert "Why the two p-values differ" in page
    assert page.count('class="muted pdiff"') == len(differing)
    multi = (multiclass_run / "report.html").read_text(encoding="utf-8")  # no DeLong rows: no note
    assert "Why the two p-values differ" not in multi


def test_models_table_lists_every_layer(multiclass_run: Path) -> None:
    page = (multiclass_run / "report.html").read_text(encoding="utf-8")
    models = {cells[0]: cells for cells in parse(page).tables["models"]["rows"]}
    assert models["vlm"][1] == "3: l2, l6, l10" and models["cnn"][1] == "2: pool, fc"


def test_page_structure_comes_from_templates() -> None:
    """The HTML lives in autoescaping Jinja2 templates shipped as package data, not in Python strings."""
    from importlib.resources import files

    from medprobe.report import html

    templates = files("medprobe.report") / "templates"
    assert (templates / "report.html.j2").is_file() and (templates / "macros.html.j2").is_file()
    assert html._environment().autoescape is True
    source = Path(html.__file__).read_text()
    assert "<table" not in source and "<section" not in source and "html.escape" not in source


# --------------------------------------------------------------------------- issue 14 / 16 fields
def _ece_from_bins(bins: list[dict[str, Any]]) -> float:
    """ECE written from its definition: sum over bins of n_b / N * |observed_b - mean probability_b|."""
    total = sum(b["n"] for b in bins)
    return sum(b["n"] / total * abs(b["observed_frequency"] - b["mean_probability"]) for b in bins if b["n"])


def add_statistics_fields(path: Path, *, n_patients: int = 30) -> Path:
    """Give a make_run_dir folder what issue 14's statistics write: resampling unit, training sizes,
    a non-converged selected probe, ECE rows with reliability bins, group rows with their column,
    Holm/BH/family on comparisons, a clustered DeLong row, a not-applicable row, the replicate
    t-test, run.json ``statistics`` and the label-efficiency CIs."""
    rng = np.random.default_rng(7)
    rows = json.loads((path / "results.json").read_text())
    for row in rows:
        row.update(bootstrap_unit="patient", n_units=n_patients, converged=True,
                   n_train=int(round(400 * row["train_fraction"])) + 3, n_val=80)
    selected = [r for r in rows if r["selected"] and r["metric"] == "auc"]
    selected[0]["converged"] = False
    for row in selected:
        bins = []
        for b in range(10):
            n = int(rng.integers(0, 12)) if b not in (0, 9) else 0
            mean = (b + rng.random()) / 10
            bins.append({"bin_low": b / 10, "bin_high": (b + 1) / 10, "n": n,
                         "mean_probability": mean if n else None,
                         "observed_frequency": float(np.clip(mean + rng.normal(0, 0.15), 0, 1)) if n else None})
        ece = _ece_from_bins(bins)
        rows.append({**row, "metric": "ece", "value": ece, "ci_low": ece - 0.03, "ci_high": ece + 0.04, "sd": 0.02,
                     "reliability": bins, "n_bins": 10, "calibrated": "positive-class probability"})
        for group, value in (("F", 0.81), ("M", 0.74)):
            rows.append({**row, "metric": f"auc@sex={group}", "value": value, "ci_low": value - 0.1,
                         "ci_high": value + 0.08, "n_test": 40, "group_column": "sex", "group": group,
                         "n_units": n_patients // 2})
    (path / "results.json").write_text(json.dumps(rows, indent=1))

    comparisons = json.loads((path / "comparisons.json").read_text())
    for c in comparisons:
        c.update(bootstrap_unit="patient", n_units=n_patients, p_holm=c["p_value"], p_bh=c["p_value"], n_family=1)
        if c["test"] == "delong":
            c.update(method="obuchowski", z=3.5)
    first = comparisons[0]
    comparisons.append({**first, "metric": "auc[pneumonia]", "test": "delong", "diff": None, "ci_low": None,
                        "ci_high": None, "p_value": None, "p_holm": None, "p_bh": None, "n_family": 0,
                        "note": "DeLong not applicable: only one positive"})
    comparisons.append({**first, "test": "replicate_t_test", "ci_low": None, "ci_high": None, "t": 48.7,
                        "p_value": 1e-40, "n_replicates": 1000, "warning": "T-TEST WARNING: not a valid test"})
    (path / "comparisons.json").write_text(json.dumps(comparisons, indent=1))

    run = json.loads((path / "run.json").read_text())
    run["statistics"] = {"bootstrap_unit": "patient", "n_units": n_patients, "bootstrap_unit_requested": "patient",
                         "n_bootstrap": 1000, "ci": "percentile, 95 %",
                         "multiplicity": "Holm and Benjamini-Hochberg across classes",
                         "paired_t_test_warning": "T-TEST WARNING: not a valid test",
                         "warnings": ["selected probe did not converge: clip-vit layer X (train fraction 0.1, seed 0)"]}
    for entry in run["label_efficiency"]:
        at = [r for r in selected if r["backbone"] == entry["backbone"]
              and r["train_fraction"] == entry["train_fraction"]]
        entry.update(n_train=[r["n_train"] for r in at], n_val=[80] * len(at),
                     n_train_mean=float(np.mean([r["n_train"] for r in at])),
                     value_sd=entry["value_sd"] if entry["n_seeds"] > 1 else None,
                     fraction_of_full_ci_low=entry["fraction_of_full"] - 0.05,
                     fraction_of_full_ci_high=entry["fraction_of_full"] + 0.04,
                     chance_corrected_ratio=entry["fraction_of_full"] - 0.1,
                     chance_corrected_ci_low=entry["fraction_of_full"] - 0.2,
                     chance_corrected_ci_high=entry["fraction_of_full"] + 0.01,
                     ratio_ci_method="two-level bootstrap: test replicates x seeds (with replacement)")
    (path / "run.json").write_text(json.dumps(run, indent=1))
    return path


@pytest.fixture(scope="module")
def statistics_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = add_statistics_fields(make_run_dir(tmp_path_factory.mktemp("statistics")))
    build_report(path)
    return path


def test_resampling_unit_is_stated_beside_the_cis(statistics_run: Path) -> None:
    page = (statistics_run / "report.html").read_text(encoding="utf-8")
    statement = "95 % CI: percentile bootstrap over 30 patients (1,000 replicates)"
    for section in ("summary", "headline", "calibration", "per-class", "results", "notes"):
        body = page.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
        assert statement in body, section
    assert "Paired bootstrap over 30 patients (1,000 replicates)" in page
    assert "the best of the grid" in page and "optimistic" in page


def test_comparisons_show_adjusted_p_values_and_the_t_test_apart(statistics_run: Path) -> None:
    tables = parse((statistics_run / "report.html").read_text(encoding="utf-8")).tables
    comparisons = json.loads((statistics_run / "comparisons.json").read_text())
    valid = [c for c in comparisons if c["test"] != "replicate_t_test"]
    table = tables["comparisons"]
    assert table["head"][-4:] == ["p (Holm)", "p (BH)", "family", "note"]
    assert len(table["rows"]) == len(valid)
    for cells, c in zip(table["rows"], valid):
        for text, key in ((cells[7], "p_value"), (cells[8], "p_holm"), (cells[9], "p_bh")):
            p = c[key]
            assert text == ("n/a" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}")
        assert cells[10] == str(c["n_family"])
        if c["test"] == "delong" and c.get("method") == "obuchowski":
            assert cells[5] == "DeLong (Obuchowski, clustered)"
    assert table["rows"][-1][-1] == "DeLong not applicable: only one positive"
    t_rows = tables["replicate-t-test"]["rows"]
    assert len(t_rows) == 1 and t_rows[0][6] == "48.70" and t_rows[0][7] == "1000"
    page = (statistics_run / "report.html").read_text(encoding="utf-8")
    assert '<p class="note warn">Warning: T-TEST WARNING: not a valid test</p>' in page


def test_label_efficiency_table_and_axis_use_the_sizes_used(statistics_run: Path) -> None:
    tables = parse((statistics_run / "report.html").read_text(encoding="utf-8")).tables
    run = json.loads((statistics_run / "run.json").read_text())
    rows = tables["label-efficiency"]["rows"]
    assert len(rows) == len(run["label_efficiency"])
    for cells, entry in zip(rows, run["label_efficiency"]):
        sizes = sorted(set(entry["n_train"]))
        assert cells[3] == (str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}")
        assert cells[4] == "80"
        assert cells[5].endswith("n/a") == (entry["n_seeds"] == 1)
        share = [float(x) for x in re.findall(r"-?\d+\.\d+", cells[6])]
        assert share == pytest.approx([100 * entry[k] for k in ("fraction_of_full", "fraction_of_full_ci_low",
                                                                "fraction_of_full_ci_high")], abs=0.05)
        corrected = [float(x) for x in re.findall(r"-?\d+\.\d+", cells[7])]
        assert corrected == pytest.approx([100 * entry[k] for k in ("chance_corrected_ratio", "chance_corrected_ci_low",
                                                                    "chance_corrected_ci_high")], abs=0.05)
    ax = label_efficiency_curves(load_run(statistics_run)).axes[0]
    # n_train = round(400 f) + 3 in the fixture: the axis shows what was used, not f x train size
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1\n(n=43)", "0.5\n(n=203)", "1\n(n=403)"]


def test_calibration_table_and_reliability_diagram(statistics_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = parse((statistics_run / "report.html").read_text(encoding="utf-8")).tables
    ece_rows = [r for r in json.loads((statistics_run / "results.json").read_text()) if r["metric"] == "ece"]
    table = tables["calibration"]["rows"]
    assert len(table) == len(ece_rows)
    for cells, row in zip(table, ece_rows):
        assert numbers(cells[4]) == pytest.approx([row["value"], row["ci_low"], row["ci_high"]], abs=TOL)
        assert cells[6] == f"{sum(1 for b in row['reliability'] if b['n'])}/10"
    run = load_run(statistics_run)
    assert "bins of equal count" in " ".join(reliability_diagram(run).axes[0].get_title().split())  # 80 test images
    import medprobe.report.figures.statistics as statistics_figures

    monkeypatch.setattr(statistics_figures, "EQUAL_COUNT_BELOW", 0)  # the results.json bins, as on a large test set
    fig = reliability_diagram(run)
    top, bottom = fig.axes[:2]
    for line in [line for line in top.lines if "ECE" in line.get_label()]:
        backbone = line.get_label().split(" (")[0]
        row = next(r for r in ece_rows if r["backbone"] == backbone and r["train_fraction"] == 1.0)
        filled = [b for b in row["reliability"] if b["n"]]
        assert list(line.get_xdata()) == pytest.approx([b["mean_probability"] for b in filled])
        assert list(line.get_ydata()) == pytest.approx([b["observed_frequency"] for b in filled])
        # the legend's ECE is the bins' weighted gap, recomputed here from the definition
        assert f"ECE {_ece_from_bins(row['reliability']):.3f}" in line.get_label()
    assert sum(p.get_height() for p in bottom.patches) == sum(
        b["n"] for r in ece_rows if r["train_fraction"] == 1.0 for b in r["reliability"])
    assert (statistics_run / "figures" / "reliability.png").is_file()
    assert (statistics_run / "figures" / "reliability.svg").is_file()


def test_subgroups_table_and_forest(statistics_run: Path) -> None:
    tables = parse((statistics_run / "report.html").read_text(encoding="utf-8")).tables
    rows = [r for r in json.loads((statistics_run / "results.json").read_text()) if "@" in r["metric"]]
    table = tables["subgroups"]["rows"]
    assert len(table) == len(rows)
    for cells, row in zip(table, rows):
        assert cells[:3] == ["sex", row["group"], row["backbone"]]
        assert numbers(cells[6]) == pytest.approx([row["value"], row["ci_low"], row["ci_high"]], abs=TOL)
        assert cells[8] == "15 patients"
    ax = subgroup_forest(load_run(statistics_run)).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sex=F (n=40)", "sex=M (n=40)"]


def test_unconverged_probe_and_per_class_f1_are_shown(statistics_run: Path) -> None:
    page = (statistics_run / "report.html").read_text(encoding="utf-8")
    tables = parse(page).tables
    flagged = [r for r in tables["headline"]["rows"] if "not converged" in r[1]]
    assert len(flagged) == 1
    assert "Warning: selected probe did not converge: clip-vit layer X" in page
    # a converged: false row the warnings list does not name is added to it
    assert page.count("Warning: selected probe did not converge") == 2
    per_class = tables["per-class"]
    assert per_class["head"][-1] == "F1 (class vs rest) [95% CI]"
    rows = json.loads((statistics_run / "results.json").read_text())
    for cells in per_class["rows"]:
        row = next(r for r in rows if r["backbone"] == cells[0] and r["layer"] == cells[1]
                   and r["train_fraction"] == 1.0 and r["metric"] == f"f1[{cells[2]}]")
        assert numbers(cells[3]) == pytest.approx([row["value"], row["ci_low"], row["ci_high"]], abs=TOL)


MCQ_STUDY_SUMMARY = {
    **MCQ_SUMMARY, "prompt_style": "study", "n_tries": 3, "n_shots": 2, "n_without_human_value": 4,
    "n_without_specialty": 1,
    "correct_within_n": {str(m): {"n": 50, "accuracy": a, "ci_low": a - 0.12, "ci_high": a + 0.12}
                         for m, a in ((1, 0.44), (2, 0.5), (3, 0.56))},
    "strata": [{**s, "within_n": {"n": s["n"], "accuracy": 0.7, "ci_low": 0.4, "ci_high": 0.9}} if s["n"] else s
               for s in MCQ_SUMMARY["strata"]],
    "per_specialty": [{"specialty": "cardiology", "n": 20, "accuracy": 0.45, "ci_low": 0.26, "ci_high": 0.66,
                       "within_n": {"n": 20, "accuracy": 0.6, "ci_low": 0.39, "ci_high": 0.78}}],
    "study_reference": {"primary": {"k": 375, "n": 929, "accuracy": 375 / 929},
                        "within_3": {"k": 504, "n": 929, "accuracy": 504 / 929}},
    "order_robustness": {"n_cases": 50, "original_accuracy": 0.42,
                         "option_order": {"permutations": 3, "accuracy_mean": 0.38, "accuracy_sd": 0.02,
                                          "accuracy_min": 0.36, "accuracy_max": 0.4, "share_changed_any": 0.3},
                         "shots_swapped": {"n": 50, "accuracy": 0.4, "ci_low": 0.27, "ci_high": 0.54,
                                           "share_changed": 0.12}},
}


def test_mcq_within_n_robustness_and_study_figure(tmp_path: Path) -> None:
    path = make_run_dir(tmp_path / "run", backbones={"pixels": ["raw"]}, fractions=(1.0,), seeds=(0,))
    (path / "mcq_results.json").write_text(json.dumps(MCQ_STUDY_SUMMARY))
    build_report(path)
    page = (path / "report.html").read_text(encoding="utf-8")
    tables = parse(page).tables
    assert tables["mcq"]["rows"][0] == ["tiny-vlm", "generate", "study", "50", "2", "0.420 [0.290, 0.560]", "3",
                                        "0.560 [0.440, 0.680]", "3", "4"]
    assert "4 case(s) had no human-percent value" in page
    assert "40.4% (375 / 929)" in page and "54.3% (504 / 929)" in page
    robust = tables["mcq-robustness"]["rows"]
    assert robust[1][2] == "38.0% ± 2.0% (range 36.0%–40.0%)" and robust[1][3] == "30.0%"
    assert robust[2][2] == "0.400 [0.270, 0.540]" and robust[2][3] == "12.0%"
    specialty = [r for name, t in tables.items() for r in t["rows"] if r and r[0] == "cardiology"]
    assert specialty == [["cardiology", "20", "0.450 [0.260, 0.660]", "0.600 [0.390, 0.780]"]]
    # the MCQ package's study figure (two panels, within-n series) is the one embedded
    from medprobe.report.figures.mcq import mcq_figure

    fig = mcq_figure([MCQ_STUDY_SUMMARY], chance=0.2)
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "correct within 3 sampled tries" in labels
    assert (path / "figures" / "mcq_strata.svg").is_file()
