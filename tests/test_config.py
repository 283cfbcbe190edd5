"""Run-file validation: unknown keys and wrong types are reported with the path to the bad key."""

from __future__ import annotations

import pytest
import yaml

from medprobe.config import load_config, parse_config
from medprobe.errors import ConfigError

MINIMAL = {"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels"}]}


def test_minimal_config_gets_defaults():
    config = parse_config(MINIMAL)
    assert config.probe.train_fractions == [1.0]
    assert config.stats.n_bootstrap == 1000
    assert config.backbones[0].display_name == "pixels"


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"backbones": [{"name": "pixels", "layer": 3}]}, "backbones.0.layer"),
        ({"probe": {"train_fractions": [0.1, 1.5]}}, "probe.train_fractions"),
        ({"probe": {"Cs": "lots"}}, "probe.Cs"),
        ({"stats": {"n_bootstrap": "many"}}, "stats.n_bootstrap"),
        ({"data": {"adapter": "medmnist", "on_error": "ignore"}}, "data.on_error"),
        ({"extraction": {"engine": "spark"}}, "extraction.engine"),
        ({"extraction": {"lock_wait_s": -1}}, "extraction.lock_wait_s"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_keys_name_their_path(patch, where):
    with pytest.raises(ConfigError) as error:
        parse_config({**MINIMAL, **patch}, "run.yaml")
    assert where in str(error.value)
    assert "run.yaml" in str(error.value)


def test_duplicate_backbones_need_labels():
    with pytest.raises(ConfigError, match="label"):
        parse_config({**MINIMAL, "backbones": [{"name": "pixels"}, {"name": "pixels"}]})
    parse_config({**MINIMAL, "backbones": [{"name": "pixels"}, {"name": "pixels", "label": "pixels-64",
                                                                  "options": {"size": 64}}]})


def test_reference_must_be_a_backbone():
    with pytest.raises(ConfigError, match="stats.reference"):
        parse_config({**MINIMAL, "stats": {"reference": "clip"}})


def test_yaml_errors_are_config_errors(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    path.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_shipped_configs_are_valid():
    from importlib.resources import files
    from pathlib import Path

    parse_config(yaml.safe_load((files("medprobe") / "configs" / "demo.yaml").read_text()))
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")):
        if "mcq" in path.name:
            continue
        load_config(path)
