"""Paper-scale benchmark: a synthetic feature cache shaped like the study's T7 with IDEFICS-80B.

T7 (MIMIC-CXR, 54 findings) with IDEFICS-80B hidden states: 94,658 images, width 8,192, stored
float16 like medprobe's cache, 54 multi-label findings whose positive rates are spread
log-uniformly over 0.5 %-20 %. Features are low-rank signal plus noise: a 32-dimensional latent
``z`` decides the findings (``y_k = 1`` when ``z . b_k + noise`` exceeds its prevalence quantile),
every layer mixes ``z`` into all features with a strength that grows with depth, adds 8 strong
shared nuisance directions (real hidden states are anisotropic) and unit noise.

Stages, each in its own process so its peak RSS (``ru_maxrss``) is its own:

1. ``write``: the manifest (sample ids, splits 80/10/10, 54 finding columns) and the cache,
   chunk by chunk through the real writer (:class:`medprobe.features.cache.FeatureCache`), under
   the key the experiment computes for the synthetic backbone registered below;
2. ``probe``: the real experiment path (``run_experiment`` with ``cached_only=True``, i.e.
   ``medprobe probe``): probes for every layer x C, statistics, predictions, HTML report -- once
   with half of the layers and once with all of them, to show how memory grows with layers;
3. ``solvers`` (``--compare-solvers``): one layer, one C grid: medprobe ``grid="path"`` vs
   ``grid="batched"`` vs scikit-learn (one warm-started ``LogisticRegression`` per finding),
   each head and C checked at equal optima (objective within 1e-6 relative of the best of the
   three).

    python benchmarks/bench_paper_scale.py                       # full size: ~12 GB of disk for 8 layers
    python benchmarks/bench_paper_scale.py --n-images 20000 --width 2048 --layers 8   # a short run

The cache and run folders live under ``--workdir`` and are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

N_FINDINGS = 54
LATENT = 32
NUISANCE = 8
BACKBONE = "synthetic-idefics80b-shape"
#: IDEFICS-80B's LLaMA-65B has 80 decoder layers: 81 hidden states with the embeddings
N_HIDDEN_STATES = 81


# --------------------------------------------------------------------------- the synthetic backbone
def register_synthetic_backbone() -> None:
    """Register a backbone whose only job is to name the layers and give the cache key.

    It never extracts anything (the cache is written directly); asking it to is an error.
    """
    from medprobe.errors import ModelError
    from medprobe.models.base import Backbone
    from medprobe.models.registry import register_backbone

    class SyntheticHiddenStates(Backbone):
        name = BACKBONE

        def __init__(self, width: int = 8192, seed: int = 0) -> None:
            self.width, self.seed = int(width), int(seed)

        def layer_names(self) -> list[str]:
            return [f"hidden.{i}" for i in range(N_HIDDEN_STATES)]

        def fingerprint(self) -> dict[str, Any]:
            return {"backbone": BACKBONE, "width": self.width, "seed": self.seed, "generator": "bench_paper_scale v1"}

        def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
            raise ModelError(f"{BACKBONE} has no model: its features are written by bench_paper_scale.py")

    register_backbone(BACKBONE, SyntheticHiddenStates, "synthetic IDEFICS-80B-shaped hidden states (benchmark)",
                      "benchmark")


def probed_layers(n_layers: int) -> list[str]:
    """``n_layers`` hidden states spread over the 81, like a coarse layer sweep."""
    return [f"hidden.{int(i)}" for i in np.linspace(8, N_HIDDEN_STATES - 1, n_layers).round()]


def run_config(workdir: Path, width: int, layers: list[str], n_bootstrap: int, Cs: list[float]) -> Any:
    from medprobe.config import parse_config

    return parse_config({
        "name": "paper-scale-t7-idefics80b-shape", "output_dir": str(workdir / "run"),
        "cache_dir": str(workdir / "cache"),
        # the synthetic manifest names no real image files: build the table from the labels alone
        "data": {"adapter": "manifest", "check_files": False, "options": {
            "path": str(workdir / "manifest.parquet"),
            "label_columns": [f"finding_{k:02d}" for k in range(N_FINDINGS)]}},
        "backbones": [{"name": BACKBONE, "options": {"width": width}, "layers": layers}],
        "probe": {"Cs": Cs},
        "stats": {"n_bootstrap": n_bootstrap},
    }, "bench_paper_scale")


# --------------------------------------------------------------------------- stage 1: write
def prevalences(n: int) -> np.ndarray:
    """0.5 %-20 %, log-spaced; a short run (small ``n``) raises the floor so that every finding
    keeps ~30 positives and the 10 % test split still has some (AUC is undefined otherwise)."""
    return np.geomspace(max(0.005, 300 / n), 0.20, N_FINDINGS)


def latent_and_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    z = rng.standard_normal((n, LATENT))
    score = z @ rng.standard_normal((LATENT, N_FINDINGS)) / np.sqrt(LATENT) + rng.standard_normal((n, N_FINDINGS))
    thresholds = np.array([np.quantile(score[:, k], 1.0 - rate) for k, rate in enumerate(prevalences(n))])
    return z, (score > thresholds).astype(np.int8)


def stage_write(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from medprobe.data.loaders import load_dataset
    from medprobe.stages.data import ensure_validation_split
    from medprobe.features.extract import open_cache
    from medprobe.models.registry import create_backbone

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    z, labels = latent_and_labels(args.n_images, args.seed)
    rng = np.random.default_rng([args.seed, 1])
    split = rng.choice(["train", "val", "test"], size=args.n_images, p=[0.8, 0.1, 0.1])
    table = pd.DataFrame({"sample_id": [f"img{i:06d}" for i in range(args.n_images)],
                          "path": [f"images/img{i:06d}.png" for i in range(args.n_images)], "split": split})
    table = pd.concat([table, pd.DataFrame(labels, columns=[f"finding_{k:02d}" for k in range(N_FINDINGS)])], axis=1)
    table.to_parquet(workdir / "manifest.parquet", index=False)
    # the images are never read (the probe stage uses the cache only), but the manifest loader
    # rightly refuses a table none of whose files exist: one placeholder image stands in
    from PIL import Image

    (workdir / "images").mkdir(exist_ok=True)
    Image.new("L", (8, 8)).save(workdir / "images" / "img000000.png")

    layers = probed_layers(args.layers)
    config = run_config(workdir, args.width, layers, args.n_bootstrap, args.Cs)
    dataset = ensure_validation_split(load_dataset(config.data), config.probe.val_fraction, config.seed)
    backbone = create_backbone(BACKBONE, width=args.width)
    cache = open_cache(backbone, dataset, config.resolved_cache_dir(), args.chunk_size, "float16")
    order = {sample: i for i, sample in enumerate(table["sample_id"])}
    rows = np.array([order[s] for s in cache.sample_ids])  # the dataset's order
    for depth, layer in enumerate(layers):
        layer_rng = np.random.default_rng([args.seed, 2, depth])
        strength = 0.05 + 0.25 * (depth + 1) / len(layers)  # later layers carry more signal
        mixing = layer_rng.standard_normal((LATENT, args.width)).astype(np.float32) * strength
        nuisance = (layer_rng.standard_normal((NUISANCE, args.width))
                    * layer_rng.uniform(2, 6, (NUISANCE, 1))).astype(np.float32)
        offset = layer_rng.normal(0, 2, args.width).astype(np.float32)
        for chunk in cache.chunks():
            chunk_rng = np.random.default_rng([args.seed, 3, depth, chunk.index])
            m = chunk.stop - chunk.start
            block = chunk_rng.standard_normal((m, args.width), dtype=np.float32)
            block += z[rows[chunk.start:chunk.stop]].astype(np.float32) @ mixing
            block += chunk_rng.standard_normal((m, NUISANCE), dtype=np.float32) @ nuisance
            block += offset
            cache.write_chunk(layer, chunk.index, cache.sample_ids[chunk.start:chunk.stop], block)
        cache.mark_complete(layer)
        print(f"  wrote {layer} ({depth + 1}/{len(layers)}) at {time.perf_counter() - started:.0f} s", file=sys.stderr,
              flush=True)
    size = sum(f.stat().st_size for f in Path(cache.path).rglob("*") if f.is_file())
    return {"stage": "write", "seconds": round(time.perf_counter() - started, 1), "cache_bytes": size,
            "cache": str(cache.path), "positives_train": int(labels[split == "train"].sum(axis=0).min())}


# --------------------------------------------------------------------------- stage 2: probe
def stage_probe(args: argparse.Namespace) -> dict[str, Any]:
    from medprobe.experiment import run_experiment

    workdir = Path(args.workdir)
    layers = probed_layers(args.layers)[:args.probe_layers] if args.probe_layers else probed_layers(args.layers)
    config = run_config(workdir, args.width, layers, args.n_bootstrap, args.Cs)
    out = workdir / f"run-{len(layers)}"
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_experiment(config, out, overwrite=True, show_progress=False, cached_only=True)
    wall = time.perf_counter() - started
    timings = json.loads((out / "run.json").read_text())["timings"]
    results = json.loads((out / "results.json").read_text())
    return {"stage": "probe", "layers": len(layers), "seconds": round(wall, 1),
            "report_s": round(wall - timings["total_s"], 1), "timings": timings,
            "n_probes": len({(r.get("layer"), r.get("fraction"), r.get("seed")) for r in results}),
            "report": str(report), "peak_rss_bytes": peak_rss()}


# --------------------------------------------------------------------------- stage 3: solvers
def stage_solvers(args: argparse.Namespace) -> dict[str, Any]:
    from medprobe.bench.probes import compare_multilabel_solvers
    from medprobe.data.loaders import load_dataset
    from medprobe.stages.data import align_features, ensure_validation_split
    from medprobe.features.cache import FeatureCache
    from medprobe.features.extract import open_cache
    from medprobe.models.registry import create_backbone

    workdir = Path(args.workdir)
    layer = probed_layers(args.layers)[-1]
    config = run_config(workdir, args.width, [layer], args.n_bootstrap, args.Cs)
    dataset = ensure_validation_split(load_dataset(config.data), config.probe.val_fraction, config.seed)
    cache: FeatureCache = open_cache(create_backbone(BACKBONE, width=args.width), dataset, config.resolved_cache_dir(),
                                     args.chunk_size, "float16")
    ids, X = cache.load(layer)
    splits = align_features(dataset, ids, cache.skipped(layer))
    train = splits.index["train"][:args.solver_train] if args.solver_train else splits.index["train"]
    result = compare_multilabel_solvers(X[train], splits.labels["train"][:len(train)], args.Cs)
    return {"stage": "solvers", "layer": layer, "n_train": int(len(train)), **result}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------- driver
def run_stage(args: argparse.Namespace, stage: str, **extra: Any) -> dict[str, Any]:
    """Run one stage in a fresh interpreter; its last stdout line is its JSON result."""
    command = [sys.executable, __file__, "--stage", stage, "--workdir", args.workdir, "--n-images", str(args.n_images),
               "--width", str(args.width), "--layers", str(args.layers), "--chunk-size", str(args.chunk_size),
               "--n-bootstrap", str(args.n_bootstrap), "--seed", str(args.seed),
               "--solver-train", str(args.solver_train), "--Cs", *[str(c) for c in args.Cs]]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    started = time.perf_counter()
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        return {"stage": stage, **extra, "failed": f"exit status {completed.returncode}"
                + (" (killed: out of memory?)" if completed.returncode in (-9, 137) else ""),
                "seconds": round(time.perf_counter() - started, 1)}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=94_658)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=8, help="layers written and probed (>= 2)")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--Cs", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp") + "/medprobe-paper-scale")
    parser.add_argument("--compare-solvers", action="store_true", help="also stage 3 (path vs batched vs sklearn)")
    parser.add_argument("--solver-train", type=int, default=0, help="stage 3: first N training rows only (0: all)")
    parser.add_argument("--keep", action="store_true", help="keep the cache and runs")
    parser.add_argument("--stage", choices=["write", "probe", "solvers"], help=argparse.SUPPRESS)
    parser.add_argument("--probe-layers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.layers < 2:
        parser.error("--layers must be at least 2")
    register_synthetic_backbone()
    if args.stage:
        stage = {"write": stage_write, "probe": stage_probe, "solvers": stage_solvers}[args.stage]
        print(json.dumps({**stage(args), "peak_rss_bytes": peak_rss()}))
        return 0

    gib = 1024 ** 3
    print(f"paper-scale benchmark: {args.n_images} images x {args.width} features (float16), {N_FINDINGS} findings, "
          f"{args.layers} layers, Cs {args.Cs}; cache {args.n_images * args.width * 2 * args.layers / gib:.1f} GiB "
          f"under {args.workdir}", flush=True)
    if Path(args.workdir).exists():
        shutil.rmtree(args.workdir)
    results = [run_stage(args, "write")]
    try:
        if "failed" in results[0]:
            raise SystemExit(f"writing the cache failed: {results[0]['failed']}")
        for count in (args.layers // 2, args.layers):
            results.append(run_stage(args, "probe", probe_layers=count))
        if args.compare_solvers:
            results.append(run_stage(args, "solvers"))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    for result in results:
        rss = result.get("peak_rss_bytes")
        line = {k: v for k, v in result.items() if k not in ("peak_rss_bytes", "report", "cache")}
        print(f"{result['stage']:8s} peak RSS {rss / gib:6.2f} GiB  {json.dumps(line)}" if rss else
              f"{result['stage']:8s} {json.dumps(line)}")
    probes = [r for r in results if r["stage"] == "probe" and "peak_rss_bytes" in r]
    if len(probes) == 2:
        small, large = probes
        growth = large["peak_rss_bytes"] / small["peak_rss_bytes"] - 1
        per_layer = large["timings"][f"probe[{BACKBONE}]_s"] / large["layers"]
        print(f"peak RSS {small['layers']} -> {large['layers']} layers: {small['peak_rss_bytes'] / gib:.2f} -> "
              f"{large['peak_rss_bytes'] / gib:.2f} GiB ({growth:+.1%}); targets < 12 GiB and < +10 %")
        print(f"probe stage: {per_layer:.1f} s per layer here; "
              f"linear in layers -> 81 layers ~ {per_layer * 81 / 3600:.1f} h; "
              f"cost per iteration ~ n_train x width x findings, so at T6's 101,442 training images and width 8,192 "
              f"multiply by {101_442 / (0.8 * args.n_images) * 8192 / args.width:.1f} (iterations assumed equal)")
    return 0 if all("failed" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
