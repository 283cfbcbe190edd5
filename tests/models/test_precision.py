"""Reduced-precision extraction: int8 ONNX and bf16 torch stay faithful to fp32, and are keyed apart
in the cache (a float32 feature is never answered with an int8 one)."""

from __future__ import annotations

import numpy as np
import pytest

from medprobe.errors import ModelError
from medprobe.models.registry import create_backbone


def _pneumonia_images(n: int) -> list[np.ndarray]:
    from medprobe.bench.precision import _pneumonia_images as load

    try:
        return load(n)
    except Exception as error:  # the real data file lives outside the repo
        pytest.skip(f"PneumoniaMNIST not available: {error}")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_vit_features_follow_fp32_on_real_images():
    images = _pneumonia_images(8)
    fp32 = create_backbone("dinov2-s-onnx")
    int8 = create_backbone("dinov2-s-onnx", precision="int8")
    layers = fp32.layer_names()
    reference, quantised = fp32.extract(images, layers), int8.extract(images, layers)
    for layer in layers:
        cosine = _cosines(reference[layer], quantised[layer])
        assert cosine.min() > 0.99, (layer, cosine.min())
        # quantisation does change the numbers (the int8 graph really ran)
        assert not np.allclose(reference[layer], quantised[layer])
    assert int8.fingerprint() != fp32.fingerprint()
    assert int8.fingerprint()["precision"] == "int8"
    # the original graph is left as it was: fp32 backbones built later are unaffected
    assert "MatMulInteger" not in {n.op_type for n in fp32._graph.graph.node}
    assert "MatMulInteger" in {n.op_type for n in int8._graph.graph.node}


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown precision 'fp8'.*fp32"):
        create_backbone("dinov2-s-onnx", precision="fp8")


def test_onnx_flop_count_matches_hand_computed_graph():
    from onnx import TensorProto, helper, numpy_helper

    from medprobe.bench.precision import onnx_graph_flops

    rng = np.random.default_rng(0)
    conv_w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "cw")
    mat_w = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "mw")
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),       # (1, 8, 6, 6)
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),        # (1, 6, 6, 8)
        helper.make_node("MatMul", ["t", "mw"], ["y"]),                        # (1, 6, 6, 5)
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [conv_w, mat_w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    conv = 2 * (8 * 6 * 6) * (3 * 3 * 3)
    matmul = 2 * (6 * 6 * 5) * 8
    assert onnx_graph_flops(model, [1, 3, 6, 6]) == conv + matmul


def test_vit_s_flops_match_the_architecture():
    """ViT-S/14 at 224 px: 257 tokens, 12 blocks of width 384 and MLP 1536 (+ attention products)."""
    from medprobe.bench.precision import onnx_graph_flops, pruned_graph

    tokens, width, mlp, blocks = 257, 384, 1536, 12
    per_block = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width
    patch_embedding = 256 * 3 * 14 * 14 * width
    expected = 2 * (blocks * per_block + patch_embedding)
    counted = onnx_graph_flops(pruned_graph(create_backbone("dinov2-s-onnx")), [1, 3, 224, 224])
    assert counted == pytest.approx(expected, rel=0.01)


def test_bf16_torch_backbone_follows_fp32(tmp_path):
    from medprobe.testing.tiny_models import build_tiny_llava

    model_dir = build_tiny_llava(tmp_path / "llava", lm_layers=3, hidden_size=64, image_size=32)
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32, 3), dtype=np.float32) for _ in range(4)]
    fp32 = create_backbone(f"hf:{model_dir}", dtype="float32")
    bf16 = create_backbone(f"hf:{model_dir}", dtype="bfloat16")
    layers = ["1", "2", "3"]
    reference, reduced = fp32.extract(images, layers), bf16.extract(images, layers)
    for layer in layers:
        assert reduced[layer].dtype == np.float32  # handed on as float32 whatever the compute dtype
        assert _cosines(reference[layer], reduced[layer]).min() > 0.99
        assert not np.array_equal(reference[layer], reduced[layer])
    assert fp32.fingerprint() != bf16.fingerprint()
