"""``medprobe export RUN_DIR --onnx FILE``: a saved probe and its ONNX backbone as one graph.

Why one graph: the classifier then runs wherever onnxruntime runs (a hospital server, a browser,
a phone), without Python or medprobe. The graph is the backbone truncated at the probe's layer
(nothing after that layer is computed), the pooling the run used, the rounding of the features to
the run's storage dtype (float16 by default: the probe was trained on such features), the
standardiser and the linear head with its sigmoid / softmax. The head runs in float64, as
:class:`~medprobe.probes.logistic.LinearProbe` scores, so the outputs equal ``medprobe predict``'s
to float rounding (the test checks 1e-5 on the demo backbone).

Input ``image``: float32 ``(N, H, W, 3)``, RGB in ``[0, 1]`` at the backbone's input size -- the
graph normalises (mean / std) and transposes itself; reading, intensity normalisation and the
antialiased bilinear resize stay outside (recorded in the model's metadata). Output
``probabilities``: float64 ``(N, K)``, columns the classes (metadata ``classes``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import medprobe
from medprobe.deploy.loaded import LoadedProbe
from medprobe.errors import ConfigError, ModelError
from medprobe.io import atomic_write_bytes

PREFIX = "medprobe_"
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"


def pooling_nodes(helper: Any, tensor: str, kind: str, pooling: str, rank: int | None,
                  initializers: list) -> tuple[list, str]:
    """Nodes reducing the layer's tensor to ``(N, D)`` as :meth:`OnnxBackbone._pool` does."""
    from onnx import numpy_helper

    pooled = PREFIX + "pooled"
    if kind == "tokens" and pooling == "cls":
        initializers.append(numpy_helper.from_array(np.asarray(0, dtype=np.int64), PREFIX + "first_token"))
        return [helper.make_node("Gather", [tensor, PREFIX + "first_token"], [pooled], axis=1)], pooled
    if kind == "tokens":
        for name, value in (("starts", [1]), ("ends", [np.iinfo(np.int64).max]), ("axes", [1])):
            initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), PREFIX + name))
        return [helper.make_node("Slice", [tensor, PREFIX + "starts", PREFIX + "ends", PREFIX + "axes"],
                                 [PREFIX + "patches"]),
                helper.make_node("ReduceMean", [PREFIX + "patches"], [pooled], axes=[1], keepdims=0)], pooled
    axes = {"nchw": [2, 3], "nhwc": [1, 2]}.get(kind)
    if axes is None:  # a generic tensor: trailing axes averaged
        if rank is None:
            raise ModelError(f"cannot tell the rank of the layer's tensor {tensor!r} to pool it in the export")
        if rank <= 2:
            return [helper.make_node("Identity", [tensor], [pooled])], pooled
        axes = list(range(2, rank))
    return [helper.make_node("ReduceMean", [tensor], [pooled], axes=axes, keepdims=0)], pooled


def head_nodes(helper: Any, probe: LoadedProbe, features: str, initializers: list) -> list:
    """Storage rounding, standardiser, linear head and sigmoid / softmax (float64) -> ``probabilities``."""
    from onnx import TensorProto, numpy_helper

    weights = probe.weights
    for name, value in (("mean", weights.mean), ("scale", weights.scale), ("coef_t", weights.coef.T),
                        ("intercept", weights.intercept), ("one", np.ones(1))):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float64), PREFIX + name))
    nodes = []
    source = features
    if probe.record["feature_dtype"] == "float16":  # the rounding the run's cache applied
        nodes.append(helper.make_node("Cast", [source], [PREFIX + "stored"], to=TensorProto.FLOAT16))
        source = PREFIX + "stored"
    p = PREFIX
    nodes += [helper.make_node("Cast", [source], [p + "features64"], to=TensorProto.DOUBLE),
              helper.make_node("Sub", [p + "features64", p + "mean"], [p + "centred"]),
              helper.make_node("Div", [p + "centred", p + "scale"], [p + "standardised"]),
              helper.make_node("MatMul", [p + "standardised", p + "coef_t"], [p + "products"]),
              helper.make_node("Add", [p + "products", p + "intercept"], [p + "logits"])]
    if probe.task_type == "multiclass":
        nodes.append(helper.make_node("Softmax", [p + "logits"], [OUTPUT_NAME], axis=1))
    elif probe.task_type == "multilabel":
        nodes.append(helper.make_node("Sigmoid", [p + "logits"], [OUTPUT_NAME]))
    else:
        nodes += [helper.make_node("Sigmoid", [p + "logits"], [p + "positive"]),
                  helper.make_node("Sub", [p + "one", p + "positive"], [p + "negative"]),
                  helper.make_node("Concat", [p + "negative", p + "positive"], [OUTPUT_NAME], axis=1)]
    return nodes


def export_onnx(probe: LoadedProbe, out: str | Path) -> Path:
    """Write the probe with its backbone as one ONNX file (see the module docstring); returns its path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from medprobe.models.onnx_backbone import OnnxBackbone

    backbone = probe.backbone  # built and checked against the probe's fingerprint
    if not isinstance(backbone, OnnxBackbone):
        raise ConfigError(f"export --onnx needs an ONNX backbone; this probe's is {backbone.name!r}")
    model, layer = backbone.truncated_graph(probe.layer)
    graph = model.graph
    size = backbone.input_size
    height, width = (size, size) if isinstance(size, int) else size
    original_input = graph.input[0].name
    initializers: list = []
    nodes, source = [], INPUT_NAME
    if backbone.mean is not None and backbone.std is not None:
        initializers += [numpy_helper.from_array(np.asarray(backbone.mean, np.float32), PREFIX + "image_mean"),
                         numpy_helper.from_array(np.asarray(backbone.std, np.float32), PREFIX + "image_std")]
        nodes += [helper.make_node("Sub", [source, PREFIX + "image_mean"], [PREFIX + "image_centred"]),
                  helper.make_node("Div", [PREFIX + "image_centred", PREFIX + "image_std"], [PREFIX + "image_scaled"])]
        source = PREFIX + "image_scaled"
    nodes.append(helper.make_node("Transpose", [source], [original_input], perm=[0, 3, 1, 2])
                 if backbone.layout == "nchw" else helper.make_node("Identity", [source], [original_input]))
    rank = _tensor_rank(model, layer.tensor) if layer.kind == "vector" else None
    pool, pooled = pooling_nodes(helper, layer.tensor, layer.kind, backbone.pooling, rank, initializers)
    head = head_nodes(helper, probe, pooled, initializers)
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body + pool + head)
    graph.initializer.extend(initializers)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", height, width, 3]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.DOUBLE,
                                                      ["batch", len(probe.classes_)]))
    graph.name = f"medprobe {probe.record['backbone_row']} {probe.layer}"
    _set_metadata(model, probe, backbone, (height, width))
    onnx.checker.check_model(model)
    out = Path(out)
    atomic_write_bytes(out, model.SerializeToString())
    return out


def _tensor_rank(model: Any, tensor: str) -> int | None:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for info in [*inferred.graph.value_info, *inferred.graph.output]:
        if info.name == tensor and info.type.tensor_type.HasField("shape"):
            return len(info.type.tensor_type.shape.dim)
    return None


def _set_metadata(model: Any, probe: LoadedProbe, backbone: Any, size: tuple[int, int]) -> None:
    """What a program without medprobe needs: classes, thresholds, and how to prepare the input."""
    record = probe.record
    entries = {
        "medprobe_version": medprobe.__version__, "task": record["task"], "task_type": probe.task_type,
        "classes": json.dumps([str(c) for c in probe.classes_]), "backbone": record["backbone_row"],
        "layer": probe.layer, "operating_points": json.dumps(probe.operating_points, sort_keys=True),
        "probe_weights_sha256": record["weights_sha256"],
        "input": (f"float32 (N, {size[0]}, {size[1]}, 3) RGB in [0, 1]: each image read as medprobe reads it "
                  f"(grey replicated to RGB, divided by its maximum: preprocessing below), then resized to "
                  f"{size[0]} x {size[1]} with antialiased bilinear interpolation (torch F.interpolate, "
                  f"antialias=True, align_corners=False) and clipped to [0, 1]"),
        "preprocessing": json.dumps(record.get("preprocessing"), sort_keys=True),
        "output": "float64 (N, K) probabilities, columns = classes; positive when >= an operating point's threshold",
    }
    del model.metadata_props[:]
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.producer_name, model.producer_version = "medprobe", medprobe.__version__


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "head_nodes", "pooling_nodes"]
