"""The fitting path of the logistic probes: a grid of C on one or more layers, in one function.

scikit-learn keeps ``_logistic_regression_path`` beside a thin ``LogisticRegression``; here
:func:`fit_logistic_path` is that path and :class:`~medprobe.probes.logistic.LinearProbe` the
thin estimator on top (the probe sweep reaches it through the estimator's ``fit_layers_path``).
For every layer the path standardises the features with their own statistics
(:mod:`medprobe.probes.standardise`), chooses the solver -- Newton's method for small sigmoid
problems on the CPU (:mod:`medprobe.probes.newton`), else the batched L-BFGS
(:mod:`medprobe.probes.lbfgs`) -- and fits every head and C: ``grid="path"`` one C after the
other from the smallest, each warm-started from the previous solution, ``grid="batched"`` every C
at once. Layers of equal width share one L-BFGS pass; Newton's systems are per feature matrix,
so there every layer is its own pass.

Inputs are taken as checked (:mod:`medprobe.probes.inputs`), as scikit-learn's path does with
``check_input=False``; the estimator checks them.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
from threadpoolctl import ThreadpoolController

from medprobe.errors import ConfigError, ConvergenceWarning
from medprobe.probes.descent import MAX_ITER, BatchSolution
from medprobe.probes.inputs import resolve_device, resolve_dtype
from medprobe.probes.lbfgs import solve
from medprobe.probes.newton import MAX_SYSTEM, NewtonSolver, newton_applies, newton_possible
from medprobe.probes.objective import BatchObjective
from medprobe.probes.preconditioner import Preconditioner
from medprobe.probes.products import FeatureProducts, SharedPassLayers
from medprobe.probes.standardise import fit_standardiser

GridMode = Literal["path", "batched"]
GRID_MODES: tuple[str, ...] = ("path", "batched")
SolverName = Literal["auto", "newton", "lbfgs"]
SOLVERS: tuple[str, ...] = ("auto", "newton", "lbfgs")
#: features with fewer elements than this (4 MiB in float32) are fitted with a single-threaded BLAS
_MULTITHREADED_ELEMENTS = 1 << 20
#: "no more progress": a relative decrease of the (float64-accumulated) objective below this is
#: rounding noise of the dtype the products run in (float64: scikit-learn's ``64 * eps``)
_TOL_CHANGE = {"float32": 1e-11, "float64": 64 * float(np.finfo(np.float64).eps)}


@dataclass(frozen=True)
class PathSettings:
    """How :func:`fit_logistic_path` fits (the estimator's parameters of the same names)."""

    task_type: str
    max_iter: int
    tol: float
    dtype: str = "float32"
    device: str = "auto"
    history_size: int = 20
    grid: str = "path"
    solver: str = "auto"


@dataclass
class PathFit:
    """One layer's probe at one C: weights on the standardised features, the standardiser, and how
    every head's fit went (one entry per head: the sigmoid, each finding, or each softmax class)."""

    coef: np.ndarray           # (1, D) binary, else (K, D)
    intercept: np.ndarray      # (1,) or (K,)
    mean: np.ndarray           # (D,)
    scale: np.ndarray          # (D,)
    head_grad_max: np.ndarray  # max |gradient| per head
    head_converged: np.ndarray
    head_n_iter: np.ndarray
    n_evals: int
    loss: float                # the summed objective of the heads
    unconverged_heads: list[str]
    seconds: float             # ``"batched"``: the batch's time shared equally by its Cs


def fit_logistic_path(X_layers: Sequence[np.ndarray], labels: np.ndarray, n_classes: int, Cs: Sequence[float],
                      settings: PathSettings, head_names: Sequence[str]) -> list[list[PathFit]]:
    """``[layer][c]``: a probe per layer of ``X_layers`` (same samples) and per C, in the order of ``Cs``.

    ``labels`` are checked class indices (multilabel: a 0/1 matrix) with ``n_classes`` classes or
    findings; ``head_names`` name the heads in convergence warnings. Every result answers like a
    fit of that layer and C from scratch, to within ``tol``.
    """
    n = X_layers[0].shape[0]
    device, dtype = resolve_device(settings.device), resolve_dtype(settings.dtype)
    targets, softmax = _targets(settings.task_type, labels, n_classes)
    # one problem per head and C: a softmax is one problem of K outputs, sigmoids one each
    heads = 1 if softmax else targets.shape[1]
    by_width: dict[int, list[int]] = {}
    for number, X in enumerate(X_layers):
        by_width.setdefault(X.shape[1], []).append(number)
    batch = heads * (len(Cs) if settings.grid == "batched" else 1)  # problems per layer and solve
    fits: list[list[Any]] = [[None] * len(Cs) for _ in X_layers]
    for width, members in by_width.items():
        newton = _use_newton(settings, device, softmax, n, width, batch)
        # Newton's systems are per feature matrix: one layer per pass
        for numbers in ([number] for number in members) if newton else [members]:
            fitted = _fit_pass([X_layers[number] for number in numbers], targets, softmax, heads, Cs, settings,
                               device, dtype, n_classes, list(head_names), newton)
            for number, row in zip(numbers, fitted):
                fits[number] = row
    return fits


def _fit_pass(X_layers: list[np.ndarray], targets: np.ndarray, softmax: bool, heads: int, Cs: Sequence[float],
              settings: PathSettings, device: str, dtype: np.dtype, k: int, names: list[str],
              newton: bool) -> list[list[PathFit]]:
    """One solver pass: every head x C of layers of equal width; ``[layer][c]`` in the order of ``Cs``."""
    n, d = X_layers[0].shape
    # On a GPU the solver's host-side NumPy work is small (vectors of K * D numbers) and
    # alternates with torch's own thread pool; a multi-threaded NumPy BLAS would fight that
    # pool for the cores (measured: ~3x slower fits on a busy 2-core machine), so it runs
    # single-threaded there. On the CPU NumPy's BLAS does the products: with all its threads
    # for large features, with one for small ones, where threads only add synchronisation
    # (a 384 x 60 QR took 0.2 s instead of 1 ms with two BLAS threads on a busy 2-core machine).
    single_threaded = device != "cpu" or n * d < _MULTITHREADED_ELEMENTS
    with _blas_controller().limit(limits=1, user_api="blas") if single_threaded else contextlib.nullcontext():
        standardisers, parts = [], []
        for X in X_layers:
            mean, scale, standardised = fit_standardiser(X, dtype)
            standardisers.append((mean, scale))
            if device == "cpu":
                parts.append(FeatureProducts(standardised))
            else:
                import torch

                parts.append(FeatureProducts(torch.from_numpy(standardised).to(device)))
                del standardised  # the GPU holds the features; the host copy can go
        fit, outputs = _solver(parts, targets, softmax, settings, newton)
        return _fit_grid(fit, outputs, targets, softmax, heads, Cs, settings, standardisers, k, names, n)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """The process's BLAS libraries, found once: ``threadpool_limits`` looks them up again on every
    call (~4 ms, a tenth of a small warm-started fit). NumPy's BLAS, the one the solvers use, is
    loaded with NumPy, so it is always among them."""
    return ThreadpoolController()


def _solver(parts: list[FeatureProducts], targets: np.ndarray, softmax: bool, settings: PathSettings,
            newton: bool) -> tuple[Callable[..., BatchSolution], int]:
    """``fit(theta0, l2, head, curvature, layer) -> BatchSolution`` for the pass and the outputs per problem."""
    if newton:
        solver = NewtonSolver(parts[0].X, targets)  # one layer (see fit_logistic_path)

        def fit(theta0, l2, head, curvature, layer):
            return solver.minimise(theta0, l2, head, settings.max_iter, settings.tol)

        return fit, 1
    layers = SharedPassLayers(parts)
    objective = BatchObjective(layers, targets, softmax)
    preconditioner = Preconditioner(layers)

    def fit(theta0, l2, head, curvature, layer):
        return solve(objective, preconditioner, theta0, l2, head, curvature, settings.max_iter, settings.tol,
                     settings.history_size, _TOL_CHANGE[settings.dtype], layer)

    return fit, objective.outputs


def _fit_grid(fit: Callable[..., BatchSolution], outputs: int, targets: np.ndarray, softmax: bool, heads: int,
              Cs: Sequence[float], settings: PathSettings, standardisers: list[tuple[np.ndarray, np.ndarray]],
              k: int, names: list[str], n: int) -> list[list[PathFit]]:
    """Every C of the pass, warm-started from the smallest upwards (``"path"``) or all at once
    (``"batched"``); the problems of one C are layer-major, then head."""
    n_layers = len(standardisers)
    n_per_c = heads * n_layers
    start = np.zeros((n_per_c, outputs, standardisers[0][0].shape[0] + 1))
    start[:, :, -1] = np.tile(_initial_intercept(targets, softmax).reshape(heads, outputs), (n_layers, 1))
    rate = targets.mean(axis=0)
    curvature = np.tile(np.full(heads, float(np.mean(rate * (1 - rate)))) if softmax else rate * (1 - rate), n_layers)
    head, layer = np.tile(np.arange(heads), n_layers), np.repeat(np.arange(n_layers), heads)
    order = sorted(range(len(Cs)), key=lambda c: float(Cs[c]))
    values = [float(Cs[c]) for c in order]
    fits: list[list[Any]] = [[None] * len(Cs) for _ in range(n_layers)]

    def keep(solution: BatchSolution, c: int, first: int, number: int, seconds: float) -> None:
        fits[number][c] = _path_fit(solution, slice(first, first + heads), softmax, *standardisers[number], k, names,
                                    seconds, float(Cs[c]), settings)

    if settings.grid == "batched":
        started = time.perf_counter()
        solution = fit(np.tile(start, (len(values), 1, 1)), np.repeat([1.0 / (C * n) for C in values], n_per_c),
                       np.tile(head, len(values)), np.tile(curvature, len(values)), np.tile(layer, len(values)))
        seconds = (time.perf_counter() - started) / (len(values) * n_layers)
        for position, c in enumerate(order):
            for number in range(n_layers):
                keep(solution, c, position * n_per_c + number * heads, number, seconds)
    else:
        theta = start
        for c, C in zip(order, values):
            started = time.perf_counter()
            solution = fit(theta, np.full(n_per_c, 1.0 / (C * n)), head, curvature, layer)
            theta = solution.theta
            seconds = (time.perf_counter() - started) / n_layers
            for number in range(n_layers):
                keep(solution, c, number * heads, number, seconds)
    return fits


def _path_fit(solution: BatchSolution, problems: slice, softmax: bool, mean: np.ndarray, scale: np.ndarray, k: int,
              names: list[str], seconds: float, C: float, settings: PathSettings) -> PathFit:
    """Take one layer and C's problems out of the batch solution; warn, by name, about heads above tol."""
    theta = solution.theta[problems]
    # rows of (K, D + 1): the softmax's K outputs, or the K sigmoid heads' single output each
    rows = theta[0] if softmax else theta[:, 0]
    head_grad = solution.row_grad_max[problems]
    head_grad_max = (head_grad[0] if softmax else head_grad[:, 0]).copy()
    head_converged = head_grad_max <= settings.tol
    per_problem = np.arange(problems.start, problems.stop)
    iterations, evaluations = solution.n_iter[per_problem], solution.n_evals[per_problem]
    stops = [solution.stop[i] for i in per_problem]
    if softmax:
        iterations, evaluations, stops = np.repeat(iterations, k), np.repeat(evaluations, k), stops * k
    fitted = PathFit(coef=rows[:, :-1].copy(), intercept=rows[:, -1].copy(), mean=mean.copy(), scale=scale.copy(),
                     head_grad_max=head_grad_max, head_converged=head_converged, head_n_iter=iterations.copy(),
                     n_evals=int(evaluations.max()), loss=float(solution.loss[problems].sum()),
                     unconverged_heads=[names[j] for j in np.flatnonzero(~head_converged)], seconds=seconds)
    if not head_converged.all():
        failing = np.flatnonzero(~head_converged)
        detail = "; ".join(
            f"{names[j]!r}: max |gradient| {head_grad_max[j]:.2e}, "
            + (f"reached max_iter={settings.max_iter}" if stops[j] == MAX_ITER
               else f"stopped at the precision of {settings.dtype}")
            for j in failing[:10]) + ("; ..." if len(failing) > 10 else "")
        warnings.warn(
            f"LinearProbe(task_type={settings.task_type!r}, C={C:g}) did not converge for {len(failing)} of "
            f"{len(names)} head(s) (tol {settings.tol:g}): {detail}. Raise max_iter, use dtype='float64' or a larger "
            f"tol", ConvergenceWarning, stacklevel=8)
    return fitted


def _use_newton(settings: PathSettings, device: str, softmax: bool, n: int, d: int, n_problems: int) -> bool:
    """Newton for small sigmoid problems on the CPU (``solver="auto"``), or as asked."""
    if settings.solver == "lbfgs":
        return False
    possible = device == "cpu" and not softmax and newton_possible(n, d, n_problems)
    if settings.solver == "newton" and not possible:
        raise ConfigError(f"solver='newton' needs sigmoid heads (binary or multilabel), the CPU and a small "
                          f"problem (min(n, D + 1) <= {MAX_SYSTEM}); got task {settings.task_type!r}, device "
                          f"{device!r}, n={n}, D={d}, {n_problems} problems")
    return possible and (settings.solver == "newton" or newton_applies(n, d, n_problems))


def _targets(task_type: str, labels: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
    """(n, outputs) 0/1 float64 targets and whether the outputs share a softmax."""
    if task_type == "multiclass":
        return np.eye(k)[labels], True
    return (labels[:, None] if task_type == "binary" else labels).astype(np.float64), False


def _initial_intercept(targets: np.ndarray, softmax: bool) -> np.ndarray:
    """Intercepts at the training log-odds (log-priors for softmax): the optimum when W = 0."""
    rate = targets.mean(axis=0)
    if softmax:
        logits = np.log(rate)
        return logits - logits.mean()
    return np.log(rate / (1 - rate))


__all__ = ["GRID_MODES", "SOLVERS", "GridMode", "PathFit", "PathSettings", "SolverName", "fit_logistic_path"]
