"""Extraction benchmark: the study's way vs medprobe's, on a deep tiny VLM built from a config.

*Study-style*: one image per forward pass, ``output_hidden_states=True`` for every layer (LM head
included), the pooled vector of every layer of every image kept in host RAM until the end.
*medprobe*: batched forward passes that stop after the requested layer (no later blocks, no LM
head), features streamed chunk by chunk into the on-disk cache.

The ratio is split into its three sources by a ladder of runs, each adding one change to the
previous one (so each factor is measured given the ones before it, in this order):

1. study-style (above);
2. **early stop**: medprobe's path at batch 1, fp32 -- the forward pass stops after the layer;
3. **batching**: the same at batch 32;
4. **precision**: the same in bfloat16 (the chip's AMX units; fidelity vs fp32 reported as the
   minimum cosine similarity of the features).

The product of the three factors is the whole ratio of step 4 to step 1.

Both read layer 8 of a 32-layer (like IDEFICS-9B) LLaVA-layout model with the same prompt and last-token pooling;
the benchmark checks the two give the same features (to float16 cache precision). Each
measurement runs in its own subprocess so peak RSS (``ru_maxrss``) is that run's alone; it is
measured at N and 4N images to show whether memory grows with the data set.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LAYER = "8"
#: the runs of the ladder, in order (see the module docstring)
LADDER = ("study", "stop", "medprobe", "bf16")
LM_LAYERS = 32  # as IDEFICS-9B (LLaMA-7B) has; the issue asks for >= 24


def _image(index: int, size: int) -> np.ndarray:
    """Image ``index``, generated on demand (like reading a file) so neither way holds them all."""
    return np.random.default_rng(index).random((size, size, 3), dtype=np.float32)


def _dataset(n: int, size: int):
    import pandas as pd

    from medprobe.data.dataset import Dataset

    table = pd.DataFrame({"sample_id": [f"img{i:06d}" for i in range(n)], "split": "train",
                          "label": [i % 2 for i in range(n)], "group": None, "source": [f"mem:{i}" for i in range(n)]})
    return Dataset("bench", table, ["a", "b"], "binary", lambda row: _image(int(row["source"][4:]), size),
                   preprocessing={"bench": 1})


def _study_style(model_dir: Path, n: int, size: int) -> dict[str, Any]:
    """Batch 1, every layer, all pooled vectors of all layers held in RAM."""
    import torch

    from medprobe.models.imaging import to_pil
    from medprobe.models.registry import create_backbone

    backbone = create_backbone(f"hf:{model_dir}", dtype="float32")
    model = backbone.model
    held: list[list[np.ndarray]] = []
    started = time.perf_counter()
    with torch.inference_mode():
        for image in (_image(i, size) for i in range(n)):
            inputs = backbone.encode([to_pil(image)], [backbone.prompt])
            out = model(**inputs, output_hidden_states=True, use_cache=False)
            held.append([h[0, -1].float().numpy().copy() for h in out.hidden_states])
    elapsed = time.perf_counter() - started
    layer8 = np.stack([layers[int(LAYER)] for layers in held])
    return {"seconds": elapsed, "features": layer8}


def _medprobe(model_dir: Path, n: int, size: int, cache_root: Path, batch_size: int,
              dtype: str = "float32") -> dict[str, Any]:
    from medprobe.features import extract_features
    from medprobe.models.registry import create_backbone

    backbone = create_backbone(f"hf:{model_dir}", dtype=dtype)
    dataset = _dataset(n, size)
    started = time.perf_counter()
    cache = extract_features(backbone, dataset, [LAYER], cache_root, batch_size=batch_size, chunk_size=128,
                             show_progress=False)
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "features": cache.load(LAYER)[1]}


def _worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    if args.mode == "study":
        result = _study_style(Path(args.model), args.n, args.size)
    else:
        batch_size, dtype = {"stop": (1, "float32"), "medprobe": (args.batch_size, "float32"),
                             "bf16": (args.batch_size, "bfloat16")}[args.mode]
        result = _medprobe(Path(args.model), args.n, args.size, Path(args.cache), batch_size, dtype)
    np.save(args.features, result["features"])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": args.mode, "n": args.n, "seconds": result["seconds"], "peak_rss_mb": peak_mb}))


def _measure(mode: str, model_dir: Path, n: int, size: int, work: Path, batch_size: int, threads: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    features = work / f"{mode}-{n}.npy"
    cache = work / f"cache-{mode}-{n}"
    command = [sys.executable, "-m", "medprobe.bench.extraction", "--worker", "--mode", mode, "--model",
               str(model_dir), "--n", str(n), "--size", str(size), "--cache", str(cache), "--features",
               str(features), "--batch-size", str(batch_size), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["features"] = np.load(features)
    return result


def run(quick: bool = False, threads: int = 2) -> dict[str, Any]:
    """Measure both ways side by side; returns images/s, their ratio and peak RSS at N and 4N."""
    from medprobe.hardware import cpu_units
    from medprobe.testing.tiny_models import build_tiny_llava

    # the bf16 rung only where the CPU has bf16 units: elsewhere dtype auto never picks bf16, and
    # bf16 products run at 0.02-0.3x of fp32 (medprobe.hardware), so the rung would take minutes
    ladder = LADDER if cpu_units().cpu_bf16 else LADDER[:-1]
    n = 24 if quick else 150
    size, batch_size = 64, 32
    with tempfile.TemporaryDirectory(prefix="medprobe-bench-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_llava(work / "model", lm_layers=LM_LAYERS, hidden_size=256, image_size=size)
        rows = {}
        for mode in ("study", "medprobe"):
            rows[(mode, n)] = _measure(mode, model_dir, n, size, work, batch_size, threads)
        # The timed runs (4N) alternate twice and keep each way's faster run, so a burst of load
        # on a shared machine does not decide the ratio.
        seconds: dict[str, list[float]] = {mode: [] for mode in ladder}
        for repeat in range(2):
            for mode in ladder:
                result = _measure(mode, model_dir, 4 * n, size, work / f"r{repeat}", batch_size, threads)
                rows[(mode, 4 * n)] = result
                seconds[mode].append(result["seconds"])
        reference, ours = rows[("study", n)]["features"], rows[("medprobe", n)]["features"]
        max_abs_diff = float(np.abs(reference.astype(np.float16).astype(np.float32) - ours).max())
        cosine = None
        if "bf16" in ladder:
            fp32, bf16 = rows[("medprobe", 4 * n)]["features"], rows[("bf16", 4 * n)]["features"]
            cosine = (fp32 * bf16).sum(axis=1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    speed = {mode: (4 * n) / min(seconds[mode]) for mode in ladder}
    factors = {step: speed[mode] / speed[previous] for (step, mode), previous in zip(
        (("early stop", "stop"), ("batching", "medprobe"), ("precision", "bf16")), ladder) if mode in speed}
    bf16 = {} if cosine is None else {"bf16_images_per_s": speed["bf16"], "bf16_ratio": speed["bf16"] / speed["study"],
                                      "bf16_min_cosine_vs_fp32": float(cosine.min())}
    return {
        "name": f"extraction ({LM_LAYERS}-layer tiny LLaVA, layer {LAYER})",
        "n": n,
        "study_images_per_s": speed["study"],
        "medprobe_images_per_s": speed["medprobe"],
        "ratio": speed["medprobe"] / speed["study"],
        "study_peak_rss_mb": {n: rows[("study", n)]["peak_rss_mb"], 4 * n: rows[("study", 4 * n)]["peak_rss_mb"]},
        "medprobe_peak_rss_mb": {n: rows[("medprobe", n)]["peak_rss_mb"],
                                 4 * n: rows[("medprobe", 4 * n)]["peak_rss_mb"]},
        "max_abs_diff_vs_study": max_abs_diff,
        "baseline": "study-style loop: batch 1, output_hidden_states=True for every layer and the LM head, "
                    "all layers' pooled vectors kept in RAM",
        "ladder_images_per_s": speed,
        "factors": factors,
        "cpu": cpu_units().describe(),
        **bf16,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line of the extraction benchmark (also the entry point of its ``--worker`` subprocesses)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(LADDER))
    parser.add_argument("--model")
    parser.add_argument("--n", type=int)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cache")
    parser.add_argument("--features")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    result = run(quick=args.quick, threads=args.threads)
    print(f"CPU: {result['cpu']}")
    n = result["n"]
    print(f"{result['name']}: study-style {result['study_images_per_s']:.1f} img/s, "
          f"medprobe {result['medprobe_images_per_s']:.1f} img/s -> {result['ratio']:.1f}x")
    for who in ("study", "medprobe"):
        rss = result[f"{who}_peak_rss_mb"]
        print(f"  peak RSS {who:>8}: N={n}: {rss[n]:.0f} MB, 4N={4 * n}: {rss[4 * n]:.0f} MB")
    print(f"  max |feature difference| vs study-style (float16 cache): {result['max_abs_diff_vs_study']:.2e}")
    print(f"  baseline: {result['baseline']}")
    print("  the ratio split into its sources (each step adds one change to the previous one):")
    steps = ("study-style", "+ early stop (batch 1)", "+ batching (32)", "+ bfloat16")
    for step, (mode, speed) in zip(steps, result["ladder_images_per_s"].items()):
        print(f"    {step:<24} {speed:7.1f} img/s")
    print("    factors: " + ", ".join(f"{name} {value:.2f}x" for name, value in result["factors"].items())
          + f"; product {np.prod(list(result['factors'].values())):.1f}x")
    if "bf16_ratio" in result:
        print(f"    bfloat16 path / study-style {result['bf16_ratio']:.1f}x; bfloat16 features: min cosine "
              f"{result['bf16_min_cosine_vs_fp32']:.4f} vs fp32")
    else:
        print(f"    no bfloat16 rung: this CPU has no bf16 units ({result['cpu']})")


if __name__ == "__main__":
    main()
