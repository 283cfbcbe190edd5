"""Read-time cost of the feature-chunk checksum: one realistic chunk (256 samples x 4096 dims,
float16, 2 MiB), read from the page cache with and without verification (best of 5 x 200 reads).

    python benchmarks/bench_chunk_verify.py
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors import safe_open

from medprobe.features.cache import FeatureCache, read_chunk_file


def _best_ms(read, repeats: int = 200) -> float:
    read()
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            read()
        runs.append((time.perf_counter() - started) / repeats)
    return min(runs) * 1e3


def main() -> int:
    with tempfile.TemporaryDirectory() as root:
        ids = [f"s{i:05d}" for i in range(256)]
        cache = FeatureCache.open_or_create(Path(root), "bench", {"bench": 1}, ids, chunk_size=256, dtype="float16")
        features = np.random.default_rng(0).standard_normal((256, 4096)).astype(np.float32)
        cache.write_chunk("layer", 0, ids, features)
        path = cache.chunk_path("layer", 0)

        def unverified():
            with safe_open(str(path), framework="numpy") as handle:
                handle.metadata()
                return handle.get_tensor("features")

        plain, verified = _best_ms(unverified), _best_ms(lambda: read_chunk_file(path))
        print(f"chunk {path.stat().st_size / 2**20:.2f} MiB: read {plain:.2f} ms, read + sha256 verify "
              f"{verified:.2f} ms (+{verified - plain:.2f} ms, {2 / (verified - plain) * 1e3:.0f} MiB/s hashed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
