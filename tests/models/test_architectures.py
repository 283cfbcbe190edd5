"""The published architectures on the meta device (no weights): which module lists are the
language-model and vision stacks, their real sizes, layer specs over them, and ``medprobe layers``.

The expected numbers are the models' own (model cards / config.json), written out here by hand,
not read back from :mod:`medprobe.models.records`.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from typer.testing import CliRunner  # noqa: E402

from medprobe.cli import app  # noqa: E402
from medprobe.errors import ModelError  # noqa: E402
from medprobe.models.architectures import meta_model_of  # noqa: E402
from medprobe.models.records import MODELS  # noqa: E402
from medprobe.models.stacks import find_stacks, resolve_layer_spec  # noqa: E402

# name: (LM decoder layers, LM width, LM layer class, LM path,
#        vision layers, vision width, vision layer class, vision path, published parameters)
EXPECTED = {
    "idefics-9b": (32, 4096, "IdeficsDecoderLayer", "model.layers",
                   32, 1280, "IdeficsVisionEncoderLayer", "model.vision_model.encoder.layers", 8.9e9),
    "idefics-9b-instruct": (32, 4096, "IdeficsDecoderLayer", "model.layers",
                            32, 1280, "IdeficsVisionEncoderLayer", "model.vision_model.encoder.layers", 8.9e9),
    "idefics-80b": (80, 8192, "IdeficsDecoderLayer", "model.layers",
                    32, 1280, "IdeficsVisionEncoderLayer", "model.vision_model.encoder.layers", 80e9),
    "idefics-80b-instruct": (80, 8192, "IdeficsDecoderLayer", "model.layers",
                             32, 1280, "IdeficsVisionEncoderLayer", "model.vision_model.encoder.layers", 80e9),
    "clip-b32": (None, None, None, None, 12, 768, "CLIPEncoderLayer", "vision_model.encoder.layers", 151e6),
    "plip": (None, None, None, None, 12, 768, "CLIPEncoderLayer", "vision_model.encoder.layers", 151e6),
    "idefics2-8b": (32, 4096, "MistralDecoderLayer", "model.text_model.layers",
                    27, 1152, "Idefics2EncoderLayer", "model.vision_model.encoder.layers", 8.4e9),
    "idefics3-8b": (32, 4096, "LlamaDecoderLayer", "model.text_model.layers",
                    27, 1152, "Idefics3EncoderLayer", "model.vision_model.encoder.layers", 8.5e9),
    "smolvlm-256m": (30, 576, "LlamaDecoderLayer", "model.text_model.layers",
                     12, 768, "Idefics3EncoderLayer", "model.vision_model.encoder.layers", 256e6),
    "smolvlm-2.2b": (24, 2048, "LlamaDecoderLayer", "model.text_model.layers",
                     27, 1152, "Idefics3EncoderLayer", "model.vision_model.encoder.layers", 2.25e9),
    "llava-1.5-7b": (32, 4096, "LlamaDecoderLayer", "model.language_model.layers",
                     24, 1024, "CLIPEncoderLayer", "model.vision_tower.encoder.layers", 7.06e9),
    "qwen2-vl-2b": (28, 1536, "Qwen2VLDecoderLayer", "model.language_model.layers",
                    32, 1280, "Qwen2VLVisionBlock", "model.visual.blocks", 2.21e9),
    "qwen2-vl-7b": (28, 3584, "Qwen2VLDecoderLayer", "model.language_model.layers",
                    32, 1280, "Qwen2VLVisionBlock", "model.visual.blocks", 8.29e9),
}


def test_every_named_family_has_a_recorded_architecture():
    """The study's models and the first VLM presets, checked module by module below; presets added
    since (image encoders, modern VLM geometry) are checked against their records by the registry
    contract tests (test_model_records.py, test_image_encoders.py)."""
    assert set(EXPECTED) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_meta_model_stacks_are_found_by_structure(name):
    lm_n, lm_width, lm_class, lm_path, v_n, v_width, v_class, v_path, published = EXPECTED[name]
    model = meta_model_of(name)
    assert all(p.device.type == "meta" for p in model.parameters())  # no weights anywhere
    params = sum(p.numel() for p in model.parameters())
    assert params == pytest.approx(published, rel=0.01), f"{name}: {params / 1e9:.3f}B"
    stacks = find_stacks(model, name, language=lm_n is not None)
    modules = dict(model.named_modules())
    assert stacks.vision_layers is modules[v_path] and stacks.vision_path == v_path
    assert {type(layer).__name__ for layer in stacks.vision_layers} == {v_class}
    assert (stacks.num_vision_layers, stacks.vision_width) == (v_n, v_width)
    if lm_n is None:
        assert stacks.lm_layers is None
        return
    assert stacks.lm_layers is modules[lm_path] and stacks.lm_path == lm_path
    assert {type(layer).__name__ for layer in stacks.lm_layers} == {lm_class}
    assert (stacks.num_lm_layers, stacks.lm_width) == (lm_n, lm_width)
    # the two stacks share no module: an LM layer never lives inside the vision tower
    assert not {id(m) for m in stacks.lm_layers.modules()} & {id(m) for m in stacks.vision_module.modules()}


def test_idefics_9b_equal_depths_no_longer_pick_the_vision_tower():
    """The bug of issue 17: 32 decoder layers vs 32 vision layers, vision registered first."""
    model = meta_model_of("idefics-9b")
    candidates = [path for path, m in model.named_modules()
                  if isinstance(m, torch.nn.ModuleList) and len(m) == 32 and path.endswith("layers")]
    assert candidates[0] == "model.vision_model.encoder.layers"  # what "longest list, first wins" took
    stacks = find_stacks(model, "idefics-9b")
    assert stacks.lm_layers is model.model.layers
    assert stacks.vision_layers is model.model.vision_model.encoder.layers


def test_ambiguous_or_missing_stacks_are_errors_naming_the_model():
    model = meta_model_of("llava-1.5-7b")
    language = model.model.language_model
    language.shadow = torch.nn.ModuleList(list(language.layers))  # a second decoder-layer list, as deep
    with pytest.raises(ModelError, match=r"'llava-1.5-7b'.*2 candidate language-model decoder stacks"
                                         r".*model.language_model.layers.*refusing to guess"):
        find_stacks(model, "llava-1.5-7b")
    del language.shadow
    language.layers = torch.nn.ModuleList()
    with pytest.raises(ModelError, match=r"'llava-1.5-7b'.*no recognisable language-model decoder stack"):
        find_stacks(model, "llava-1.5-7b")
    plain = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ModelError, match=r"'mystery'.*no vision sub-module"):
        find_stacks(plain, "mystery")


# ---------------------------------------------------------------------------------------------- layer specs
def _spec(spec, name="idefics-80b", lm=80, vision=32):
    return resolve_layer_spec(name, spec, num_lm=lm, num_vision=vision, default=[str(lm)])


def test_all_means_the_language_model_hidden_states_and_vision_only_when_asked():
    assert _spec("all") == [str(k) for k in range(81)]
    assert _spec("vision.all") == [f"vision.{k}" for k in range(33)]
    assert _spec(["all", "vision.all"]) == [str(k) for k in range(81)] + [f"vision.{k}" for k in range(33)]
    assert _spec(None) == ["80"] and _spec(-1) == ["80"] and _spec("vision.-1") == ["vision.32"]
    assert _spec("vision.30:") == ["vision.30", "vision.31", "vision.32"] and _spec("78:") == ["78", "79", "80"]
    assert _spec(["vision.3", 5, "5"]) == ["vision.3", "5"]
    # a model without a language model (CLIP): integers index the vision stack, all adds image_embeds
    clip = resolve_layer_spec("clip-b32", "all", num_lm=None, num_vision=12, extra=["image_embeds"])
    assert clip == [f"vision.{k}" for k in range(13)] + ["image_embeds"]
    assert resolve_layer_spec("clip-b32", -1, num_lm=None, num_vision=12, extra=["image_embeds"]) == ["vision.12"]


def test_a_layer_of_one_stack_used_on_the_other_is_a_clear_error():
    with pytest.raises(ModelError, match=r"'idefics-80b'.*'vision.50' is out of range for the vision stack.*"
                                         r"vision.0..vision.32; 50 is valid on the language model.*write '50'"):
        _spec("vision.50")
    with pytest.raises(ModelError, match=r"'smolvlm-256m'.*'31' is out of range for the language model.*0..30"):
        _spec("31", name="smolvlm-256m", lm=30, vision=12)
    with pytest.raises(ModelError, match=r"'idefics-9b'.*'40' is out of range.*0..32$"):
        _spec(40, name="idefics-9b", lm=32, vision=32)  # valid on neither stack: no hint
    with pytest.raises(ModelError, match=r"unknown layer 'lm.3'.*language model 0..80, vision.0..vision.32"):
        _spec("lm.3")


# ---------------------------------------------------------------------------------------------- CLI
def test_medprobe_layers_lists_real_counts_without_any_model_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["layers", "idefics-80b"])
    assert result.exit_code == 0, result.output
    assert "language model: hidden states 0..80 (layer names '0'..'80'), width 8192; 80 x IdeficsDecoderLayer " \
           "at model.layers" in result.output
    assert "vision: hidden states 0..32 (layer names 'vision.0'..'vision.32'), width 1280; 32 x " \
           "IdeficsVisionEncoderLayer at model.vision_model.encoder.layers" in result.output


def test_medprobe_layers_reads_a_local_folders_config_json_only(tmp_path):
    """``--path`` on a folder holding nothing but config.json (no weights, no tokenizer)."""
    from medprobe.models.architectures import build_config
    from medprobe.models.records import model_record

    record = model_record("smolvlm-256m")
    build_config(record.model_type, dict(record.config)).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    result = CliRunner().invoke(app, ["layers", "--path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "hidden states 0..30" in result.output and "width 576" in result.output
    assert "vision: hidden states 0..12" in result.output and "Idefics3EncoderLayer" in result.output


def test_medprobe_layers_with_a_run_file_shows_what_each_backbone_requests(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(
        "name: t\noutput_dir: out\ndata:\n  adapter: image_folder\n  options: {root: nowhere}\nbackbones:\n"
        "- name: idefics-9b\n  layers: all\n- name: idefics-9b\n  label: vision\n  layers: vision.all\n"
        "- name: clip-b32\n  layers: [image_embeds]\n")
    result = CliRunner().invoke(app, ["layers", "--run", str(run)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    requested = [line for line in lines if "requested" in line]
    assert requested[0].startswith("  requested ('all'): 33 layers: 0, 1,") and requested[0].endswith(", 32")
    assert requested[1].startswith("  requested ('vision.all'): 33 layers: vision.0,")
    assert requested[2] == "  requested (['image_embeds']): 1 layers: image_embeds"
    assert "  image_embeds: the projected image embedding, width 512" in lines


# ---------------------------------------------------------------------------------------------- hooks
def test_hooks_on_the_real_idefics_80b_stop_after_the_deepest_requested_layer():
    from medprobe.models.stacks import hook_points, stop_key

    model = meta_model_of("idefics-80b")
    stacks = find_stacks(model, "idefics-80b")
    decoder_layers, tower_layers = model.model.layers, model.model.vision_model.encoder.layers
    points = {point.key: point for point in hook_points(stacks, [0, 40, 80], [0, 32])}
    assert points[("lm", 0)].module is decoder_layers[0] and points[("lm", 0)].before
    assert points[("lm", 40)].module is decoder_layers[39] and not points[("lm", 40)].before
    assert points[("lm", 80)].module is model.model  # after the final norm, as transformers reports it
    assert points[("vision", 0)].module is tower_layers[0] and points[("vision", 0)].before
    assert points[("vision", 32)].module is tower_layers[31]
    assert stop_key([0, 40], [32]) == ("lm", 40)  # the tower runs first: stop after LM layer 40
    assert stop_key([], [3, 12]) == ("vision", 12)  # vision only: the LM never starts
    for name in ("qwen2-vl-7b", "llava-1.5-7b", "idefics2-8b"):
        stacks = find_stacks(meta_model_of(name), name)
        (point,) = hook_points(stacks, [5], [])
        assert point.module is stacks.lm_layers[4] and type(point.module).__name__.endswith("DecoderLayer")
