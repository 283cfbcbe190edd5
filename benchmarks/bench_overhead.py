"""Fixed cost of a small run: everything but the image forward passes, before vs after, in one run.

A 100-image run (60 train / 20 val / 20 test real PneumoniaMNIST images written as PNG folders;
``pixels`` + ``dinov2-s-onnx`` with all 12 layers swept, 2 train fractions, 1,000 bootstrap
replicates, figures and report) is run through ``medprobe run`` twice per code tree, alternating:
the first run of each pair fills a fresh feature cache, the second reads every feature from it.
The second run's wall time is pure fixed cost (imports, model set-up, probes, statistics, report);
the first run's wall time minus that is the extraction. Each tree's best of ``--repeats`` is kept.

    python benchmarks/bench_overhead.py --baseline-src /path/to/old/checkout/src

``--baseline-src`` is the ``src`` folder of the code to compare with (e.g. a ``git worktree`` of
an older commit); the current tree is the one this file belongs to.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CURRENT_SRC = Path(__file__).resolve().parents[1] / "src"
RUN_FILE = """name: overhead-bench
task_metric: auc
seed: 0
data:
  adapter: image_folder
  options: {{root: {root}}}
backbones:
  - name: pixels
  - name: dinov2-s-onnx
    options: {{pooling: cls}}
    layers: all
probe:
  train_fractions: [0.5, 1.0]
stats:
  n_bootstrap: 1000
  reference: pixels
"""


def write_images(root: Path, counts: dict[str, int]) -> None:
    """Real PneumoniaMNIST images, class-balanced, as ``root/<split>/<class>/<n>.png``."""
    from PIL import Image

    from medprobe.data.adapters import load_medmnist

    dataset = load_medmnist(flag="pneumoniamnist")
    table = dataset.samples
    for split, n in counts.items():
        source = table[table["split"] == ("train" if split == "train" else split)]
        labels = dataset.labels(source)
        for label, name in enumerate(dataset.classes):
            rows = source[labels == label].head(n // 2)
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, (_, row) in enumerate(rows.iterrows()):
                image = np.asarray(dataset.read_image(row))[..., 0]
                Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


def timed_run(src: Path, run_file: Path, out: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "MEDPROBE_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "medprobe.cli", "run", str(run_file), "--out", str(out), "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"medprobe run failed with {src}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    trees = {"baseline": args.baseline_src.resolve(), "current": CURRENT_SRC}
    with tempfile.TemporaryDirectory(prefix="medprobe-overhead-") as tmp:
        work = Path(tmp)
        write_images(work / "images", {"train": 60, "val": 20, "test": 20})
        run_file = work / "run.yaml"
        run_file.write_text(RUN_FILE.format(root=work / "images"))
        timings: dict[str, dict[str, list[float]]] = {name: {"cold": [], "warm": []} for name in trees}
        for repeat in range(args.repeats):
            for name, src in trees.items():
                cache = work / f"cache-{name}-{repeat}"
                timings[name]["cold"].append(timed_run(src, run_file, work / f"out-{name}", cache))
                timings[name]["warm"].append(timed_run(src, run_file, work / f"out-{name}", cache))
    summary = {}
    for name in trees:
        warm, cold = min(timings[name]["warm"]), min(timings[name]["cold"])
        summary[name] = {"warm_s": round(warm, 2), "cold_s": round(cold, 2), "extraction_s": round(cold - warm, 2)}
        print(f"{name:>8}: cold run {cold:.1f} s, fixed cost (warm-cache run) {warm:.1f} s, "
              f"extraction {cold - warm:.1f} s")
    ratio = summary["baseline"]["warm_s"] / summary["current"]["warm_s"]
    print(f"fixed cost, baseline / current: {ratio:.2f}x")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
