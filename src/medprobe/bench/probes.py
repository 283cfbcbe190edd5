"""Benchmark: choosing C for a 9-class probe -- warm-started scikit-learn vs medprobe's path.

Full size is a large probe of the study: 20,000 training activations of 4,096 features (a
LLaVA/IDEFICS-sized hidden state), 9 classes (NCT-CRC-HE-100K's tissue types), 5,000 validation
and 5,000 test samples, and a grid of 5 C values. The features are synthetic but shaped like
activations: the classes differ only in a 32-dimensional subspace, a few strong shared
directions dominate the variance (as in real hidden states), features have unequal scales and
offsets, and noise keeps the test AUC well below 1.

Both ways get the same float32 features and the same stopping rule (scikit-learn's ``tol=1e-4``:
max |gradient| of the mean-scaled objective), with ``max_iter`` raised so that both converge:

* baseline, the strongest simple scikit-learn way: ``StandardScaler`` + one
  ``LogisticRegression(solver="lbfgs", warm_start=True)`` walked up the C grid (scikit-learn 1.5+
  is multinomial by default), C chosen on validation AUC; timed with scikit-learn's default BLAS
  threads and with one, and the faster counts (cold starts per C, the earlier baseline, gave
  21.7x at full size and flattered medprobe);
* medprobe: :func:`medprobe.probes.select_probe` (one warm-started, preconditioned L-BFGS path;
  matrix products in torch, float32, on the GPU when there is one).

Each side's test macro AUC is reported at its own validation-selected C; they must agree within
0.002.

    python benchmarks/bench_probes.py            # full size (many minutes on 2 cores)
    python benchmarks/bench_probes.py --quick    # small, for CI

``run(quick)`` returns the numbers as a dict so ``medprobe bench`` can call it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medprobe.errors import ConvergenceWarning as ProbeConvergenceWarning
from medprobe.probes import resolve_device, select_probe

FULL = {"n_train": 20_000, "n_val": 5_000, "n_test": 5_000, "n_features": 4096, "n_classes": 9}
QUICK = {"n_train": 3_000, "n_val": 1_000, "n_test": 1_000, "n_features": 512, "n_classes": 9}
#: 4,096 features of which only a 32-dimensional subspace carries the classes: the best C is small
#: (as for real high-dimensional probes), so the grid is centred there and has it inside
CS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
TOL = 1e-4
MAX_ITER = 3000
AGREEMENT = 0.002


def make_features(n: int, n_features: int, n_classes: int, seed: int = 0,
                  latent: int = 32, nuisance: int = 8, separation: float = 0.25,
                  noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """float32 activations (n, n_features) and labels (n,) with unequal class sizes.

    x = A z + B u + noise, then per-feature scale and offset, where z (``latent`` dims) has a
    class-dependent mean and u (``nuisance`` dims, large variance) does not.
    """
    rng = np.random.default_rng(seed)
    prevalence = rng.dirichlet(np.full(n_classes, 5.0))
    y = rng.choice(n_classes, size=n, p=prevalence)
    class_means = rng.normal(0.0, separation, size=(n_classes, latent))
    mixing = rng.normal(0.0, 1.0, size=(latent, n_features)) / np.sqrt(latent)
    shared = rng.normal(0.0, 1.0, size=(nuisance, n_features)) * rng.uniform(0.5, 2.0, size=(nuisance, 1))
    scale = np.exp(rng.normal(0.0, 1.0, size=n_features)).astype(np.float32)
    offset = rng.normal(0.0, 3.0, size=n_features).astype(np.float32)
    X = np.empty((n, n_features), dtype=np.float32)
    step = 2048
    for start in range(0, n, step):  # in blocks, so the float64 temporaries stay small
        rows = slice(start, min(n, start + step))
        m = rows.stop - rows.start
        z = class_means[y[rows]] + rng.normal(size=(m, latent))
        u = rng.normal(size=(m, nuisance))
        block = z @ mixing + u @ shared + rng.normal(0.0, noise, size=(m, n_features))
        X[rows] = block.astype(np.float32) * scale + offset
    return X, y


def _macro_auc(y: np.ndarray, probabilities: np.ndarray) -> float:
    return float(roc_auc_score(y, probabilities, multi_class="ovr", average="macro"))


def naive_select(X_train, y_train, X_val, y_val, Cs, blas_threads: int | None = None) -> dict[str, Any]:
    """The strongest simple scikit-learn way: one ``LogisticRegression(lbfgs, warm_start=True)``
    walked up the C grid (each fit starts from the previous solution), C chosen on validation AUC;
    ``blas_threads`` None keeps scikit-learn's default BLAS threads."""
    import contextlib

    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(X_train)
    Xs_train, Xs_val = scaler.transform(X_train), scaler.transform(X_val)
    models, val_scores, n_iter = [], [], []
    warm = LogisticRegression(solver="lbfgs", tol=TOL, max_iter=MAX_ITER, warm_start=True)
    limit = threadpool_limits(blas_threads, user_api="blas") if blas_threads else contextlib.nullcontext()
    with limit:
        for C in sorted(Cs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # reported via n_iter instead
                warm.set_params(C=C).fit(Xs_train, y_train)
            models.append((warm.coef_.copy(), warm.intercept_.copy()))
            val_scores.append(_macro_auc(y_val, warm.predict_proba(Xs_val)))
            n_iter.append(int(warm.n_iter_[0]))
    best = int(np.argmax(val_scores))
    warm.coef_, warm.intercept_ = models[best]
    return {"scaler": scaler, "model": warm, "C": sorted(Cs)[best], "val_scores": val_scores, "n_iter": n_iter}


def run(quick: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Time both ways on the same data; returns name, sizes, naive_s, ours_s, ratio, auc_naive,
    auc_ours (test macro AUC at each side's val-selected C), C_naive, C_ours, iterations.
    ``verbose`` prints progress to stderr (the full-size naive side takes many minutes)."""

    def say(message: str) -> None:
        if verbose:
            print(message, file=sys.stderr, flush=True)

    size = QUICK if quick else FULL
    n_train, n_val, n_test = size["n_train"], size["n_val"], size["n_test"]
    X, y = make_features(n_train + n_val + n_test, size["n_features"], size["n_classes"])
    X_train, y_train = X[:n_train], y[:n_train]
    X_val, y_val = X[n_train:n_train + n_val], y[n_train:n_train + n_val]
    X_test, y_test = X[n_train + n_val:], y[n_train + n_val:]
    device = resolve_device("auto")
    say(f"data ready: {X.shape}; medprobe path on {device} ...")

    started = time.perf_counter()
    probe, table = select_probe(X_train, y_train, X_val, y_val, "multiclass", Cs=CS,
                                tol=TOL, max_iter=MAX_ITER, device=str(device))
    ours_s = time.perf_counter() - started
    auc_ours = _macro_auc(y_test, probe.predict_proba(X_test))
    say(f"medprobe: {ours_s:.1f} s; scikit-learn, one fit per C ...")

    # the strongest baseline: warm-started scikit-learn with its default BLAS threads or one,
    # whichever is faster here (on a busy machine the default threads can be many times slower)
    timings = {}
    for threads in (None, 1):
        started = time.perf_counter()
        naive = naive_select(X_train, y_train, X_val, y_val, CS, blas_threads=threads)
        timings["default threads" if threads is None else "1 BLAS thread"] = time.perf_counter() - started
    naive_threads = min(timings, key=timings.get)
    naive_s = timings[naive_threads]
    auc_naive = _macro_auc(y_test, naive["model"].predict_proba(naive["scaler"].transform(X_test)))

    return {
        "name": "probe_C_selection", **size, "n_Cs": len(CS), "quick": quick, "device": str(device),
        "naive_s": round(naive_s, 2), "naive_threads": naive_threads,
        "naive_s_all": {k: round(v, 2) for k, v in timings.items()},
        "ours_s": round(ours_s, 2), "ratio": round(naive_s / ours_s, 1),
        "auc_naive": auc_naive, "auc_ours": auc_ours, "auc_abs_diff": abs(auc_naive - auc_ours),
        "C_naive": naive["C"], "C_ours": float(probe.C),
        "val_auc_naive": [round(v, 4) for v in naive["val_scores"]],
        "val_auc_ours": [round(float(v), 4) for v in table["val_score"]],
        "n_iter_naive": naive["n_iter"], "n_iter_ours": [int(v) for v in table["n_iter"]],
    }


def main(argv: list[str] | None = None) -> int:
    """Command line of the probe benchmark (synthetic, or ``--real`` cached activations); exits 1 on disagreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds instead of many minutes)")
    parser.add_argument("--real", metavar="RUN_FILE", help="instead: real cached activations of this run file "
                        "(binary task; e.g. the demo's after `medprobe extract`)")
    parser.add_argument("--backbone", help="with --real: the backbone (display name); default the first")
    parser.add_argument("--repeats", type=int, default=3, help="with --real: alternating repeats (medians compared)")
    options = parser.parse_args(argv)
    if options.real:
        from medprobe.bench.probes_real import print_real, run_real

        real = run_real(options.real, options.backbone, repeats=options.repeats)
        print_real(real)
        agreed = real["max_rel_objective_gap"]["medprobe"] <= 1e-6 and real["max_auc_diff"]["medprobe"] <= AGREEMENT
        return 0 if agreed else 1
    result = run(quick=options.quick, verbose=True)
    print(f"{result['n_train']} train / {result['n_val']} val / {result['n_test']} test x {result['n_features']} "
          f"features, {result['n_classes']} classes, {result['n_Cs']} C values {CS}; medprobe on {result['device']}")
    print(f"scikit-learn warm-started up the C grid ({result['naive_threads']}, the faster): "
          f"{result['naive_s']:.1f} s  iterations {result['n_iter_naive']}  "
          f"val AUC {result['val_auc_naive']}")
    print(f"ours (medprobe C path):      {result['ours_s']:.1f} s  iterations {result['n_iter_ours']}  "
          f"val AUC {result['val_auc_ours']}")
    print(f"speed-up: {result['ratio']:.1f}x")
    print(f"test macro AUC at the val-selected C: naive {result['auc_naive']:.4f} (C={result['C_naive']:g}), "
          f"ours {result['auc_ours']:.4f} (C={result['C_ours']:g}), |diff| {result['auc_abs_diff']:.4f}")
    agree = result["auc_abs_diff"] <= AGREEMENT
    print("agreement:", "ok" if agree else f"FAILED (> {AGREEMENT})")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- multi-label solvers
def _head_objectives(probe, Xs: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Mean-scaled objective of every head: mean log-loss + ||w_k||^2 / (2 C n), float64."""
    z = Xs @ probe.coef_.T + probe.intercept_
    losses = (np.logaddexp(0.0, z) - Y * z).mean(axis=0)
    return losses + (probe.coef_ ** 2).sum(axis=1) / (2 * float(probe.C) * len(Xs))


def compare_multilabel_solvers(X: np.ndarray, Y: np.ndarray, Cs: list[float], tol: float | None = None,
                               rtol: float = 1e-6) -> dict[str, Any]:
    """One multi-label C grid three ways, timed, and checked at equal optima for every head and C.

    * ``path``: :class:`LinearProbe` with ``grid="path"`` (C after C, warm-started; every finding
      its own L-BFGS problem, all findings of a C sharing each pass over X);
    * ``batched``: ``grid="batched"`` (every finding and C at once: one pass over X per iteration);
    * ``sklearn``: scikit-learn's strongest simple baseline for this -- one
      ``LogisticRegression(lbfgs, warm_start=True)`` per finding, walked up the C grid, on
      ``StandardScaler`` output (float64), with the same stopping rule (``tol``, medprobe's default).

    Equal optima: each side's objective of every (finding, C) within ``rtol`` relative of the lowest
    of the three; the result lists the pairs that are not.
    """
    from medprobe.probes.logistic import DEFAULT_TOL, LinearProbe

    tol = DEFAULT_TOL if tol is None else tol
    grid = sorted(float(c) for c in Cs)
    device = resolve_device("auto")
    timings: dict[str, float] = {}
    objectives: dict[str, np.ndarray] = {}
    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X)
    unconverged: dict[str, int] = {}
    for mode in ("path", "batched"):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProbeConvergenceWarning)
            probes = LinearProbe("multilabel", tol=tol, device=str(device), grid=mode).fit_path(X, Y, grid)
        timings[mode] = time.perf_counter() - started
        objectives[mode] = np.stack([_head_objectives(p, Xs, Y) for p in probes])
        unconverged[mode] = sum(len(p.unconverged_heads_) for p in probes)
    started = time.perf_counter()
    rows = []
    for k in range(Y.shape[1]):
        model = LogisticRegression(solver="lbfgs", tol=tol, max_iter=10_000, warm_start=True)
        column = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for C in grid:
                model.set_params(C=C).fit(Xs, Y[:, k])
                z = Xs @ model.coef_[0] + model.intercept_[0]
                column.append(float((np.logaddexp(0.0, z) - Y[:, k] * z).mean()
                                    + model.coef_[0] @ model.coef_[0] / (2 * C * len(Xs))))
        rows.append(column)
    timings["sklearn"] = time.perf_counter() - started
    objectives["sklearn"] = np.array(rows).T  # (C, findings)
    best = np.minimum.reduce(list(objectives.values()))
    gaps = {name: (value - best) / best for name, value in objectives.items()}
    return {
        "n": int(X.shape[0]), "width": int(X.shape[1]), "findings": int(Y.shape[1]), "Cs": grid, "tol": tol,
        "device": str(device), "seconds": {k: round(v, 1) for k, v in timings.items()},
        "path_vs_sklearn": round(timings["sklearn"] / timings["path"], 1),
        "batched_vs_sklearn": round(timings["sklearn"] / timings["batched"], 1),
        "batched_vs_path": round(timings["path"] / timings["batched"], 2),
        "max_rel_gap": {k: float(v.max()) for k, v in gaps.items()},
        "off_optimum": {k: int((v > rtol).sum()) for k, v in gaps.items()},
        "unconverged_heads": unconverged,
    }
