"""The study's 8-bit storage measured on a finished float16 cache entry: size and selected AUCs.

Usage::

    python benchmarks/bench_uint8_storage.py RUN.yaml [--out DIR]

``RUN.yaml`` names the data, one backbone and its ``cache_dir``; the backbone's float16 entry
must be complete there (``configs/demo_study_protocol.yaml`` after ``medprobe demo``; its
``probe.protocols`` is dropped here: medprobe's protocol only). The uint8 entry is written beside it from the
float16 chunks -- exactly what ``extraction.dtype: uint8`` writes, since extraction stores the same float16 values
first and converts them when a layer is complete -- so no model runs. Then the run is probed twice, from
the float16 and from the uint8 entry (``medprobe probe``'s path), and the script prints both
caches' chunk bytes and each selected probe's test AUC with its CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medprobe.config import load_config
from medprobe.experiment import run_experiment
from medprobe.features.cache import FeatureCache, entry_path, read_chunk_file


def chunk_bytes(cache: FeatureCache) -> int:
    return sum(path.stat().st_size for path in cache.path.glob("layers/*/*.safetensors"))


def uint8_copy(source: FeatureCache, root: Path) -> FeatureCache:
    """The uint8 entry of ``source``'s setting, filled from its float16 chunks and converted."""
    target = FeatureCache.open_or_create(root, source.meta["backbone"], source.meta["fingerprint"], source.sample_ids,
                                         chunk_size=source.chunk_size, dtype="uint8")
    for layer in source.layers():
        if target.is_complete(layer):
            continue
        for chunk in source.chunks():
            info, array = read_chunk_file(source.chunk_path(layer, chunk.index))
            target.write_chunk(layer, chunk.index, info["sample_ids"], array, info["skipped"])
        target.mark_complete(layer)
    return target


def selected_aucs(run_dir: Path, metric: str) -> dict[tuple, tuple[float, float, float]]:
    rows = json.loads((run_dir / "results.json").read_text())
    return {(r["backbone"], r["layer"], r["train_fraction"], r["seed"]): (r["value"], r["ci_low"], r["ci_high"])
            for r in rows if r["selected"] and r["metric"] == metric}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_file")
    parser.add_argument("--out", default="runs/uint8-storage")
    args = parser.parse_args(argv)
    config = load_config(args.run_file)
    root = config.resolved_cache_dir()
    (source_path,) = [path for path in root.glob("*-*") if (path / "meta.json").is_file()
                      and json.loads((path / "meta.json").read_text())["dtype"] == "float16"
                      and json.loads((path / "meta.json").read_text())["backbone"] == config.backbones[0].name]
    source = FeatureCache(source_path)
    target = uint8_copy(source, root)
    assert target.path == entry_path(root, source.meta["backbone"], source.meta["fingerprint"], source.sample_ids,
                                     "uint8")
    results = {}
    for dtype in ("float16", "uint8"):
        run = config.model_copy(update={"extraction": config.extraction.model_copy(update={"dtype": dtype}),
                                        "probe": config.probe.model_copy(update={"protocols": None})})
        out = Path(args.out) / dtype
        run_experiment(run, out, overwrite=True, show_progress=False, cached_only=True)
        results[dtype] = selected_aucs(out, config.task_metric)
    print(f"chunk bytes: float16 {chunk_bytes(source):,}  uint8 {chunk_bytes(target):,} "
          f"({chunk_bytes(target) / chunk_bytes(source):.1%})")
    for key, (value, low, high) in results["float16"].items():
        other = results["uint8"].get(key)
        shown = "not selected" if other is None else f"{other[0]:.4f}"
        inside = other is not None and low <= other[0] <= high
        print(f"{key}: float16 {value:.4f} [{low:.4f}, {high:.4f}]  uint8 {shown}  within float16 CI: {inside}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
