"""Contract tests over the registry itself (timm's ``test_models.py`` idea): every registered backbone,
and every model record, is checked without anyone writing a test for it.

* the registry refuses a name registered twice (eva's registry test);
* every record is complete: a hub source, a known family, a loader's description and memory note, a
  default prompt style its family takes, a tiny test model for its family;
* every Hugging Face preset builds on the meta device from its record and has the layer counts and
  widths its record states;
* every named backbone honours the :class:`~medprobe.models.base.Backbone` contract (Hugging Face
  presets through a tiny random copy of their family, loaded with ``path=``): layer names unique and
  each in a declared stack, float32 ``(n, dim)`` features, a JSON-serialisable fingerprint.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medprobe.errors import ModelError
from medprobe.models.records import FAMILIES, MODELS, STUDY_NOUNS, family_of
from medprobe.models.registry import _PREFIXES, _REGISTRY, create_backbone, list_backbones, register_backbone

NAMED = sorted(entry.name for entry in list_backbones() if not entry.name.endswith(":"))
HF_PRESETS = sorted(name for name, record in MODELS.items() if record.loader)


# ---------------------------------------------------------------------------------------------- registry
def test_registering_a_name_twice_is_an_error():
    register_backbone("test-twice", lambda: None, "first", family="test")
    try:
        with pytest.raises(ModelError, match=r"backbone 'test-twice' is already registered \(family 'test': first\)"):
            register_backbone("test-twice", lambda: None, "second", family="test")
        assert _REGISTRY["test-twice"].description == "first"  # the first registration stands
    finally:
        _REGISTRY.pop("test-twice")
    with pytest.raises(ModelError, match="'hf:' is already registered"):
        register_backbone("hf:", lambda source: None, "a second hf: prefix", family="test")
    assert _PREFIXES["hf:"].family == "huggingface"


def test_every_record_with_a_loader_is_registered_and_no_other():
    registered = {entry.name for entry in list_backbones() if entry.family == "huggingface"}
    assert registered == set(HF_PRESETS) | {"hf:"}


# ---------------------------------------------------------------------------------------------- records
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_record_is_complete(name):
    record = MODELS[name]
    assert record.name == name
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", record.source), record.source  # a hub id: owner/name
    # a geometry-only record (no loader) may be of a model type without a family yet: the generic one
    assert record.model_type in FAMILIES or record.loader is None
    assert record.family is family_of(record.model_type)
    assert record.published_params > 0 and record.vision_layers > 0 and record.vision_width > 0
    assert (record.lm_layers is None) == (record.lm_width is None) == (not record.family.language_model)
    if record.loader is None:
        return
    assert record.loader in ("idefics", "clip", "image_encoder") and record.summary and record.memory
    entry = next(e for e in list_backbones() if e.name == name)
    assert entry.memory == record.memory and record.source in entry.description
    if record.family.language_model:
        assert record.default_prompt_style in record.family.prompt_styles
    else:
        assert record.default_prompt_style is None and record.family.prompt_styles == ()


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_family_has_a_tiny_test_model(model_type):
    pytest.importorskip("transformers")
    from medprobe.testing.tiny_models import BUILDERS

    family = FAMILIES[model_type]
    assert family.model_type == model_type and family.tiny in BUILDERS
    assert BUILDERS[family.tiny].__name__ == f"build_tiny_{family.tiny}"
    rule = family.image_tokens
    assert isinstance(rule, int) or rule in ("none", "patches", "perceiver_latents", "pixel_shuffle",
                                             "spatial_merge")


def test_unknown_model_types_get_the_generic_chat_family():
    generic = family_of("mllama")
    assert generic.prompt_styles == ("chat",) and generic.language_model and generic.tiny is None
    assert family_of("idefics").study_nouns == STUDY_NOUNS and family_of("llava").study_nouns == {}


def test_importing_the_test_models_changes_nothing_in_the_process():
    import os
    import subprocess
    import sys

    pytest.importorskip("transformers")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    code = ("import os; before = dict(os.environ); import medprobe.testing.tiny_models; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


# ---------------------------------------------------------------------------------------------- meta device
@pytest.mark.parametrize("name", HF_PRESETS)
def test_every_hf_preset_builds_on_the_meta_device_as_its_record_states(name):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from medprobe.models.architectures import meta_model_of, stacks_of

    record = MODELS[name]
    model = meta_model_of(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(record.published_params, rel=0.01)
    stacks = stacks_of(model, model.config, name)
    assert (stacks.num_vision_layers, stacks.vision_width) == (record.vision_layers, record.vision_width)
    if record.lm_layers is not None:
        assert (stacks.num_lm_layers, stacks.lm_width) == (record.lm_layers, record.lm_width)


# ---------------------------------------------------------------------------------------------- Backbone contract
@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Tiny random copies of the families the presets belong to, built once."""
    built: dict[str, str] = {}

    def directory(family_key: str) -> str:
        if family_key not in built:
            from medprobe.testing.tiny_models import BUILDERS

            built[family_key] = str(BUILDERS[family_key](tmp_path_factory.mktemp(family_key)))
        return built[family_key]

    return directory


@pytest.mark.parametrize("name", NAMED)
def test_every_named_backbone_honours_the_backbone_contract(name, tiny_dirs):
    record = MODELS.get(name)
    if record is not None:
        pytest.importorskip("transformers")
        backbone = create_backbone(name, path=tiny_dirs(record.family.tiny))
    else:
        backbone = create_backbone(name)
    try:
        names = backbone.layer_names()
        assert names and len(set(names)) == len(names)
        stacks = backbone.layer_stacks()
        assert list(stacks) == names and all(isinstance(stack, str) and stack for stack in stacks.values())
        assert set(backbone.default_layers()) <= set(names)
        fingerprint = backbone.fingerprint()
        assert fingerprint["backbone"] == name and json.loads(json.dumps(fingerprint)) == fingerprint
        rng = np.random.default_rng(0)
        images = [rng.random((32, 32, 3), dtype=np.float32) for _ in range(2)]
        layers = list(dict.fromkeys([names[0], *backbone.default_layers()]))
        out = backbone.extract(images, layers)
        assert list(out) == layers
        for layer, features in out.items():
            assert features.dtype == np.float32 and features.ndim == 2 and features.shape[0] == 2, layer
            assert features.shape[1] > 0 and np.isfinite(features).all(), layer
    finally:
        backbone.close()


def test_a_family_whose_dependency_is_missing_is_named_in_the_unknown_backbone_error(tmp_path, monkeypatch):
    import medprobe.models.registry as registry

    (tmp_path / "medprobe_test_family.py").write_text("import dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_FAMILY_MODULES", (*registry._FAMILY_MODULES, "medprobe_test_family"))
    monkeypatch.setattr(registry, "_SKIPPED", {})
    with pytest.raises(ModelError, match=r"unknown backbone 'nope'.*medprobe_test_family not loaded: "
                                         r"'dependency_that_is_not_installed' is not installed"):
        create_backbone("nope")
