"""Several layers in one solver pass (``probe.layers_per_pass``) against one pass per layer.

Both ways fit the same multi-label probes (every finding and C of every layer, warm-started C
path, the solver ``LinearProbe`` picks) on synthetic layers of the same samples -- a shared
low-rank signal seen through each layer's own mix plus noise -- alternately, ``--repeats``
times, in one process, and print the time of each, their ratio and the largest relative gap
between the two ways' objectives (per layer, C: the same optimum to within ``tol``).

The baseline is medprobe's own default: one layer per pass, each a batched multi-head C path
(the strongest per-layer fit here; scikit-learn is 14-20x slower on such grids, see
bench_probes.py). On the CPU the two ways do the same products; the shared pass saves the
solver's per-iteration Python and NumPy overhead only, so expect a ratio near 1 except for
small layers. On a GPU (``--device cuda``) that overhead is what a fit spends its time on.

    python benchmarks/bench_layers_per_pass.py                  # 8 layers, 2,000 x 768, 14 findings
    python benchmarks/bench_layers_per_pass.py --n 500 --width 256
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from medprobe.probes import LinearProbe


def synthetic_layers(
    n: int, width: int, findings: int, n_layers: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, 16))
    rates = np.geomspace(0.01, 0.2, findings)
    scores = signal @ rng.standard_normal((16, findings)) + 2.0 * rng.standard_normal((n, findings))
    thresholds = np.array([np.quantile(scores[:, k], 1 - rate) for k, rate in enumerate(rates)])
    labels = (scores > thresholds).astype(np.int64)
    layers = [(signal @ rng.standard_normal((16, width)) * (0.5 + depth / n_layers)
               + rng.standard_normal((n, width))).astype(np.float32) for depth in range(n_layers)]
    return layers, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--findings", type=int, default=14)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--Cs", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    layers, labels = synthetic_layers(args.n, args.width, args.findings, args.layers, seed=0)
    template = LinearProbe("multilabel", device=args.device)
    ways = {
        "one layer per pass": lambda: [template.fit_path(X, labels, args.Cs) for X in layers],
        f"{args.layers} layers per pass": lambda: template.fit_layers_path(layers, labels, args.Cs),
    }
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    losses: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for way, fit in ways.items():
            started = time.perf_counter()
            fitted = fit()
            seconds[way].append(time.perf_counter() - started)
            losses[way] = np.array([[probe.loss_ for probe in row] for row in fitted])
            unconverged = sum(len(probe.unconverged_heads_) for row in fitted for probe in row)
    baseline, shared = (min(seconds[way]) for way in ways)
    reference, other = losses.values()
    print(json.dumps({
        "shape": {"n": args.n, "width": args.width, "findings": args.findings, "layers": args.layers, "Cs": args.Cs},
        "device": args.device, "seconds": {way: [round(s, 3) for s in values] for way, values in seconds.items()},
        "speedup_best_of": round(baseline / shared, 3),
        "max_relative_objective_gap": float(np.max(np.abs(other - reference) / np.abs(reference))),
        "unconverged_heads_last_run": unconverged,
    }))


if __name__ == "__main__":
    main()
