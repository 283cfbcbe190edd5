"""Newton's method for small sigmoid probes: a handful of iterations instead of hundreds.

Why: on small problems (a 100-image run: 60 samples x 384 features) L-BFGS needs ~30 iterations
per C to reach the tight ``tol`` that matches scikit-learn's optimum, and each iteration is
Python overhead, not arithmetic -- a 13-layer sweep spent seconds there. Newton's method on the
same objective needs ~5-10, and when ``min(n, D + 1)`` is small its linear systems cost nothing.

Same problems, same line search and stopping rule as :mod:`medprobe.probes.lbfgs`
(:mod:`medprobe.probes.descent`: each sigmoid head and C on its own; stop when its max |gradient|
<= ``tol``), so the two solvers reach the same optimum to within ``tol``. Per problem ``p`` (weights ``w``,
intercept ``b``, ``l2 = 1 / (C n)``)::

    f = mean_i logloss_i + l2 ||w||^2 / 2,   H = [[X^T S X / n + l2 I, X^T s / n], [s^T X / n, sum(s) / n]]

with ``s = p_i (1 - p_i)``. The Newton system is solved in whichever space is smaller:

* ``n >= D + 1`` (primal): ``H`` itself, ``(D + 1)^2`` per problem, built by a symmetric product;
* ``n < D + 1`` (dual): the weight block by Woodbury through ``n x n`` systems
  ``n l2 I + S^1/2 X X^T S^1/2`` (``X X^T`` computed once per fit), the unpenalised intercept by
  its Schur complement -- never a ``D x D`` matrix.

Both systems are symmetric positive definite and solved by Cholesky, half the work of LU: on the
demo's 500 x 784 pixel features that decided whether Newton beat warm-started scikit-learn.

Steps are damped by a backtracking (Armijo) search from the full Newton step, so every accepted
step decreases the objective and the method converges from any start (the objective is strictly
convex in ``w``).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk

from medprobe.probes.descent import (CONVERGED, PRECISION, BatchSolution, backtracking_search, inner,
                                     start_problems, stopping_rule, within_iteration_limit)

#: the largest linear system (rows of min(n, D + 1)), the most work per iteration (problems x
#: (size^3 + n size^2) multiply-adds) and the largest features (n x D, copied in float64) for which
#: Newton is considered at all
MAX_SYSTEM = 1024
MAX_WORK = 4e9
MAX_ELEMENTS = 1 << 24
#: the cost model that picks Newton over L-BFGS (measured on the 2-core development machine, one
#: BLAS thread): iterations per C of a warm-started path at tol 1e-7 on real activations (L-BFGS's
#: count includes its float64 finish), Python overhead per iteration, FLOP rate
_NEWTON_ITERATIONS, _LBFGS_ITERATIONS = 5, 60
_OVERHEAD_S = 3e-4
_FLOPS = 5e10


def _work(n: int, d: int, n_problems: int) -> tuple[int, float]:
    """The size of Newton's systems, min(n, D + 1), and its multiply-adds per iteration: a Cholesky
    factorisation (size^3 / 3) and a symmetric product or scaling (about n size^2 / 2) per problem."""
    size = min(n, d + 1)
    return size, n_problems * (float(size) ** 3 / 3 + float(n) * size * size / 2)


def newton_possible(n: int, d: int, n_problems: int) -> bool:
    """Whether a batch of sigmoid problems on (n, d) features is within Newton's size limits."""
    size, work = _work(n, d, n_problems)
    return size <= MAX_SYSTEM and work <= MAX_WORK and n * d <= MAX_ELEMENTS


def newton_applies(n: int, d: int, n_problems: int) -> bool:
    """Whether Newton is possible and expected to beat L-BFGS (``solver="auto"``): its iterations
    cost ``size^3 / 3 + n size^2 / 2`` per problem against L-BFGS's ``4 n d``, but it needs ~5 of them per C
    instead of ~60. Measured on the demo's real ViT-S features (12 layers x 6 Cs): 60 x 384 (dual)
    0.42 s vs 1.70 s, 500 x 384 (primal) 1.67 s vs 2.0-2.2 s; with 54 findings at 500 x 384 the
    54 Hessians make L-BFGS the faster one."""
    if not newton_possible(n, d, n_problems):
        return False
    newton = _NEWTON_ITERATIONS * (_work(n, d, n_problems)[1] / _FLOPS + _OVERHEAD_S)
    lbfgs = _LBFGS_ITERATIONS * (n_problems * 4.0 * n * d / _FLOPS + _OVERHEAD_S)
    return newton < lbfgs


class NewtonSolver:
    """Sigmoid problems on float64 features ``X`` (n, D) with 0/1 ``targets`` (n, T)."""

    def __init__(self, X: np.ndarray, targets: np.ndarray) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.targets = np.asarray(targets, dtype=np.float64)
        self.n, self.d = self.X.shape
        self.dual = self.n < self.d + 1
        #: what the Newton systems are built from, once per fit: X X^T (dual) or [X, 1]^T (primal), laid
        #: out so that its rows, scaled by sqrt(s), are the columns a symmetric product (BLAS syrk) reads
        self.gram = self.X @ self.X.T if self.dual else None
        self.augmented_t = None if self.dual else np.vstack([self.X.T, np.ones((1, self.n))])

    def _evaluate(self, theta: np.ndarray, l2: np.ndarray, head: np.ndarray):
        """Losses (P,), gradients (P, 1, D + 1) and the curvature weights ``s`` (n, P)."""
        w, b = theta[:, 0, :self.d], theta[:, 0, self.d]
        logits = self.X @ w.T + b
        targets = self.targets[:, head]
        losses = np.logaddexp(0.0, logits) - logits * targets
        probability = np.exp(-np.logaddexp(0.0, -logits))
        residual = probability - targets
        loss = losses.mean(axis=0) + 0.5 * l2 * np.einsum("pd,pd->p", w, w)
        grad = np.empty_like(theta)
        grad[:, 0, :self.d] = residual.T @ self.X / self.n + l2[:, None] * w
        grad[:, 0, self.d] = residual.mean(axis=0)
        return loss, grad, probability * (1.0 - probability)

    def _direction(self, grad: np.ndarray, s: np.ndarray, l2: np.ndarray) -> np.ndarray:
        """``-H^-1 grad`` per problem (P, 1, D + 1)."""
        n, d = self.n, self.d
        g_w, g_b = grad[:, 0, :d], grad[:, 0, d]
        root = np.sqrt(s.T)  # (P, n)
        if not self.dual:
            step = np.empty_like(grad)
            for p in range(len(l2)):  # the upper triangle of [X, 1]^T S [X, 1] / n by a symmetric product
                hessian = dsyrk(1.0 / n, (self.augmented_t * root[p]).T, trans=1)
                hessian[np.arange(d), np.arange(d)] += l2[p]
                step[p, 0] = -_positive_definite_solve(hessian, grad[p, 0])
            return step
        system = self.gram[None] * (root[:, :, None] * root[:, None, :])
        system[:, np.arange(n), np.arange(n)] += n * l2[:, None]
        coupling = s.T @ self.X / n  # X^T s / n per problem: (P, D)
        vectors = np.stack([g_w, coupling], axis=2)  # (P, D, 2)
        inner = root[:, :, None] * (self.X[None] @ vectors)
        for p in range(len(l2)):  # the transpose of a symmetric matrix is itself, laid out as LAPACK
            inner[p] = _positive_definite_solve(system[p].T, inner[p])  # wants it: factored in place
        applied = (vectors - self.X.T[None] @ (root[:, :, None] * inner)) / l2[:, None, None]  # A^-1 [g_w, c]
        a_grad, a_coupling = applied[:, :, 0], applied[:, :, 1]
        schur = s.mean(axis=0) - np.einsum("pd,pd->p", coupling, a_coupling)
        step_b = (g_b - np.einsum("pd,pd->p", coupling, a_grad)) / np.maximum(schur, np.finfo(float).tiny)
        direction = np.empty_like(grad)
        direction[:, 0, :d] = -(a_grad - step_b[:, None] * a_coupling)
        direction[:, 0, d] = -step_b
        return direction

    def minimise(self, theta0: np.ndarray, l2: np.ndarray, head: np.ndarray, max_iter: int, tol: float,
                 tol_change: float = 64 * float(np.finfo(np.float64).eps)) -> BatchSolution:
        """Damped Newton for P problems at once; each stops on its own (see the module docstring)."""
        theta = np.array(theta0, dtype=np.float64)
        l2 = np.asarray(l2, dtype=np.float64)
        head = np.asarray(head)
        n_problems = theta.shape[0]
        state = list(self._evaluate(theta, l2, head))  # loss, grad, s
        counts = np.zeros(n_problems, dtype=np.int64), np.ones(n_problems, dtype=np.int64)  # iterations, evaluations
        active, stop = start_problems(state[1], tol)
        limit = np.broadcast_to(np.asarray(max_iter, dtype=np.int64), (n_problems,))
        while active.size:
            active = within_iteration_limit(active, counts[0], limit)  # the others stay at max_iter
            if not active.size:
                break
            active = self._iterate(active, theta, state, counts, stop, l2, head, tol, tol_change)
        loss, grad, _ = state
        return BatchSolution(theta, loss, np.abs(grad).max(axis=2), counts[0], counts[1], list(stop))

    def _iterate(self, a: np.ndarray, theta: np.ndarray, state: list, counts: tuple, stop: np.ndarray,
                 l2: np.ndarray, head: np.ndarray, tol: float, tol_change: float) -> np.ndarray:
        """One damped Newton step of problems ``a`` (``theta``, ``state`` = [loss, grad, s],
        ``counts`` and ``stop`` updated in place); returns those that go on."""
        loss, grad, s = state
        n_iter, n_evals = counts
        n_iter[a] += 1
        try:
            direction = self._direction(grad[a], s[:, a], l2[a])
        except np.linalg.LinAlgError:  # numerically singular: fall back to steepest descent
            direction = -grad[a]
        slope = inner(grad[a], direction)
        uphill = ~(slope < 0)
        if uphill.any():
            direction[uphill] = -grad[a][uphill]
            slope[uphill] = -inner(grad[a][uphill], grad[a][uphill])
        new_theta, new_loss = theta[a].copy(), loss[a].copy()
        new_grad, new_s = grad[a].copy(), s[:, a].copy()

        def evaluate(candidate: np.ndarray, pending: np.ndarray) -> tuple:
            n_evals[a[pending]] += 1
            return self._evaluate(candidate, l2[a[pending]], head[a[pending]])

        def keep(positions: np.ndarray, accepted: np.ndarray, candidate: np.ndarray, trial: tuple) -> None:
            new_theta[positions], new_loss[positions] = candidate[accepted], trial[0][accepted]
            new_grad[positions], new_s[:, positions] = trial[1][accepted], trial[2][:, accepted]

        failed = backtracking_search(evaluate, theta[a], loss[a], direction, slope, np.ones(len(a)), tol_change,
                                     _halve, keep)
        moved = np.ones(len(a), dtype=bool)
        moved[failed] = False
        stop[a[failed]] = PRECISION
        decrease = loss[a] - new_loss
        previous_grad_max = np.abs(grad[a]).max(axis=(1, 2))
        theta[a], loss[a], grad[a], s[:, a] = new_theta, new_loss, new_grad, new_s
        grad_max = np.abs(grad[a]).max(axis=(1, 2))
        stepped = a[moved]
        done, stalled = stopping_rule(grad_max[moved], previous_grad_max[moved], decrease[moved], loss[stepped], tol,
                                      tol_change)
        stop[stepped[done]] = CONVERGED
        stop[stepped[stalled]] = PRECISION
        return stepped[~done & ~stalled]


def _positive_definite_solve(matrix: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``matrix^-1 right`` by Cholesky, reading only the upper triangle of the symmetric positive
    definite ``matrix`` (destroyed): half the work of an LU solve, and a matrix that is not
    numerically positive definite raises ``LinAlgError`` (the caller then takes a gradient step)."""
    return cho_solve(cho_factor(matrix, lower=False, overwrite_a=True, check_finite=False), right,
                     check_finite=False)


def _halve(step: np.ndarray, slope: np.ndarray, trial_loss: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """The next step length of a rejected Newton step: half of it (the full step comes first)."""
    return 0.5 * step


__all__ = ["MAX_ELEMENTS", "MAX_SYSTEM", "MAX_WORK", "NewtonSolver", "newton_applies", "newton_possible"]
