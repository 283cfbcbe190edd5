"""The demo's input sizes against the earlier ones, cold, side by side in one run.

`medprobe demo` feeds the 28 px images to the ViT-S at 112 px and to the VGG16 at 64 px so that a
cold run fits in 3 minutes on 2 cores. This script measures what that costs: it runs the shipped
demo and the same run file with the earlier sizes (ViT-S at its native 224 px, VGG16 at 128 px)
from empty feature caches, one after the other in fresh processes (``medprobe run``; wall time and
peak RSS of each), then prints every layer's test AUC at each train fraction under both settings,
and the rows each run reports (layer chosen on validation, test AUC with its 95 % CI).

    python benchmarks/bench_demo_settings.py [--workdir DIR]     # ~10 min on 2 cores

Needs the PneumoniaMNIST file (``MEDPROBE_DATA_DIR``) and the two ONNX wheels, checked first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import yaml

VIT, VGG = "dinov2-s-onnx", "vgg16-brainmri-onnx"
EARLIER = {VIT: {"input_size": 224}, VGG: {"input_size": 128}}


def run_files(workdir: Path) -> dict[str, Path]:
    """The shipped demo's run file and the variant with the earlier sizes, written under ``workdir``."""
    shipped = yaml.safe_load((files("medprobe") / "configs" / "demo.yaml").read_text())
    earlier = json.loads(json.dumps(shipped))
    for backbone in earlier["backbones"]:
        backbone.setdefault("options", {}).update(EARLIER.get(backbone["name"], {}))
    paths = {}
    for name, config in (("demo", shipped), ("earlier", earlier)):
        config["name"] = f"demo-{name}"
        paths[name] = workdir / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config, sort_keys=False))
    return paths


def run_cold(run_file: Path, workdir: Path, name: str) -> dict[str, float]:
    """``medprobe run`` from an empty cache in a fresh process: wall seconds and that process's peak RSS."""
    env = {**os.environ, "MEDPROBE_CACHE_DIR": str(workdir / f"cache-{name}")}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "medprobe.cli", "run", str(run_file), "--out",
                                str(workdir / f"run-{name}"), "--quiet"], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"medprobe run {run_file} failed (exit status {os.waitstatus_to_exitcode(status)})")
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
            "user_cpu_s": round(usage.ru_utime, 1)}


def per_layer_auc(workdir: Path) -> dict[str, dict[tuple, dict]]:
    """``{run: {(backbone, layer, fraction): row}}`` of the probe rows in each results.json."""
    out = {}
    for name in ("demo", "earlier"):
        rows = json.loads((workdir / f"run-{name}" / "results.json").read_text())
        out[name] = {(r["backbone"], r["layer"], r["train_fraction"]): r for r in rows
                     if r.get("metric") == "auc" and "layer" in r and r.get("C") is not None}
    return out


def print_fidelity(workdir: Path) -> None:
    """Every layer's test AUC and the reported rows of the two finished runs under ``workdir``."""
    rows = per_layer_auc(workdir)
    print("\ntest AUC per layer: demo settings vs earlier settings")
    for key, row in rows["demo"].items():
        if key[0] in (VIT, VGG):
            earlier = rows["earlier"][key]["value"]
            print(f"  {key[0]:20s} {key[1]:12s} f={key[2]:<4} {row['value']:.3f} vs {earlier:.3f}")
    print("\nrows reported (layer chosen on validation): demo settings | earlier settings")
    for key, row in rows["demo"].items():
        if row["selected"]:
            ref = next(r for k, r in rows["earlier"].items() if k[0] == key[0] and k[2] == key[2] and r["selected"])
            print(f"  {key[0]:20s} f={key[2]:<4} {row['layer']:12s} {row['value']:.3f} [{row['ci_low']:.3f}, "
                  f"{row['ci_high']:.3f}] | {ref['layer']:12s} {ref['value']:.3f} [{ref['ci_low']:.3f}, "
                  f"{ref['ci_high']:.3f}]")


def main(argv: list[str] | None = None) -> int:
    """Run both demos cold, then print their timings and every AUC side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where the caches and runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    from medprobe.hardware import cpu_units
    from medprobe.models.registry import create_backbone

    for name in (VIT, VGG):  # the wheels, before anything is timed
        create_backbone(name).close()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medprobe-demo-settings-"))
    workdir.mkdir(parents=True, exist_ok=True)
    paths = run_files(workdir)
    print(f"CPU: {cpu_units().describe()}; load average {os.getloadavg()[0]:.2f}; workdir {workdir}")
    timing = {name: run_cold(path, workdir, name) for name, path in paths.items()}
    for name, result in timing.items():
        print(f"cold `medprobe run` {name}: {result['seconds']:6.1f} s wall, {result['user_cpu_s']:6.1f} s user CPU, "
              f"peak RSS {result['peak_rss_gb']} GB")
    print(f"speed-up of the demo's sizes: {timing['earlier']['seconds'] / timing['demo']['seconds']:.2f}x "
          f"(load average after: {os.getloadavg()[0]:.2f})")
    print_fidelity(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
