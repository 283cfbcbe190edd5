"""A newcomer's first hour: errors that name the bad key, CLI conventions, skipped images on the
console, messages that say which fit failed, and waiting for a cache lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import medprobe
from medprobe.cli import app
from medprobe.config import DataConfig, parse_config
from medprobe.data.loaders import load_dataset
from medprobe.errors import CacheError, ConfigError, DataError
from medprobe.experiment import run_experiment
from medprobe.stages.data import check_train_classes
from medprobe.features.cache import FeatureCache
from medprobe.run_checks import check_options

from conftest import ToyBackbone, make_dataset

SRC = Path(__file__).resolve().parents[2] / "src"


def image_tree(root: Path, per_class: int = 12, classes=("benign", "malignant"), corrupt: int = 0) -> Path:
    """``root/<class>/<i>.png``: class 1 brighter, so a pixel probe can tell them apart."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(80 + 90 * k, 25, (12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    for i in range(corrupt):
        (root / classes[0] / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed entry point in a subprocess: stderr is a pipe, as in `medprobe ... | tee log`."""
    environment = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-c", "from medprobe.cli import main; main()", *args],
                          capture_output=True, text=True, env=environment, timeout=120)


# ------------------------------------------------------------------------------- conventions
def test_version_and_short_help():
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"medprobe {medprobe.__version__}"
    short = runner.invoke(app, ["run", "-h"])
    assert short.exit_code == 0 and "--engine" in short.output and "local|ray" in short.output
    assert "--wait-for-lock" in short.output


def test_config_error_is_fast_and_unwrapped_when_piped(tmp_path):
    """No heavy import before validation, and a piped message is one line however long."""
    long_key = "a_rather_long_misspelled_option_name_" * 4
    run_file = tmp_path / "bad.yaml"
    run_file.write_text(yaml.safe_dump({"data": {"adapter": "medmnist", long_key: 1},
                                        "backbones": [{"name": "pixels"}]}))
    code = ("import sys, time; t = time.process_time(); sys.argv = ['medprobe', 'run', sys.argv[1]]\n"
            "from medprobe.cli import main\ntry: main()\nexcept SystemExit: pass\n"
            "mods = [m for m in ('torch', 'medprobe.experiment', 'sklearn', 'onnxruntime') if m in sys.modules]\n"
            "print('CPU', time.process_time() - t, 'HEAVY', mods)")
    result = subprocess.run([sys.executable, "-c", code, str(run_file)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout
    # a bound that only a heavy import (torch alone takes several seconds) could break, whatever the
    # CPU and its load: pandas, which the adapters' signatures bring in, costs 0.9-1.5 s here
    assert float(result.stdout.split()[1]) < 3.0, result.stdout
    error_lines = [line for line in result.stderr.splitlines() if long_key in line]
    assert len(error_lines) == 1 and "unknown key" in error_lines[0], result.stderr


@pytest.mark.parametrize("options, message", [
    ({"sise": 3}, "backbone 'pixels' does not accept option(s) ['sise'] (did you mean 'size' for 'sise'?); "
                  "it accepts ['grayscale', 'size']"),
])
def test_backbone_option_typo_names_key_and_valid_ones(tmp_path, options, message):
    config = parse_config({"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels"},
                                                                         {"name": "pixels", "label": "p2",
                                                                          "options": options}]})
    with pytest.raises(ConfigError) as error:
        check_options(config)
    assert str(error.value) == f"backbones.1.options: {message}"


def test_backbone_options_of_wrapped_factories_are_known():
    """IDEFICS/CLIP presets pass **options through; their accepted names are declared, not lost."""
    config = parse_config({"data": {"adapter": "medmnist"},
                           "backbones": [{"name": "idefics-9b", "options": {"pooling": "mean", "promt": "x"}}]})
    with pytest.raises(ConfigError, match=r"\['promt'\].*'prompt' for 'promt'.*'vision_pooling'"):
        check_options(config)
    clip = parse_config({"data": {"adapter": "medmnist"}, "backbones": [{"name": "plip", "options": {"prompt": "x"}}]})
    with pytest.raises(ConfigError, match=r"backbone 'plip' does not accept option\(s\) \['prompt'\]"):
        check_options(clip)


def test_adapter_option_typo_from_the_cli(tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"data": {"adapter": "image_folder", "options": {"clases": ["a"]}},
                                        "backbones": [{"name": "pixels"}]}))
    result = cli("run", str(run_file), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert ("data.options: ['clases'] not accepted by adapter 'image_folder' (did you mean 'classes' for "
            "'clases'?); it takes ['classes', 'fractions', 'max_size', 'name', 'root', 'seed']") in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_unknown_adapter_suggests_the_close_name():
    with pytest.raises(ConfigError, match=r"unknown adapter 'image_folders' \(did you mean 'image_folder'\?\)"):
        check_options(parse_config({"data": {"adapter": "image_folders"}, "backbones": [{"name": "pixels"}]}))


def test_data_root_fills_image_folder_root(tmp_path, monkeypatch):
    image_tree(tmp_path / "scans")
    from_config = load_dataset(DataConfig(adapter="image_folder", root=str(tmp_path / "scans")))
    assert from_config.classes == ["benign", "malignant"] and len(from_config.samples) == 24
    monkeypatch.setenv("MEDPROBE_DATA_DIR", str(tmp_path / "scans"))
    from_env = load_dataset(DataConfig(adapter="image_folder"))
    assert from_env.samples["source"].tolist() == from_config.samples["source"].tolist()


def test_missing_required_adapter_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"adapter 'manifest' needs \['path'\]"):
        load_dataset(DataConfig(adapter="manifest", root=str(tmp_path)))


# ----------------------------------------------------------------------------- messages
def test_one_class_training_subset_names_class_fit_and_split():
    dataset = make_dataset(12)
    with pytest.raises(DataError) as error:
        check_train_classes(dataset, np.array([1, 1, 1]), "pixels, train fraction 0.05, seed 3")
    assert str(error.value) == ("pixels, train fraction 0.05, seed 3: the training split subset of 3 image(s) has "
                                "only class 'pos' of ['neg', 'pos']; a probe needs at least 2 classes -- use a "
                                "larger train fraction or more labelled images of the other class(es)")
    check_train_classes(dataset, np.array([0, 1]), "fine")  # two classes: no error


def test_skipped_images_and_ties_are_printed(tmp_path, capsys):
    image_tree(tmp_path / "scans", per_class=20, corrupt=2)
    config = parse_config({
        "name": "skips", "data": {"adapter": "image_folder", "root": str(tmp_path / "scans"), "on_error": "skip"},
        "backbones": [{"name": "pixels", "options": {"size": 4}}], "cache_dir": str(tmp_path / "cache"),
        "stats": {"n_bootstrap": 10}, "probe": {"Cs": [0.01, 1.0]},
    })
    run_experiment(config, tmp_path / "out", show_progress=False)
    err = capsys.readouterr().err
    assert "warning: skipped 2 unreadable image(s) (data.on_error: skip)" in err
    assert "benign/broken0.png" in err and "benign/broken1.png" in err
    assert "the validation split has only" in err and "samples (< 30)" in err  # 42 images: a handful for val


def test_tied_layers_are_reported(tmp_path, capsys):
    """Two identical layers must tie on validation; the console says the choice was arbitrary."""
    from medprobe.features.extract import extract_features

    class TwinBackbone(ToyBackbone):
        def layer_names(self):
            return ["mean", "copy"]

        def extract(self, images, layers):
            mean = super().extract(images, ["mean"])["mean"]
            return {layer: mean for layer in layers}

    from medprobe.stages.extract import ExtractedFeatures
    from medprobe.stages.probe import probe_backbone

    dataset = make_dataset(40)
    dataset.samples["split"] = ["train", "train", "val", "val", "test", "test", "train", "train"] * 5
    cache = extract_features(TwinBackbone(), dataset, ["mean", "copy"], tmp_path, show_progress=False)
    config = parse_config({"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels", "label": "twin"}],
                           "probe": {"Cs": [1.0]}})
    features = ExtractedFeatures("twin", cache, ["mean", "copy"], {"mean": "main", "copy": "main"}, {}, 0.0)
    probed = probe_backbone(config.probe, config.seed, dataset, features, show_progress=False)
    err = capsys.readouterr().err
    assert "twin: validation ties in 1 of 1 selection(s)" in err
    assert "layers ['mean', 'copy']" in err
    assert [(o.layer, o.selected) for o in probed.outcomes] == [("mean", True), ("copy", False)]


# ----------------------------------------------------------------------------- cache lock
def test_waiting_for_a_cache_lock(tmp_path):
    data = make_dataset(8)
    cache = FeatureCache.open_or_create(tmp_path, "toy", {"backbone": ToyBackbone().fingerprint(),
                                                           "preprocessing": data.preprocessing}, data.sample_ids)
    other = FeatureCache(cache.path)
    held, release = threading.Event(), threading.Event()

    def holder():
        with cache.writer_lock():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    started = time.monotonic()
    with pytest.raises(CacheError, match=r"waited 0.3 s\); wait for it to finish, or rerun with --wait-for-lock"):
        with other.writer_lock(0.3):
            pass
    assert 0.25 < time.monotonic() - started < 5
    threading.Timer(0.3, release.set).start()
    with other.writer_lock(10):  # acquired once the holder lets go
        assert release.is_set()
    thread.join()


def test_engine_and_lock_wait_overrides_are_validated(tmp_path):
    from medprobe.cli import _load

    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels"}]}))
    config, _ = _load(run_file, None, "ray", 5.0)
    assert config.extraction.engine == "ray" and config.extraction.lock_wait_s == 5.0
    result = CliRunner().invoke(app, ["extract", str(run_file), "--engine", "spark"])
    assert result.exit_code == 2 and "extraction.engine" in result.output and "(command-line options)" in result.output
