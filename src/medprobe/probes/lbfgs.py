"""Preconditioned L-BFGS for a batch of L2 logistic problems, with a float64 finish.

Every problem behaves exactly as if it were solved alone (own step, own curvature pairs, own
scaling ``gamma``); only the evaluations of the objective are shared
(:class:`~medprobe.probes.objective.BatchObjective`). Each objective is strictly convex (L2
term), so accepted steps satisfy ``y.s > 0`` and a sufficient-decrease line search is enough;
the line search and the stopping rule are the ones Newton's method uses too
(:mod:`medprobe.probes.descent`).

Problems may come from several layers (:class:`~medprobe.probes.products.SharedPassLayers`):
everything but the products -- the iteration loop, the line search, the stopping tests and the
O(n P) element-wise work -- is then shared by the problems of all layers, so a probe grid pays
the solver's per-iteration overhead once per pass instead of once per layer. That is meant for a
GPU, where the arithmetic of one product of a 20,000 x 8,192 layer is well under a millisecond
and the overhead dominates (not measured: no GPU was available; ``benchmarks/gpu_check.sh``
measures it). On the CPU it pays for small layers only: larger ones fall out of the cache
between their turns (measured in ``benchmarks/bench_layers_per_pass.py``). Each problem still
takes the steps it would take alone, up to the order of some sums.
"""

from __future__ import annotations

import numpy as np

from medprobe.probes.descent import (CONVERGED, PRECISION, BatchSolution, backtracking_search, inner,
                                     start_problems, stopping_rule, within_iteration_limit)
from medprobe.probes.objective import BatchObjective
from medprobe.probes.preconditioner import Preconditioner


class _CurvatureHistory:
    """The L-BFGS memory of P problems: one ring of ``size`` slots shared by all of them (they
    step in lockstep); an empty or discarded slot of a problem has ``rho = 0`` and then
    contributes nothing to the two-loop recursion."""

    def __init__(self, size: int, shape: tuple[int, ...]) -> None:
        self.size = size
        self.steps = np.zeros((size, *shape))
        self.changes = np.zeros_like(self.steps)
        self.rho = np.zeros((size, shape[0]))
        self.gamma = np.ones(shape[0])
        self.ring = 0  # slot of the next pair

    def direction(self, a: np.ndarray, g: np.ndarray, preconditioner: Preconditioner,
                  factors: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Search directions of problems ``a`` (gradients ``g``), their slopes, and whether each
        problem had curvature information (else the direction is the preconditioned gradient)."""
        rho = self.rho
        # two-loop recursion with the preconditioned, scaled initial inverse Hessian gamma * P,
        # newest pair first. Slots no problem of ``a`` holds a pair in are left out: there
        # ``rho = 0`` and the slot's terms are exact zeros, so only the time changes (a path restarts
        # each C with an empty memory). The pairs of ``a`` are gathered once, so that the loops,
        # which dominate small problems, work on views.
        filled = (rho[:, a] != 0).any(axis=1)
        order = [slot for slot in ((self.ring - 1 - j) % self.size for j in range(self.size)) if filled[slot]]
        pairs = np.ix_(order, a)
        rho_a, steps, changes = rho[pairs], self.steps[pairs], self.changes[pairs]
        direction = -g
        alphas = []
        for j in range(len(order)):
            alpha = rho_a[j] * inner(steps[j], direction)
            direction -= alpha[:, None, None] * changes[j]
            alphas.append(alpha)
        direction = self.gamma[a][:, None, None] * preconditioner.apply(direction, factors)
        for j in reversed(range(len(order))):
            beta = rho_a[j] * inner(changes[j], direction)
            direction += (alphas[j] - beta)[:, None, None] * steps[j]
        slope = inner(g, direction)
        uphill = slope >= 0  # not a descent direction (rounding): restart from the preconditioned gradient
        if uphill.any():
            rho[:, a[uphill]] = 0.0
            self.gamma[a[uphill]] = 1.0
            direction[uphill] = -preconditioner.apply(g[uphill], Preconditioner.select(factors, uphill))
            slope[uphill] = inner(g[uphill], direction[uphill])
        return direction, slope, (rho[:, a] != 0).any(axis=0)

    def push(self, moved: np.ndarray, step: np.ndarray, change: np.ndarray, preconditioner: Preconditioner,
             factors: tuple) -> None:
        """Record the step and gradient change of the problems that ``moved`` (``factors``: theirs)
        and advance the ring; a pair without positive curvature is left out (``rho = 0``)."""
        curvature_pair = inner(change, step)
        valid = curvature_pair > np.finfo(np.float64).eps * inner(change, change)
        self.steps[self.ring, moved] = step
        self.changes[self.ring, moved] = change
        self.rho[self.ring, moved] = np.where(valid, 1.0 / np.where(valid, curvature_pair, 1.0), 0.0)
        if valid.any():
            scaled = preconditioner.apply(change[valid], Preconditioner.select(factors, valid))
            self.gamma[moved[valid]] = curvature_pair[valid] / inner(change[valid], scaled)
        self.ring = (self.ring + 1) % self.size


def _quadratic_shrink(step: np.ndarray, slope: np.ndarray, trial_loss: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """The next step length of a rejected step: the minimum of the quadratic through f(0), f'(0)
    and f(t), kept within [0.1 t, 0.5 t]."""
    curvature = trial_loss - loss - step * slope
    model = np.where(curvature > 0, -slope * step * step / (2 * np.where(curvature > 0, curvature, 1.0)), 0.5 * step)
    return np.minimum(0.5 * step, np.maximum(0.1 * step, model))


class _LbfgsRun:
    """The state of one :func:`minimise` call: parameters, losses, gradients, counters and stop
    reasons of every problem, and their curvature history."""

    def __init__(self, objective: BatchObjective, preconditioner: Preconditioner, theta0: np.ndarray,
                 l2: np.ndarray, head: np.ndarray, curvature: np.ndarray, layer: np.ndarray, history_size: int,
                 tol: float, tol_change: float) -> None:
        self.objective, self.preconditioner = objective, preconditioner
        self.l2, self.head, self.layer = l2, head, layer
        self.tol, self.tol_change = tol, tol_change
        n_problems = theta0.shape[0]
        self.factors = preconditioner.factors(l2, curvature, layer)
        self.theta = theta0.copy()
        self.loss, self.grad = objective(self.theta, l2, head, layer)
        self.n_evals = np.ones(n_problems, dtype=np.int64)
        self.n_iter = np.zeros(n_problems, dtype=np.int64)
        self.active, self.stop = start_problems(self.grad, tol)
        self.history = _CurvatureHistory(history_size, self.theta.shape)

    def iterate(self, a: np.ndarray) -> np.ndarray:
        """One L-BFGS iteration of problems ``a``; returns those that go on."""
        factors = Preconditioner.select(self.factors, a)
        self.n_iter[a] += 1
        g = self.grad[a]
        direction, slope, has_history = self.history.direction(a, g, self.preconditioner, factors)
        # without curvature information the scale of the direction is unknown: start small
        t = np.where(has_history, 1.0, np.minimum(1.0, 1.0 / np.abs(g).sum(axis=(1, 2))))
        new_loss = np.empty(len(a))
        new_grad = np.empty_like(g)

        def evaluate(candidate: np.ndarray, pending: np.ndarray) -> tuple:
            problems = a[pending]
            self.n_evals[problems] += 1
            return self.objective(candidate, self.l2[problems], self.head[problems], self.layer[problems])

        def keep(positions: np.ndarray, accepted: np.ndarray, candidate: np.ndarray, trial: tuple) -> None:
            new_loss[positions] = trial[0][accepted]
            new_grad[positions] = trial[1][accepted]

        failed = np.zeros(len(a), dtype=bool)
        failed[backtracking_search(evaluate, self.theta[a], self.loss[a], direction, slope, t, self.tol_change,
                                   _quadratic_shrink, keep)] = True
        self.stop[a[failed]] = PRECISION
        ok = ~failed
        moved = a[ok]
        step = t[ok][:, None, None] * direction[ok]
        self.history.push(moved, step, new_grad[ok] - self.grad[moved], self.preconditioner,
                          Preconditioner.select(factors, np.flatnonzero(ok)))
        decrease = self.loss[moved] - new_loss[ok]
        previous_grad_max = np.abs(self.grad[moved]).max(axis=(1, 2))
        self.theta[moved] += step
        self.loss[moved], self.grad[moved] = new_loss[ok], new_grad[ok]
        grad_max = np.abs(self.grad[moved]).max(axis=(1, 2))
        done, stalled = stopping_rule(grad_max, previous_grad_max, decrease, self.loss[moved], self.tol,
                                      self.tol_change, informed=has_history[ok])
        self.stop[moved[done]] = CONVERGED
        self.stop[moved[stalled]] = PRECISION
        return moved[~done & ~stalled]


def minimise(objective: BatchObjective, preconditioner: Preconditioner, theta0: np.ndarray, l2: np.ndarray,
             head: np.ndarray, curvature: np.ndarray, max_iter: int | np.ndarray, tol: float, history_size: int,
             tol_change: float, layer: np.ndarray | None = None) -> BatchSolution:
    """Preconditioned L-BFGS with a backtracking (Armijo) line search, for P problems at once.

    Each problem stops by the rule of :mod:`medprobe.probes.descent` (``tol`` on its max
    |gradient|, ``max_iter`` iterations, or out of precision at ``tol_change``). ``max_iter`` may
    differ per problem (an array); ``layer`` is each problem's layer in a
    :class:`~medprobe.probes.products.SharedPassLayers` (``None``: one layer).
    """
    n_problems = theta0.shape[0]
    layer = np.zeros(n_problems, dtype=np.int64) if layer is None else np.asarray(layer, dtype=np.int64)
    iteration_limit = np.broadcast_to(np.asarray(max_iter, dtype=np.int64), (n_problems,))
    run = _LbfgsRun(objective, preconditioner, theta0, l2, head, curvature, layer, history_size, tol, tol_change)
    active = run.active
    while active.size:
        active = within_iteration_limit(active, run.n_iter, iteration_limit)  # the others stay at max_iter
        if not active.size:
            break
        active = run.iterate(active)
    row_grad_max = np.abs(run.grad).max(axis=2)
    return BatchSolution(run.theta, run.loss, row_grad_max, run.n_iter, run.n_evals, list(run.stop))


def solve(objective: BatchObjective, preconditioner: Preconditioner, theta0: np.ndarray, l2: np.ndarray,
          head: np.ndarray, curvature: np.ndarray, max_iter: int, tol: float, history_size: int,
          tol_change: float, layer: np.ndarray | None = None) -> BatchSolution:
    """:func:`minimise` in the features' dtype, then, for float32 features, a float64 finish.

    Why: with float32 products the objective itself is only known to about 1e-6 relative (the
    rounding of the logits), so at weak regularisation the line search runs out of precision
    before the tightest ``tol`` is met. The problems that stopped there continue from where they
    are with float64 products over row blocks of the same standardised features -- usually a
    handful of iterations -- and reach ``tol`` (or ``max_iter`` iterations in total, each problem
    counting its own) like a float64 fit.
    """
    layer = np.zeros(theta0.shape[0], dtype=np.int64) if layer is None else np.asarray(layer, dtype=np.int64)
    solution = minimise(objective, preconditioner, theta0, l2, head, curvature, max_iter, tol, history_size,
                        tol_change, layer)
    stalled = np.array([reason == PRECISION for reason in solution.stop]) & (solution.grad_max > tol)
    if objective.features.is_float64 or not stalled.any():
        return solution
    exact = objective.exactly()
    index = np.flatnonzero(stalled)
    budget = np.maximum(1, max_iter - solution.n_iter[index])
    finish = minimise(exact, preconditioner, solution.theta[index], l2[index], head[index], curvature[index],
                      budget, tol, history_size, 4 * float(np.finfo(np.float64).eps), layer[index])
    solution.theta[index] = finish.theta
    solution.loss[index] = finish.loss
    solution.row_grad_max[index] = finish.row_grad_max
    solution.n_iter[index] += finish.n_iter
    solution.n_evals[index] += finish.n_evals
    for position, reason in zip(index, finish.stop):
        solution.stop[position] = reason
    return solution


__all__ = ["minimise", "solve"]
