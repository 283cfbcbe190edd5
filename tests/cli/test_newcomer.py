"""A newcomer's first day (issue 25): every bad input a clear error or a console line that names
what happened, results on stdout and diagnostics on stderr, progress that a log file can show."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medprobe import progress
from medprobe.cli import app
from medprobe.config import DataConfig, parse_config
from medprobe.data.adapters import load_image_folder
from medprobe.errors import ConfigError
from medprobe.outputs import rebuild_report
from medprobe.probes.layer_sweep import validation_size_warning
from medprobe.progress import format_duration, progress_bar
from medprobe.staging import staged_run_folder
from medprobe.stages.data import ensure_validation_split, load_data

from test_cli import cli, image_tree
from test_report import make_run_dir


def pixels_run_file(tmp_path, root, **probe) -> str:
    run = {"name": "toy", "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
           "data": {"adapter": "image_folder", "options": {"root": str(root)}},
           "backbones": [{"name": "pixels"}], "probe": {"Cs": [1.0], **probe}, "stats": {"n_bootstrap": 20}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    return str(tmp_path / "run.yaml")


# ----------------------------------------------------------------------- bad inputs, clear errors
def test_empty_seeds_is_a_config_error():
    with pytest.raises(ConfigError, match="seeds is empty: give at least one seed"):
        parse_config({"name": "x", "data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels"}],
                      "probe": {"train_fractions": [0.5, 1.0], "seeds": []}})


def test_small_validation_warning_names_the_option_of_the_adapter_in_use(tmp_path):
    carved = load_image_folder(image_tree(tmp_path / "flat", per_class=10))
    labels = carved.labels(carved.split("val"))
    text = validation_size_warning(labels, carved.task_type, carved.classes, carved.validation_option)
    assert "data.options.fractions" in text and "probe.val_fraction" not in text
    for split, n in (("train", 10), ("test", 4)):
        image_tree(tmp_path / "split" / split, per_class=n)
    dataset = ensure_validation_split(load_image_folder(tmp_path / "split"), 0.1, 0)
    text = validation_size_warning(dataset.labels(dataset.split("val")), dataset.task_type, dataset.classes,
                                   dataset.validation_option)
    assert "probe.val_fraction" in text and "data.options.fractions" not in text


def test_manifest_rows_without_an_image_are_listed_on_the_console(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    for i in range(24):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    rows = [{"path": f"img/{i}.png", "label": "ab"[i % 2]} for i in range(26)]  # 24.png and 25.png missing
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    load_data(DataConfig(adapter="manifest", options={"path": str(tmp_path / "m.csv")}), val_fraction=0.1, seed=0)
    err = capsys.readouterr().err
    assert "left out 2 row(s)" in err and "image file not found: 2" in err
    assert "img/24.png: image file not found" in err and "img/25.png" in err


def test_output_folder_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(ConfigError, match=r"cannot create the output folder .*plain/runs/x: .*plain is a file"):
        with staged_run_folder(tmp_path / "plain" / "runs" / "x", ()):
            pass
    image_tree(tmp_path / "images", per_class=10)
    result = cli("run", pixels_run_file(tmp_path, tmp_path / "images"), "--out", str(tmp_path / "plain" / "out"))
    assert result.returncode == 2 and "cannot create the output folder" in result.stderr, result.stderr
    assert "unexpected error" not in result.stderr


def test_cache_verify_on_a_folder_that_is_no_cache_exits_2(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    result = CliRunner().invoke(app, ["cache", "verify", str(tmp_path / "photos")])
    assert result.exit_code == 2 and "is not a feature cache" in result.output
    (tmp_path / "empty").mkdir()
    assert CliRunner().invoke(app, ["cache", "verify", str(tmp_path / "empty")]).exit_code == 0


def test_plan_without_a_hugging_face_backbone_says_what_it_can(tmp_path):
    image_tree(tmp_path / "images", per_class=10)
    result = cli("plan", pixels_run_file(tmp_path, tmp_path / "images", train_fractions=[0.5, 1.0], seeds=[0, 1]))
    assert result.returncode == 0, result.stderr
    assert "pixels: not a Hugging Face model" in result.stdout
    assert "extraction: 20 images" in result.stdout
    assert "probes: 1 layer(s) x 3 (fraction, seed) plan(s)" in result.stdout


def test_run_on_a_folder_says_it_is_a_folder(tmp_path):
    image_tree(tmp_path / "images", per_class=3)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "images")])
    assert result.exit_code == 2 and "is a folder, not a run file" in result.output and "medprobe init" in result.output


# ------------------------------------------------------------------------------ unix conventions
def test_listings_go_to_stdout_and_read_well_in_a_pipe():
    backbones = cli("backbones")
    assert backbones.returncode == 0 and "clip-b32" in backbones.stdout and "medprobe layers NAME" in backbones.stderr
    lines = backbones.stdout.splitlines()  # one line per backbone, no box drawing, no padding to 700 chars
    assert lines[0].split()[:3] == ["name", "family", "memory"] and lines[1].startswith("pixels  ")
    assert not any(line.endswith(" ") or "│" in line for line in lines)
    tsv = cli("backbones", "--format", "tsv").stdout.splitlines()
    assert tsv[0].split("\t") == ["name", "family", "memory", "description"]
    assert any(r.startswith("clip-b32\t") for r in tsv)
    layers = cli("layers", "pixels", "--format", "json")
    assert json.loads(layers.stdout) == [{"backbone": "pixels", "stack": "main", "layer": "pixels"}]
    assert "pixels" in cli("layers", "pixels").stdout


def test_help_has_no_placeholder_noise():
    text = CliRunner().invoke(app, ["run", "-h"], terminal_width=120).output
    assert "RUN_FILE" in text and "{run_file}" not in text and "<bool>" not in text


def test_piped_progress_prints_plain_lines_with_rate_and_eta(monkeypatch, capsys):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    monkeypatch.setattr(progress, "MIN_ESTIMATED_S", 0.0)
    with progress_bar("toy: extracting", total=30, unit="images") as advance:
        for _ in range(3):
            advance(10)
    err = capsys.readouterr().err
    assert "toy: extracting: the first 10 images took" in err and "for the remaining 20 images" in err
    assert "10 images of 30 images (33 %)" in err and "ETA" in err and "toy: extracting: done: 30 images" in err


def test_durations_never_say_zero_seconds():
    assert format_duration(0.004) == "< 1 s" and format_duration(42) == "42 s" and format_duration(600) == "10 min"


# ---------------------------------------------------------------------------- atomic rebuilds
def test_report_rebuild_replaces_figures_and_page_at_once_and_keeps_the_rest(tmp_path, monkeypatch):
    run = make_run_dir(tmp_path / "run")
    rebuild_report(run)
    (run / "notes.txt").write_text("mine")
    before = (run / "results.json").read_bytes()
    import medprobe.outputs as outputs

    def broken(*args, **kwargs):
        raise RuntimeError("killed while writing the page")

    monkeypatch.setattr(outputs, "atomic_write_bytes", broken)
    old_page = (run / "report.html").read_bytes()
    with pytest.raises(RuntimeError):
        rebuild_report(run)
    assert (run / "report.html").read_bytes() == old_page  # the old report and figures stand
    assert not [p for p in tmp_path.iterdir() if ".medprobe-" in p.name]
    monkeypatch.undo()
    assert rebuild_report(run) == run.resolve() / "report.html"
    assert (run / "notes.txt").read_text() == "mine" and (run / "results.json").read_bytes() == before
    assert (run / "figures").is_dir()


# ------------------------------------------------------------------------------------- figures
def test_reliability_bins_of_equal_count_on_a_small_test_set(tmp_path):
    from medprobe.report.figures.statistics import equal_count_bins
    from medprobe.report.load import load_run
    from test_report import add_statistics_fields

    rng = np.random.default_rng(0)
    bins = equal_count_bins(rng.random(40), (rng.random(40) < 0.5).astype(float))
    assert [b["n"] for b in bins] == [10, 10, 10, 10] and all(b["bin_low"] <= b["bin_high"] for b in bins)
    run = make_run_dir(tmp_path / "small", n_test=40)
    add_statistics_fields(run)
    from medprobe.report.figures.statistics import reliability_diagram

    fig = reliability_diagram(load_run(run))
    assert "bins of equal count" in " ".join(fig.axes[0].get_title().split())


def test_layer_sweep_of_81_layers_stacks_panels_and_labels_do_not_overlap(tmp_path):
    from medprobe.report.figures.layers import layer_curves
    from medprobe.report.load import load_run

    run = make_run_dir(tmp_path / "big", backbones={"idefics-80b": [str(i) for i in range(81)]},
                       fractions=(0.1, 1.0), seeds=(0,), n_test=40)
    fig = layer_curves(load_run(run))
    width, height = fig.get_size_inches()
    assert width <= 16 and height > 5  # grows in height, not into a 30-inch strip
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert len(boxes) >= 20
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
