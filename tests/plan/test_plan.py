"""``medprobe plan`` against numbers worked out by hand from the published architectures.

IDEFICS v1 = LLaMA decoder (width d, MLP width f, L layers) + gated cross-attention blocks every
4th layer + ViT-H/14 (1280 wide, MLP 5120, 32 layers) + a 6-block perceiver (16 heads x 96).
Linear weights, by hand: decoder 4d^2 + 3df per layer; cross-attention q,o (d x d), k,v (1280 -> d),
MLP 3df; vision 4*1280^2 + 2*1280*5120 per layer; perceiver q,k,v (1280 -> 1536), out (1536 ->
1280), MLP 2*1280*5120 per block. 8-bit stores those weights in 1 byte instead of 2.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from typer.testing import CliRunner  # noqa: E402

from medprobe.cli import app  # noqa: E402
from medprobe.errors import ModelError  # noqa: E402
from medprobe.plan import check_fits, parse_gpus, plan_backbone  # noqa: E402

GB = 1e9
STUDY_MACHINE = {**parse_gpus("4x48GB"), "cpu": 256 * GB}  # the study's 4 x 48 GB GPUs
IDEFICS = {"idefics-9b": dict(d=4096, f=11008, L=32, cross=8), "idefics-80b": dict(d=8192, f=22016, L=80, cross=20)}


def idefics_linear_weights(d: int, f: int, L: int, cross: int) -> int:
    dv, fv = 1280, 5120
    return (L * (4 * d * d + 3 * d * f) + cross * (2 * d * d + 2 * dv * d + 3 * d * f)
            + 32 * (4 * dv * dv + 2 * dv * fv) + 6 * (4 * dv * 1536 + 2 * dv * fv))


@pytest.mark.parametrize("name, bf16_gb", [("idefics-9b", 18), ("idefics-80b", 160)])
def test_idefics_weight_memory_by_hand(name, bf16_gb):
    bf16 = plan_backbone(name, {"dtype": "bfloat16"}, layers="all", max_memory=STUDY_MACHINE)
    assert bf16.weight_bytes == 2 * bf16.parameters
    assert bf16.weight_bytes / GB == pytest.approx(bf16_gb, rel=0.01)
    eight = plan_backbone(name, {"dtype": "bfloat16", "quantization": "8bit"}, layers="all", max_memory=STUDY_MACHINE)
    by_hand = 2 * bf16.parameters - idefics_linear_weights(**IDEFICS[name])
    assert eight.weight_bytes == pytest.approx(by_hand, rel=0.005)  # + a float32 scale per output row
    assert 0.5 < eight.weight_bytes / bf16.weight_bytes < 0.53
    four = plan_backbone(name, {"dtype": "bfloat16", "quantization": "4bit"}, layers="all", max_memory=STUDY_MACHINE)
    assert four.weight_bytes == pytest.approx(by_hand - idefics_linear_weights(**IDEFICS[name]) * (1 - 0.5 - 4 / 64),
                                              rel=0.005)
    fp32 = plan_backbone(name, {"dtype": "float32"}, layers="all", max_memory=STUDY_MACHINE)
    assert fp32.weight_bytes == 4 * bf16.parameters


def test_placement_on_the_studys_four_48gb_gpus():
    small = plan_backbone("idefics-9b", {"dtype": "bfloat16"}, layers="all", max_memory=STUDY_MACHINE)
    assert small.device_map == {"": 0} and small.fits and not small.offloaded  # 18 GB: one GPU
    big = plan_backbone("idefics-80b", {"dtype": "bfloat16"}, layers="all", max_memory=STUDY_MACHINE)
    assert set(big.device_map.values()) == {0, 1, 2, 3} and big.fits and not big.offloaded  # 160 GB over 4
    eight = plan_backbone("idefics-80b", {"quantization": "8bit"}, layers="all", max_memory=STUDY_MACHINE)
    assert set(eight.device_map.values()) <= {0, 1} and not eight.offloaded  # 80 GB: two GPUs are enough
    text = "\n".join(big.lines())
    assert "159.9 GB at bfloat16" in text and "fits: yes, entirely on the accelerators" in text


def test_what_does_not_fit_goes_to_cpu_then_disk_and_check_fits_stops_early():
    two = {**parse_gpus("2x48GB"), "cpu": 256 * GB}
    spilled = plan_backbone("idefics-80b", {"dtype": "bfloat16"}, layers="all", max_memory=two)
    cpu_layers = [m for m in spilled.offloaded["cpu"] if m.startswith("model.layers.")]
    assert cpu_layers and spilled.fits and "disk" not in spilled.offloaded
    assert "fits: only with offloading" in "\n".join(spilled.lines())
    tiny_machine = {0: 48 * GB, "cpu": 64 * GB}
    stuck = plan_backbone("idefics-80b", {"dtype": "bfloat16"}, layers="all", max_memory=tiny_machine)
    assert stuck.offloaded["disk"] and not stuck.fits
    with pytest.raises(ModelError, match=r"backbone 'idefics-80b' cannot be loaded here: 160 GB of weights at "
                                         r"bfloat16.*no offload_folder"):
        check_fits("idefics-80b", {"dtype": "bfloat16", "max_memory": {0: "48GB", "cpu": "64GB"}})
    ok = check_fits("idefics-80b", {"dtype": "bfloat16", "max_memory": {0: "48GB", "cpu": "64GB"},
                                    "offload_folder": "/tmp/offload"})
    assert ok is not None and ok.fits
    assert check_fits("pixels") is None  # nothing to plan for non-Hugging-Face backbones


def test_cache_size_activations_and_flops_by_hand():
    d, f, T = 4096, 11008, 32 + 3  # width, MLP width, prompt tokens + the image slot (32 layers)
    plan = plan_backbone("idefics-9b", {"dtype": "bfloat16"}, layers="all", max_memory=STUDY_MACHINE,
                         n_images=1000, feature_dtype="float16", batch_size=8)
    assert plan.layers == [str(k) for k in range(33)]
    assert plan.cache_bytes_per_image == 33 * 4096 * 2 and plan.cache_bytes == 1000 * 33 * 4096 * 2
    assert plan.captured_bytes == 8 * 33 * T * d * 4  # float32 hidden states of every token, per layer
    # the vision sequence (257 tokens, 1280 wide, MLP 5120, 16 heads) is the widest working set
    assert plan.activation_bytes == 8 * (257 * (4 * 1280 + 2 * 5120) + 16 * 257 ** 2) * 2
    layer = 4 * d * d + 3 * d * f + 2 * d  # + two RMSNorm weights
    cross = 2 * d * d + 2 * 1280 * d + 3 * d * f + 2 * d + 2  # + two norms + two gates (alpha_type float)
    at = {k: plan_backbone("idefics-9b", {}, layers=k, max_memory=STUDY_MACHINE).flops_requested for k in (8, 16)}
    by_hand = 8 * (2 * layer * T + 4 * T * T * d) + 2 * (2 * cross * T)  # layers 8..15; cross-attn at 8 and 12
    assert at[16] - at[8] == pytest.approx(by_hand, rel=1e-6)
    vision_only = plan_backbone("idefics-9b", {}, layers="vision.all", max_memory=STUDY_MACHINE)
    vision_layer = 4 * (1280 * 1280 + 1280) + 2 * 1280 * 5120 + 5120 + 1280 + 4 * 1280
    assert vision_only.flops_requested == pytest.approx(32 * (2 * vision_layer * 257 + 4 * 257 ** 2 * 1280), rel=1e-6)
    assert vision_only.flops_requested < at[8] < at[16] < plan.flops_requested <= plan.flops_full
    head = 4096 * 32000 + 4096 * 2
    assert plan.flops_full - plan.flops_requested == pytest.approx(2 * head * T, rel=1e-6)


def test_bad_planning_input_is_a_clear_error():
    with pytest.raises(ModelError, match=r"'idefics-9b'.*unknown quantization '3bit'"):
        plan_backbone("idefics-9b", {"quantization": "3bit"}, max_memory=STUDY_MACHINE)
    with pytest.raises(ModelError, match=r"backbone 'idefics-9b' max_memory: cannot read the memory size 'lots'"):
        plan_backbone("idefics-9b", {"max_memory": {0: "lots"}})
    with pytest.raises(ModelError, match=r"no published architecture is recorded for 'idefics-7b'"):
        plan_backbone("idefics-7b", {}, max_memory=STUDY_MACHINE)


def test_medprobe_plan_on_the_paper_run_file_needs_no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["plan", "configs/paper/t1.yaml", "--gpus", "4x48GB", "--images", "107180"])
    assert result.exit_code == 0, result.output
    out = result.output
    for header in ("idefics-80b (IdeficsForVisionText2Text): 79.97B parameters",
                   "idefics-9b (IdeficsForVisionText2Text): 8.93B parameters",
                   "clip-b32 (CLIPModel): 0.15B parameters", "plip (CLIPModel): 0.15B parameters"):
        assert header in out
    assert "weights: 159.9 GB at bfloat16" in out and "weights: 17.9 GB at bfloat16" in out
    assert f"{107180 * 81 * 8192 * 2 / GB:.2f} GB for 107180 images" in out  # IDEFICS-80B, 81 LM layers


def test_run_stops_before_loading_a_model_that_cannot_fit(monkeypatch):
    import medprobe.stages.extract as extract_stage
    from medprobe.config import parse_config

    config = parse_config({
        "name": "t", "output_dir": "out", "data": {"adapter": "image_folder", "options": {"root": "nowhere"}},
        "backbones": [{"name": "idefics-80b", "layers": "all",
                       "options": {"dtype": "bfloat16", "max_memory": {0: "48GB", "cpu": "64GB"}}}],
    }, "test")

    def never(*args, **kwargs):
        raise AssertionError("the backbone was built although it cannot fit")

    monkeypatch.setattr(extract_stage, "create_backbone", never)
    with pytest.raises(ModelError, match=r"'idefics-80b' cannot be loaded here.*medprobe plan"):
        extract_stage.extract_backbone(config.backbones[0], None, config.extraction, Path("unused"), on_error="raise")


def test_paper_configs_prompt_the_base_idefics_models_as_the_study_did():
    from medprobe.config import load_config
    from medprobe.models.records import STUDY_NOUNS

    assert STUDY_NOUNS == {"t1": "histological picture", "t2": "histological picture", "t3": "skin image",
                           "t4": "skin image", "t5": "eye fundus image", "t6": "eye fundus image",
                           "t7": "chest radiological image", "t8": "knee radiological image"}
    for task, noun in STUDY_NOUNS.items():
        config = load_config(f"configs/paper/{task}.yaml")
        idefics = [spec for spec in config.backbones if spec.name.startswith("idefics")]
        assert {spec.name for spec in idefics} == {"idefics-9b", "idefics-80b"}
        for spec in idefics:
            assert spec.options["prompt_style"] == "study" and spec.options["noun"] == noun, (task, spec.name)
            assert spec.layers == "all"


def _config_folder(directory: Path, config) -> str:
    """``hf:DIR`` of a folder holding only ``config``'s config.json (plan reads nothing else)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(config.to_json_string())
    return f"hf:{directory}"


def test_a_model_without_a_vision_encoder_gets_a_language_model_plan(tmp_path):
    """Fuyu feeds image patches to its decoder through one linear layer: no vision stack, LM layers only."""
    from medprobe.plan.backbone import layer_listing
    from medprobe.testing.tiny_families import tiny_config

    config = tiny_config("fuyu")
    name = _config_folder(tmp_path / "fuyu", config)
    listing = "\n".join(layer_listing(name))
    assert "language model: hidden states 0..2" in listing and "no separable vision encoder" in listing
    plan = plan_backbone(name, {"dtype": "float32"}, layers="all", batch_size=2, max_memory={"cpu": 8 * GB})
    d, f, T = config.text_config.hidden_size, config.text_config.intermediate_size, 32  # prompt tokens, no image rule
    assert plan.layers == ["0", "1", "2"] and "no vision encoder: only the language model runs" in plan.assumptions
    assert plan.captured_bytes == 2 * 3 * T * d * 4
    heads = config.text_config.num_attention_heads
    assert plan.activation_bytes == 2 * (T * (4 * d + 2 * f) + heads * T * T) * 4
    head = config.text_config.vocab_size * d  # untied LM head
    assert plan.flops_full - plan.flops_requested == pytest.approx(2 * head * T, rel=1e-6)
    assert "FLOPs per image" in "\n".join(plan.lines())


def test_swin_is_planned_stage_by_stage(tmp_path):
    """Swin's listed layers are stages with their own width, tokens, heads (``num_heads`` is a list) and
    windowed attention; by hand from the stage parameters of the meta-device build."""
    from transformers import SwinConfig

    from medprobe.models.architectures import meta_model

    config = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[2, 4], window_size=4)
    name = _config_folder(tmp_path / "swin", config)
    plan = plan_backbone(name, {"dtype": "float32"}, layers="vision.all", batch_size=3, max_memory={"cpu": 8 * GB})
    assert plan.layers == ["vision.0", "vision.1", "vision.2"]
    stages = meta_model(config, name=name).encoder.layers
    params = [sum(p.numel() for p in stage.parameters()) for stage in stages]
    # stage 0: 8x8 patches, width 8, 2 heads; stage 1: 4x4, width 16, 4 heads; windows of 4x4 tokens
    geometry = [(64, 8, 2), (16, 16, 4)]
    by_hand = sum(2 * p * T + 4 * 2 * T * 16 * C for p, (T, C, _) in zip(params, geometry))
    assert plan.flops_full == plan.flops_requested == pytest.approx(by_hand, rel=1e-9)
    working = max(T * (4 * C + 2 * 4 * C) + h * T * 16 for T, C, h in geometry)
    assert plan.activation_bytes == 3 * working * 4
    assert plan.captured_bytes == 3 * 3 * 64 * 8 * 4  # three hidden states, at most stage 0's 64 x 8 values
    assert plan.cache_bytes_per_image == 3 * 16 * 2  # every layer counted at the last width (an upper bound)


def test_published_swin_t_and_convnext_t_geometry(tmp_path):
    """Swin-T (28.3M parameters with its 1000-class head, 4.5 GMAC) and ConvNeXt-T (28.6M, 4.5 GMAC),
    from the papers' tables (Liu et al. 2021 table 1; Liu et al. 2022 table 1), on the meta device."""
    from transformers import ConvNextConfig, SwinConfig

    swin = plan_backbone(_config_folder(tmp_path / "swin", SwinConfig()), {"dtype": "float32"}, layers="vision.all",
                         max_memory={"cpu": 8 * GB})
    assert swin.parameters + 768 * 1000 + 1000 == pytest.approx(28.3e6, rel=0.005)
    assert swin.flops_full == pytest.approx(2 * 4.5e9, rel=0.15)  # patch merging counted at the stage's input
    convnext = plan_backbone(_config_folder(tmp_path / "convnext", ConvNextConfig()), {"dtype": "float32"},
                             layers="vision.all", max_memory={"cpu": 8 * GB})
    assert convnext.parameters + 768 * 1000 + 1000 == pytest.approx(28.6e6, rel=0.01)
    assert convnext.flops_full == pytest.approx(2 * 4.5e9, rel=0.02)  # no attention term
