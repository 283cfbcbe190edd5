"""How long the probe grid of a run will take on this CPU, announced before any fit starts."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Sequence

# "< 1 s", never "0 s" for real work; re-exported: medprobe.plan and medprobe.plan.other import it from here
from medprobe.progress import format_duration  # noqa: F401

if TYPE_CHECKING:
    from medprobe.probes.layer_sweep import TrainSubset

#: effective floating-point work of one C of a warm-started L-BFGS path, per training sample x
#: feature x output: iterations x objective/gradient evaluations x two (n x D) @ (D x K) products,
#: plus standardising and scoring. Measured on the 2-core development machine at paper scale
#: (94,658 x 8,192 float16 cache, 54 findings, tol 1e-7): ~660 with one C (0.01; 185 s per layer)
#: and ~950 per C with the study's six (1e-4 ... 10, weak regularisation costs more; 1,175 s for
#: one layer, where 400 announced 496 s); 75-141 on three small synthetic problems at tol 1e-4
#: (benchmarks/calibrate_probe_estimate.py). The estimate is good to about 1.5x at paper scale;
#: small sigmoid problems, fitted by Newton's method, take far less
_FLOPS_PER_ROW_FEATURE_OUTPUT_AND_C = 750


@functools.lru_cache(maxsize=1)
def measured_flops() -> float:
    """Float32 matrix-product throughput of this process (FLOP/s), from a ~30 ms trial of the
    NumPy BLAS the CPU solver runs on, once per process (every backbone of a run shares it). The
    trial matrix is small (1 MiB: memory checks of the probe stage see it), and gives within ~5 %
    of the rate of a 4x larger one here."""
    import numpy as np  # the hardware plan above needs no NumPy

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 64), dtype=np.float32)
    a @ b  # warm-up
    started, repeats = time.perf_counter(), 0
    while time.perf_counter() - started < 0.03:
        a @ b
        repeats += 1
    return 2 * 256 * 1024 * 64 * repeats / (time.perf_counter() - started)


def grid_estimate(n_layers: int, dim: int, n_outputs: int, subsets: Sequence[TrainSubset], n_Cs: int,
                  flops: float) -> dict[str, Any]:
    """Fit count and a rough CPU time of a backbone's probe grid, before fitting anything."""
    rows = sum(len(subset.train_rows) for subset in subsets)
    work = n_layers * rows * dim * n_outputs * n_Cs * _FLOPS_PER_ROW_FEATURE_OUTPUT_AND_C
    return {"layers": n_layers, "plans": len(subsets), "Cs": n_Cs, "paths": n_layers * len(subsets),
            "fits": n_layers * len(subsets) * n_Cs, "estimated_seconds": work / flops}


def n_outputs(task_type: str, n_classes: int) -> int:
    """Weight vectors a probe fits: one for binary, one per class / finding otherwise."""
    return 1 if task_type == "binary" else n_classes
