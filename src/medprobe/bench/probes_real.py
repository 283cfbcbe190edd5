"""Benchmark: binary C grids on real cached activations, medprobe vs warm-started scikit-learn.

The strongest simple baseline for a C grid on one small binary problem is one
``LogisticRegression(lbfgs, warm_start=True)`` walked up the same grid on ``StandardScaler`` output
(float64), stopping at the same ``tol`` (max |gradient| of the mean-scaled objective). How many
BLAS threads it gets matters more than anything else on a shared machine: with the default (all
cores) a busy 2-core machine made it 12x slower than with one. So it is timed both ways and
medprobe is compared with the *faster* of the two.

Side by side in one process: every repeat runs medprobe, scikit-learn with its default threads
and scikit-learn with one BLAS thread, in a rotating order, over all layers of the backbone; the
medians are compared. The features are read before any timing, and every input (run file, data
file, a complete cache of every layer) is checked before anything is timed. Outside the timed
parts both answers are checked against a tightly converged fit (``tol=1e-10``): the relative
objective gap and the test AUC difference, worst over layers x Cs.

    python benchmarks/bench_probes.py --real RUN_FILE [--backbone NAME] [--repeats 3]
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable

import numpy as np

from medprobe.errors import ConfigError


def _binary_objective(coef: np.ndarray, intercept: float, Xs: np.ndarray, y: np.ndarray, C: float) -> float:
    """scikit-learn's primal objective ``0.5 ||w||^2 + C sum logloss`` in float64."""
    z = Xs @ coef.ravel() + intercept
    return 0.5 * float(coef.ravel() @ coef.ravel()) + C * float((np.logaddexp(0.0, z) - y * z).sum())


def read_layers(run_file: str, backbone: str | None) -> tuple[Any, list[tuple[str, dict[str, np.ndarray]]], Any]:
    """``(backbone spec, [(layer, {train, test, y_train, y_test})], config)`` from the run file's
    complete cache; a clear error, before anything is timed, when any input is missing."""
    from medprobe.config import load_config
    from medprobe.features.extract import existing_cache
    from medprobe.models.registry import create_backbone
    from medprobe.stages.data import align_features, load_data

    if not os.path.isfile(run_file):
        raise ConfigError(f"run file not found: {run_file}")
    config = load_config(run_file)
    spec = next((b for b in config.backbones if backbone in (None, b.display_name, b.name)), None)
    if spec is None:
        raise ConfigError(f"no backbone {backbone!r} in {run_file}; it has "
                          f"{[b.display_name for b in config.backbones]}")
    dataset = load_data(config.data, val_fraction=config.probe.val_fraction, seed=config.seed)
    if dataset.task_type != "binary":
        raise ConfigError(f"{run_file}: a binary task is needed, this one is {dataset.task_type}")
    model = create_backbone(spec.name, **spec.options)
    try:
        layers = model.resolve_layers(spec.layers)
        cache = existing_cache(model, dataset, config.resolved_cache_dir(), config.extraction.dtype)
    finally:
        model.close()
    missing = [layer for layer in layers if cache is None or not cache.is_complete(layer)]
    if missing:
        raise ConfigError(f"{spec.display_name}: layers {missing} are not in the cache under "
                          f"{config.resolved_cache_dir()}; run `medprobe extract {run_file}` first")
    out = []
    for layer in layers:
        ids, X = cache.load(layer)
        splits = align_features(dataset, ids, cache.skipped(layer))
        out.append((layer, {"train": X[splits.index["train"]], "test": X[splits.index["test"]],
                            "y_train": splits.labels["train"], "y_test": splits.labels["test"]}))
    return spec, out, config


def _medprobe(layers: list[tuple[str, dict[str, np.ndarray]]], grid: list[float]) -> list[list[Any]]:
    from medprobe.errors import ConvergenceWarning as ProbeConvergenceWarning
    from medprobe.probes.logistic import LinearProbe

    fits = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeConvergenceWarning)
        for _, data in layers:
            probes = LinearProbe("binary", device="cpu").fit_path(data["train"], data["y_train"], grid)
            fits.append([(p.coef_, float(p.intercept_[0])) for p in probes])
    return fits


def _sklearn(layers: list[tuple[str, dict[str, np.ndarray]]], grid: list[float], tol: float,
             blas_threads: int | None) -> list[list[Any]]:
    """Warm-started scikit-learn over the grid, every layer; ``blas_threads`` None: its default."""
    import contextlib

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    fits = []
    limit = threadpool_limits(blas_threads, user_api="blas") if blas_threads else contextlib.nullcontext()
    with limit, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _, data in layers:
            Xs = StandardScaler().fit_transform(data["train"].astype(np.float64))
            warm = LogisticRegression(solver="lbfgs", tol=tol, max_iter=100_000, warm_start=True)
            row = []
            for C in grid:
                warm.set_params(C=C).fit(Xs, data["y_train"])
                row.append((warm.coef_.copy(), float(warm.intercept_[0])))
            fits.append(row)
    return fits


def _accuracy(layers, grid: list[float], fits: dict[str, list[list[Any]]]) -> dict[str, dict[str, float]]:
    """Worst relative objective gap and test-AUC difference of each side against a tol=1e-10 fit.
    medprobe's weights live on its own standardised features, which equal StandardScaler's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    gaps: dict[str, list[float]] = {name: [] for name in fits}
    aucs: dict[str, list[float]] = {name: [] for name in fits}
    for number, (_, data) in enumerate(layers):
        scaler = StandardScaler().fit(data["train"].astype(np.float64))
        Xs, Xt = scaler.transform(data["train"].astype(np.float64)), scaler.transform(data["test"].astype(np.float64))
        tight = LogisticRegression(solver="lbfgs", tol=1e-10, max_iter=100_000, warm_start=True)
        for c, C in enumerate(grid):
            tight.set_params(C=C).fit(Xs, data["y_train"])
            best = _binary_objective(tight.coef_, tight.intercept_[0], Xs, data["y_train"], C)
            auc_best = roc_auc_score(data["y_test"], Xt @ tight.coef_[0] + tight.intercept_[0])
            for name, side in fits.items():
                w, b = side[number][c]
                gaps[name].append(abs(_binary_objective(w, b, Xs, data["y_train"], C) - best) / best)
                aucs[name].append(abs(roc_auc_score(data["y_test"], Xt @ w.ravel() + b) - auc_best))
    return {"max_rel_objective_gap": {k: float(max(v)) for k, v in gaps.items()},
            "max_auc_diff": {k: float(max(v)) for k, v in aucs.items()}}


def run_real(run_file: str, backbone: str | None = None, Cs: list[float] | None = None,
             repeats: int = 3) -> dict[str, Any]:
    """Time medprobe and both scikit-learn baselines ``repeats`` times, alternating (see the module
    docstring); medians, every time, the ratio against the faster baseline, and the accuracy check."""
    from medprobe.hardware import cpu_units
    from medprobe.probes.logistic import DEFAULT_TOL

    spec, layers, config = read_layers(run_file, backbone)
    grid = sorted(Cs or config.probe.Cs)
    sides: dict[str, Callable[[], list[list[Any]]]] = {
        "medprobe": lambda: _medprobe(layers, grid),
        "sklearn_default_threads": lambda: _sklearn(layers, grid, DEFAULT_TOL, None),
        "sklearn_1_blas_thread": lambda: _sklearn(layers, grid, DEFAULT_TOL, 1),
    }
    names = list(sides)
    load_before = os.getloadavg()[0]
    fits = {name: side() for name, side in sides.items()}  # warm-up, and the answers checked below
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:  # rotate the order
            started = time.perf_counter()
            sides[name]()
            seconds[name].append(time.perf_counter() - started)
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    strongest = min(names[1:], key=lambda name: medians[name])
    first = layers[0][1]
    return {
        "name": "probe_C_path_real", "run_file": run_file, "backbone": spec.display_name, "layers": len(layers),
        "n_train": int(len(first["y_train"])), "width": int(first["train"].shape[1]), "Cs": grid, "tol": DEFAULT_TOL,
        "cpu": cpu_units().describe(), "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "repeats": repeats, "seconds": {k: [round(v, 3) for v in vals] for k, vals in seconds.items()},
        "median_s": {k: round(v, 3) for k, v in medians.items()}, "strongest_baseline": strongest,
        "baseline": "scikit-learn LogisticRegression(lbfgs, warm_start=True) up the C grid, float64, same tol",
        "ours_s": round(medians["medprobe"], 3), "naive_s": round(medians[strongest], 3),
        "ratio": round(medians[strongest] / medians["medprobe"], 2),
        "ratio_vs_default_threads": round(medians["sklearn_default_threads"] / medians["medprobe"], 2),
        **_accuracy(layers, grid, {"medprobe": fits["medprobe"], "sklearn": fits[strongest]}),
    }


def print_real(real: dict[str, Any]) -> None:
    """Print :func:`run_real`'s timings and agreement figures, so that the ratio is read beside what it cost."""
    print(f"CPU: {real['cpu']}; load average {real['load_average'][0]} before, {real['load_average'][1]} after")
    print(f"{real['backbone']}: {real['layers']} layers x {len(real['Cs'])} Cs {real['Cs']}, "
          f"{real['n_train']} train x {real['width']} features, tol {real['tol']:g}; "
          f"{real['repeats']} alternating repeats")
    for name, values in real["seconds"].items():
        print(f"  {name:26s} median {real['median_s'][name]:7.2f} s   all {values}")
    print(f"baseline: {real['baseline']}; strongest here: {real['strongest_baseline']}")
    print(f"medprobe vs the strongest baseline: {real['ratio']:.2f}x "
          f"(vs scikit-learn's default threads: {real['ratio_vs_default_threads']:.2f}x)")
    print(f"vs a tol=1e-10 fit, worst over layers x Cs: objective gap {real['max_rel_objective_gap']}, "
          f"test AUC difference {real['max_auc_diff']}")


__all__ = ["print_real", "read_layers", "run_real"]
