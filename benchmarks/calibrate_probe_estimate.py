"""Calibrates the probe-grid time estimate that `medprobe run` prints before fitting
(``medprobe.plan._FLOPS_PER_ROW_FEATURE_OUTPUT_AND_C``): fits one 6-C path on three
synthetic problems and prints the effective FLOPs per (training sample x feature x output x C)
and the estimate next to the measured time.

    PYTHONPATH=src python -W ignore benchmarks/calibrate_probe_estimate.py
"""
import time

import numpy as np
import torch
from medprobe.probes import LinearProbe
from medprobe.plan import grid_estimate, measured_flops
from medprobe.probes.layer_sweep import TrainSubset
rng = np.random.default_rng(0)
flops = measured_flops()
print(f"measured {flops/1e9:.0f} GFLOP/s, torch threads {torch.get_num_threads()}")
Cs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
for n, d, task, k in [(4000, 1024, "binary", 2), (4000, 1024, "multiclass", 9), (3000, 2048, "multilabel", 12)]:
    basis = rng.normal(size=(16, d))
    z = rng.normal(size=(n, 16))
    X = (z @ basis + rng.normal(size=(n, d)) * 2).astype(np.float32)
    if task == "multilabel":
        y = (z[:, :k] + rng.normal(size=(n, k)) > 1.2).astype(int)
    elif task == "multiclass":
        y = np.argmax(z[:, :k] + rng.normal(size=(n, k)), axis=1)
    else:
        y = (z[:, 0] + rng.normal(size=n) > 0).astype(int)
    started = time.perf_counter()
    probes = LinearProbe(task, n_classes=k if task != "binary" else None).fit_path(X, y, Cs)
    took = time.perf_counter() - started
    outputs = 1 if task == "binary" else k
    est = grid_estimate(1, d, outputs, [TrainSubset(1.0, 0, np.arange(n))], len(Cs), flops)["estimated_seconds"]
    print(f"effective FLOPs per sample x feature x output x C: {took * flops / (n * d * outputs * len(Cs)):.0f}")
    print(f"{task} n={n} d={d} K={k}: iterations per C {[p.n_iter_ for p in probes]} "
          f"(mean {np.mean([p.n_iter_ for p in probes]):.0f}); path {took:.2f} s, estimate {est:.2f} s")
