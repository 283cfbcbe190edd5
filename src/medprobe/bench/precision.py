"""Benchmark: reduced-precision extraction against fp32, speed and fidelity side by side in one run.

Whether reduced precision is faster depends on the CPU's matrix units (:mod:`medprobe.hardware`):
an AMX Xeon runs int8 and bf16 far faster than fp32, a CPU without bf16 units runs bf16 far
slower, and one without VNNI gains less from int8. This benchmark measures *this* machine and
prints what is fastest here beside what ``dtype: auto`` picks. Two paths:

* **ONNX int8** (``precision: int8`` on an ONNX backbone): onnxruntime dynamic quantisation of the
  graph's matrix products, measured on the real ViT-S/14 (``dinov2-s-onnx``) with real
  PneumoniaMNIST images;
* **torch bf16** (``dtype: bfloat16`` on a Hugging Face backbone): measured on a LLaVA-layout model
  built from a config (no weights ship offline), wide enough (hidden 1,024) that matrix products
  dominate.

For each path it prints images/s and the achieved GFLOP/s as a share of the **measured** peak of
that precision on the same runtime (a large square matrix product: torch ``matmul`` in fp32 and
bf16; an onnxruntime ``MatMul`` graph in fp32 and its int8-quantised copy), and the features'
fidelity to fp32 (cosine, max relative error and noise per standardised feature, per layer). The
full size also fits the demo's probes on both precisions' ViT-S features and reports the test AUC
of each with its fp32 CI, the check that matters for a probe: does int8 change the answer?

    python benchmarks/bench_precision.py           # full size (about 5 minutes on 2 cores)
    python benchmarks/bench_precision.py --quick   # small, for `medprobe bench`
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MATMUL_SIZE = 2048


def _best_of(function, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (after one warm-up): a shared machine's noise only
    ever makes a call slower."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def torch_matmul_peaks(size: int = MATMUL_SIZE, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a ``size``-cubed torch matrix product in fp32 and bf16."""
    import torch

    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        seconds = _best_of(lambda: torch.matmul(a, b), repeats)
        peaks[name] = 2 * size**3 / seconds / 1e9
    return peaks


def onnx_matmul_peaks(threads: int, size: int = MATMUL_SIZE, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of one ``(size, size) @ (size, size)`` ONNX ``MatMul`` in fp32 and after the same
    int8 dynamic quantisation the backbones use."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from medprobe.models.onnx_backbone import quantise_matmuls

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((size, size)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], [weight],
    )
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    peaks = {}
    for name, model in (("fp32", fp32), ("int8", quantise_matmuls(fp32))):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        seconds = _best_of(lambda: session.run(None, {"x": x}), repeats)
        peaks[name] = 2 * size**3 / seconds / 1e9
    return peaks


def onnx_graph_flops(graph: Any, input_shape: list[int]) -> float:
    """Multiply-add FLOPs (2 per MAC) of the ``MatMul``/``Gemm``/``Conv`` nodes for one input of
    ``input_shape``. Shapes are read by running the graph once with those nodes' tensors exposed as
    outputs (static shape inference cannot follow a ViT's ``Shape``/``Reshape`` chains). Norms,
    softmax and adds are left out (a few percent of a ViT's or VGG's work), so achieved rates are
    slight underestimates."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(graph)
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    wanted = list(dict.fromkeys(t for n in nodes for t in (n.input[0], n.output[0]) if t not in weights))
    declared = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in declared:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {model.graph.input[0].name: np.zeros(input_shape, dtype=np.float32)}
    shapes = dict(zip(wanted, (np.shape(a) for a in session.run(wanted, feed))))
    shapes.update(weights)
    flops = 0.0
    for node in nodes:
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            flops += 2.0 * float(np.prod(out)) * float(np.prod(weights[node.input[1]][1:]))
        else:
            a = shapes[node.input[0]]
            transposed = any(at.name == "transA" and at.i for at in node.attribute)
            flops += 2.0 * float(np.prod(out)) * (a[-2] if transposed else a[-1])
    return flops


def pruned_graph(backbone: Any) -> Any:
    """A copy of an ONNX backbone's graph reduced to what its layers need (what extraction runs)."""
    import onnx

    from medprobe.models.onnx_backbone import _prune_to_outputs

    graph = onnx.ModelProto()
    graph.CopyFrom(backbone._graph)
    _prune_to_outputs(graph.graph, [backbone._layers[layer].tensor for layer in backbone.layer_names()])
    return graph


def _fidelity(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per layer: the lowest per-image cosine, the max relative error (max |diff| / max |ref|), and
    the noise a probe sees: the median over features of ``mean((other - ref)^2) / var(ref)``.

    Why the last: a probe standardises every feature, so what matters is the error against each
    feature's spread *across images*, which the cosine hides. On the demo's ViT-S, int8 features
    had cosine 0.995-0.999 to fp32 yet 5-60 % noise per standardised feature (worst in the early
    layers), and those layers' test AUC fell by up to 0.07 (README, "Demo results")."""
    out = {}
    for layer, ref in reference.items():
        got = other[layer]
        cosine = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        spread = ref.astype(np.float64).var(axis=0)
        noise = ((got.astype(np.float64) - ref) ** 2).mean(axis=0) / np.where(spread > 0, spread, np.nan)
        out[layer] = {"min_cosine": float(cosine.min()),
                      "max_rel_error": float(np.abs(ref - got).max() / np.abs(ref).max()),
                      "standardised_noise": float(np.nanmedian(noise))}
    return out


def _pneumonia_images(n: int) -> np.ndarray:
    from medprobe.data.adapters import load_medmnist

    dataset = load_medmnist(flag="pneumoniamnist")
    rows = dataset.samples[dataset.samples["split"] == "test"].head(n)
    return [dataset.read_image(row) for _, row in rows.iterrows()]


def _timed_features(backbone: Any, images: list[np.ndarray], layers: list[str],
                    batch_size: int) -> tuple[float, dict[str, np.ndarray]]:
    """Best-of-two seconds to extract ``layers`` of all ``images`` in batches, and the features."""
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]

    def extract_all():
        return [backbone.extract(batch, layers) for batch in batches]

    seconds = _best_of(extract_all, 2)
    outs = extract_all()
    return seconds, {layer: np.concatenate([o[layer] for o in outs]) for layer in layers}


def tuned_onnxruntime(backbone: Any, images: list[np.ndarray], threads: int, batch_size: int) -> float:
    """Seconds for the strongest plain onnxruntime loop a skilled user would write on the same
    (pruned) graph and the same preprocessed batches: all graph optimisations, intra-op threads =
    ``threads``, one inter-op thread, sequential execution, the layer tensors fetched, pooled in
    NumPy; best of two after a warm-up."""
    import onnxruntime as ort

    graph = pruned_graph(backbone)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = graph.graph.input[0].name
    tensors = [backbone._layers[layer].tensor for layer in backbone.layer_names()]
    from medprobe.models.imaging import normalise, resize_batch

    batches = [np.ascontiguousarray(normalise(resize_batch(images[i:i + batch_size], backbone.input_size),
                                              backbone.mean, backbone.std).transpose(0, 3, 1, 2))
               for i in range(0, len(images), batch_size)]

    def run_all():
        return [[output[:, 0] for output in session.run(tensors, {name: batch})] for batch in batches]

    return _best_of(run_all, 2)


def onnx_int8(n_images: int, threads: int, batch_size: int = 16) -> dict[str, Any]:
    """ViT-S/14 fp32 vs int8 on real images: images/s, GFLOP/s, feature fidelity (all 12 layers),
    and the tuned plain-onnxruntime baseline for medprobe's fp32 extraction."""
    from medprobe.models.registry import create_backbone

    images = _pneumonia_images(n_images)
    result: dict[str, Any] = {}
    features = {}
    # the work per image is the fp32 graph's (pruned to the 12 blocks, as extraction runs it):
    # quantisation changes how products run, not how many
    flops = onnx_graph_flops(pruned_graph(create_backbone("dinov2-s-onnx")), [1, 3, 224, 224])
    for precision in ("fp32", "int8"):
        backbone = create_backbone("dinov2-s-onnx", precision=precision, threads=threads)
        seconds, features[precision] = _timed_features(backbone, images, backbone.layer_names(), batch_size)
        result[precision] = {"images_per_s": len(images) / seconds, "gflops_per_image": flops / 1e9,
                             "achieved_gflops": flops * len(images) / seconds / 1e9}
        if precision == "fp32":
            result["tuned_onnxruntime"] = {"images_per_s": len(images) / tuned_onnxruntime(backbone, images, threads,
                                                                                           batch_size)}
        backbone.close()
    result["fidelity"] = _fidelity(features["fp32"], features["int8"])
    return result


def torch_bf16(n_images: int, threads: int, batch_size: int = 8, hidden_size: int = 1024,
               lm_layers: int = 8, image_size: int = 64) -> dict[str, Any]:
    """A LLaVA-layout model (random weights) in fp32 vs bf16: images/s, GFLOP/s, fidelity of the
    last-token features at every LM layer."""
    import torch

    from medprobe.models.registry import create_backbone
    from medprobe.testing.tiny_models import build_tiny_llava

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    images = [rng.random((image_size, image_size, 3), dtype=np.float32) for _ in range(n_images)]
    result: dict[str, Any] = {}
    features = {}
    with tempfile.TemporaryDirectory(prefix="medprobe-bf16-") as tmp:
        model_dir = build_tiny_llava(Path(tmp) / "model", lm_layers=lm_layers, hidden_size=hidden_size,
                                     image_size=image_size)
        for name, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
            backbone = create_backbone(f"hf:{model_dir}", dtype=dtype)
            layers = [str(k) for k in range(1, lm_layers + 1)]
            seconds, features[name] = _timed_features(backbone, images, layers, batch_size)
            tokens = backbone.encode([_as_pil(images[0])], [backbone.prompt])["input_ids"].shape[1]
            decoder = backbone.model.config.text_config
            # 2 FLOPs per MAC: q/k/v/o projections (4 h^2; GQA makes k/v smaller, counted exactly)
            # plus the gated MLP (3 h m) per token per layer; the vision tower is tiny here.
            heads, kv_heads = decoder.num_attention_heads, decoder.num_key_value_heads
            h, m = decoder.hidden_size, decoder.intermediate_size
            per_token = 2 * (2 * h * h + 2 * h * h * kv_heads // heads + 3 * h * m)
            flops = per_token * tokens * lm_layers
            result[name] = {"images_per_s": len(images) / seconds, "gflops_per_image": flops / 1e9,
                            "achieved_gflops": flops * len(images) / seconds / 1e9, "tokens": int(tokens)}
            backbone.close()
    result["fidelity"] = _fidelity(features["fp32"], features["bf16"])
    return result


def _as_pil(image: np.ndarray):
    from medprobe.models.imaging import to_pil

    return to_pil(image)


def demo_auc(threads: int) -> dict[str, Any]:
    """The demo's ViT-S probe (every layer swept, best on val) on fp32 and on int8 features."""
    from medprobe.data.adapters import load_medmnist
    from medprobe.models.registry import create_backbone
    from medprobe.probes import select_probe
    from medprobe.stats import bootstrap_indices, bootstrap_metrics, compute_metrics, summarise

    dataset = load_medmnist(flag="pneumoniamnist", max_train=500)
    table = dataset.samples
    images = {split: [dataset.read_image(row) for _, row in table[table["split"] == split].iterrows()]
              for split in ("train", "val", "test")}
    labels = {split: dataset.labels(table[table["split"] == split]) for split in ("train", "val", "test")}
    indices = bootstrap_indices(len(labels["test"]), 1000, seed=0)
    out: dict[str, Any] = {}
    for precision in ("fp32", "int8"):
        backbone = create_backbone("dinov2-s-onnx", precision=precision, threads=threads)
        layers = backbone.layer_names()
        started = time.perf_counter()
        feats = {}
        for split, split_images in images.items():
            parts = [backbone.extract(split_images[i:i + 16], layers) for i in range(0, len(split_images), 16)]
            # the cache stores float16; probe what a run would read
            feats[split] = {layer: np.concatenate([p[layer] for p in parts]).astype(np.float16).astype(np.float32)
                            for layer in layers}
        seconds = time.perf_counter() - started
        best = None
        for layer in layers:
            probe, table_c = select_probe(feats["train"][layer], labels["train"], feats["val"][layer],
                                          labels["val"], "binary")
            val = float(table_c[table_c["selected"]].iloc[0]["val_score"])
            if best is None or val > best[0]:
                best = (val, layer, probe)
        _, layer, probe = best
        scores = probe.predict_proba(feats["test"][layer])
        point = compute_metrics(labels["test"], scores, "binary", dataset.classes)["auc"]
        replicates = bootstrap_metrics(labels["test"], scores, "binary", dataset.classes, indices)["auc"]
        out[precision] = {"layer": layer, **summarise(point, replicates), "extract_s": seconds}
        backbone.close()
    fp32 = out["fp32"]
    out["int8_within_fp32_ci"] = bool(fp32["ci_low"] <= out["int8"]["value"] <= fp32["ci_high"])
    return out


def check_inputs() -> None:
    """Everything this benchmark reads, before anything is timed: the PneumoniaMNIST file and the
    ViT-S wheel (each raises its own error saying where it looked and how to get it)."""
    from medprobe.models.registry import create_backbone

    _pneumonia_images(1)
    create_backbone("dinov2-s-onnx").close()


def run(quick: bool = False, threads: int = 2) -> dict[str, Any]:
    """All measurements; ``quick`` shrinks image counts and skips the demo-AUC check. The torch
    bf16 extraction runs only where the CPU has bf16 units: elsewhere bf16 matrix products are
    2-50x slower than fp32 (the matrix peaks show it) and ``dtype: auto`` never picks them."""
    import torch

    from medprobe.hardware import choose_onnx_precision, choose_torch_dtype, cpu_units

    check_inputs()
    torch.set_num_threads(threads)
    units = cpu_units()
    result = {
        "name": "precision (int8 ONNX ViT-S, bf16 torch LLaVA-layout)", "cpu": units.describe(),
        # without bf16 units a 1,024^2 bf16 product takes seconds: a smaller one shows the ratio
        "torch_peak_gflops": torch_matmul_peaks(MATMUL_SIZE if units.cpu_bf16 and not quick else
                                                1024 if units.cpu_bf16 else 512, repeats=3 if units.cpu_bf16 else 1),
        "onnx_peak_gflops": onnx_matmul_peaks(threads, 1024 if quick else MATMUL_SIZE),
        "onnx": onnx_int8(16 if quick else 64, threads),
        "auto": {"torch": choose_torch_dtype("auto", units, on_gpu=False).record(),
                 "onnx": choose_onnx_precision("auto", units).record()},
    }
    if units.cpu_bf16:
        result["torch"] = torch_bf16(8 if quick else 32, threads, hidden_size=512 if quick else 1024)
    if not quick:
        result["demo_auc"] = demo_auc(threads)
    onnx = result["onnx"]
    result["onnx_ratio"] = onnx["int8"]["images_per_s"] / onnx["fp32"]["images_per_s"]
    peaks = result["torch_peak_gflops"]
    result["torch_ratio"] = (result["torch"]["bf16"]["images_per_s"] / result["torch"]["fp32"]["images_per_s"]
                             if "torch" in result else peaks["bf16"] / peaks["fp32"])
    result["fastest"] = {"torch": "bf16" if result["torch_ratio"] > 1 else "fp32",
                         "onnx": "int8" if result["onnx_ratio"] > 1 else "fp32"}
    return result


def _print(result: dict[str, Any]) -> None:
    peaks_t, peaks_o = result["torch_peak_gflops"], result["onnx_peak_gflops"]
    print(f"measured matrix peaks: torch fp32 {peaks_t['fp32']:.0f}, bf16 {peaks_t['bf16']:.0f} GFLOP/s; "
          f"onnxruntime fp32 {peaks_o['fp32']:.0f}, int8 {peaks_o['int8']:.0f} GFLOP/s")
    print(f"CPU: {result['cpu']}")
    parts = [("ONNX ViT-S/14 (dinov2-s-onnx, real images)", result["onnx"], "int8", peaks_o)]
    if "torch" in result:
        parts.append(("torch LLaVA-layout (hidden 1024 full / 512 quick)", result["torch"], "bf16", peaks_t))
    else:
        print(f"torch bf16 extraction not run: no bf16 units here; matrix products bf16 / fp32 = "
              f"{result['torch_ratio']:.3f}x")
    tuned = result["onnx"]["tuned_onnxruntime"]["images_per_s"]
    print(f"medprobe's ONNX fp32 extraction vs a tuned plain onnxruntime loop: "
          f"{result['onnx']['fp32']['images_per_s'] / tuned:.2f}x ({tuned:.1f} img/s)")
    for title, part, low, peaks in parts:
        print(title)
        for precision in ("fp32", low):
            row = part[precision]
            share = row["achieved_gflops"] / peaks[precision]
            print(f"  {precision}: {row['images_per_s']:.1f} img/s, {row['achieved_gflops']:.0f} GFLOP/s "
                  f"= {share:.0%} of the {precision} peak")
        print(f"  {low} / fp32 speed: {part[low]['images_per_s'] / part['fp32']['images_per_s']:.2f}x")
        worst_cos = min(v["min_cosine"] for v in part["fidelity"].values())
        worst_rel = max(v["max_rel_error"] for v in part["fidelity"].values())
        worst_noise = max(v["standardised_noise"] for v in part["fidelity"].values())
        print(f"  fidelity vs fp32 over all layers: min cosine {worst_cos:.5f}, max relative error {worst_rel:.4f}, "
              f"noise per standardised feature (median over features, worst layer) {worst_noise:.3f}")
    if "demo_auc" in result:
        demo = result["demo_auc"]
        for precision in ("fp32", "int8"):
            row = demo[precision]
            print(f"demo ViT-S probe, {precision}: {row['layer']} test AUC {row['value']:.4f} "
                  f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}], extraction of 1,648 images {row['extract_s']:.0f} s")
        print(f"  int8 AUC within the fp32 95% CI: {demo['int8_within_fp32_ci']}")
    print(f"fastest here: torch {result['fastest']['torch']}, ONNX {result['fastest']['onnx']}; dtype auto picks "
          f"torch {result['auto']['torch']['value']} ({result['auto']['torch']['reason']}), ONNX "
          f"{result['auto']['onnx']['value']} ({result['auto']['onnx']['reason']})")


def main(argv: list[str] | None = None) -> None:
    """Command line of the precision benchmark: measures this machine and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    _print(run(quick=args.quick, threads=args.threads))


if __name__ == "__main__":
    main()
