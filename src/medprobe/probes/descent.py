"""What the probes' two solvers share: one backtracking line search and one stopping rule.

Both solvers (:mod:`medprobe.probes.lbfgs`, :mod:`medprobe.probes.newton`) step a batch of
independent problems in lockstep, each with its own direction and step length, and stop each
problem on its own. Keeping the line search and the stopping rule here, once, is what makes
``tol`` mean the same thing whichever solver fitted a probe:

* a problem stops as **converged** when its max |gradient| <= ``tol`` (scikit-learn's ``gtol``,
  on the unpreconditioned gradient of the mean-scaled objective);
* at **max_iter** iterations;
* at the **precision** limit: its line search found no acceptable step, or an informed step
  (not L-BFGS's first, unscaled one) improved neither the objective beyond rounding
  (``tol_change``, relative) nor the max |gradient| by half.

The line search accepts the first step length with sufficient (Armijo) decrease, up to the
rounding of the objective itself: near the optimum of a strongly regularised problem the
gradient is still informative when differences of the objective are already below rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: sufficient-decrease constant of the Armijo line search, and its maximum number of shrinks
ARMIJO = 1e-4
MAX_BACKTRACKS = 30
#: per-problem stop reasons
CONVERGED, MAX_ITER, PRECISION = "converged", "max_iter", "precision"


def inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-problem inner products of two (P, K_p, D + 1) arrays -> (P,)."""
    return np.einsum("pkd,pkd->p", a, b)


@dataclass
class BatchSolution:
    """Per problem: parameters, final loss, max |gradient| per output row, iterations, stop reason."""

    theta: np.ndarray        # (P, K_p, D + 1)
    loss: np.ndarray         # (P,)
    row_grad_max: np.ndarray  # (P, K_p): max |gradient| of each output's weights and intercept
    n_iter: np.ndarray       # (P,)
    n_evals: np.ndarray      # (P,)
    stop: list[str]          # (P,)

    @property
    def grad_max(self) -> np.ndarray:
        return self.row_grad_max.max(axis=1)


def start_problems(grad: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The problems that still need iterations (max |gradient| above ``tol``) and every problem's
    stop reason so far: converged for the others, max_iter until the loop says otherwise."""
    n_problems = grad.shape[0]
    stop = np.array([MAX_ITER] * n_problems, dtype=object)
    active = np.flatnonzero(np.abs(grad).max(axis=(1, 2)) > tol)
    stop[np.setdiff1d(np.arange(n_problems), active)] = CONVERGED
    return active, stop


def within_iteration_limit(active: np.ndarray, n_iter: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """The active problems that may take another iteration (each has its own ``limit``); the others
    keep their max_iter stop reason."""
    return active[n_iter[active] < limit[active]]


def backtracking_search(evaluate: Callable[[np.ndarray, np.ndarray], tuple], theta: np.ndarray, loss: np.ndarray,
                        direction: np.ndarray, slope: np.ndarray, step: np.ndarray, tol_change: float,
                        shrink: Callable[..., np.ndarray], keep: Callable[..., None]) -> np.ndarray:
    """Armijo backtracking for the active problems at once; returns the positions whose search failed.

    ``theta``, ``loss``, ``direction``, ``slope`` (the directional derivative) and ``step`` (the
    first step lengths, shrunk in place) are the active problems'. ``evaluate(candidate, positions)``
    gives ``(losses, ...)`` of the candidates of those positions; ``keep(positions, accepted,
    candidate, trial)`` takes what the solver needs of the accepted ones; ``shrink(step, slope,
    trial_loss, loss)`` gives the next step lengths of the rejected ones.
    """
    pending = np.arange(len(loss))
    for _ in range(MAX_BACKTRACKS):
        candidate = theta[pending] + step[pending][:, None, None] * direction[pending]
        trial = evaluate(candidate, pending)
        reference = loss[pending]
        accepted = trial[0] <= (reference + ARMIJO * step[pending] * slope[pending]
                                + tol_change * np.maximum(1.0, np.abs(reference)))
        keep(pending[accepted], accepted, candidate, trial)
        rejected = pending[~accepted]
        if rejected.size:
            step[rejected] = shrink(step[rejected], slope[rejected], trial[0][~accepted], reference[~accepted])
        pending = rejected
        if not pending.size:
            break
    return pending


def stopping_rule(grad_max: np.ndarray, previous_grad_max: np.ndarray, decrease: np.ndarray, loss: np.ndarray,
                  tol: float, tol_change: float, informed: Any = True) -> tuple[np.ndarray, np.ndarray]:
    """``(converged, out_of_precision)`` masks of problems that have just taken a step (see the
    module docstring); ``informed`` marks the steps that may count as out of precision."""
    converged = grad_max <= tol
    out_of_precision = (~converged & informed & (decrease <= tol_change * np.maximum(1.0, np.abs(loss)))
                        & (grad_max > 0.5 * previous_grad_max))
    return converged, out_of_precision


__all__ = [
    "ARMIJO", "CONVERGED", "MAX_BACKTRACKS", "MAX_ITER", "PRECISION", "BatchSolution", "backtracking_search", "inner",
    "start_problems", "stopping_rule", "within_iteration_limit",
]
