"""The numerical core of the probes: a batch of independent L2 logistic problems solved at once.

Why a batch: the study fits, for every layer, one probe per finding (54 on MIMIC-CXR) and per C
of a grid. Each of those is its own small convex problem, but they all multiply the *same*
feature matrix ``X``. Stacking their weight vectors as the rows of one matrix turns the two
products that cost anything -- logits ``X W^T`` and gradients ``R^T X`` -- into one pass over
``X`` per iteration for the whole batch (the trick of the DINOv2 and THUNDER linear
evaluations), while everything else (line search, curvature history, stopping) stays *per
problem*: each problem takes its own step length, keeps its own L-BFGS memory and stops when its
own gradient meets ``tol``; a problem that has stopped drops out of the products.

A "problem" is one C and one head: a single sigmoid (binary, or one finding of a multilabel
task) or a whole K-class softmax (multinomial: its classes share the normaliser, so they are
solved together, and each class row of its gradient is reported on its own).

Problems may also come from several layers (:class:`LayerStack`): the same labels on each
layer's own standardised features. Their products run layer by layer, but everything else --
the iteration loop, the line search, the stopping tests and the O(n P) element-wise work -- is
shared by the problems of all layers, so a probe grid pays the solver's per-iteration overhead
once per pass instead of once per layer. That is meant for a GPU, where the arithmetic of one
product of a 20,000 x 8,192 layer is well under a millisecond and the overhead dominates (not
measured: no GPU was available; ``benchmarks/gpu_check.sh`` measures it). On the CPU it pays
for small layers only: larger ones fall out of the cache between their turns (measured in
``benchmarks/bench_layers_per_pass.py``). Each problem still takes the steps it would take
alone, up to the order of some sums.

Objective per problem (scikit-learn's ``lbfgs`` scaling, so ``tol`` means the same thing)::

    mean_i logloss_i + ||W||^2 / (2 C n)          (intercepts not penalised)

Parameters travel as float64 NumPy arrays ``theta`` of shape (P, K_p, D + 1) -- P problems, K_p
outputs each (1 for a sigmoid, K for a softmax), the last column the intercept. Only the two
products touch the features (:class:`FeatureProducts`): in NumPy on the CPU, in torch on a GPU,
in the probe's dtype. Everything else is float64, so the solver sees objective changes far below
float32's resolution: the O(n P) logits, losses and residuals in NumPy on the CPU or in torch on
the GPU (they never cross the bus), the O(P D) parameters, line search and L-BFGS history in
NumPy on the host.

Why NumPy on the CPU: its BLAS runs these skinny products as fast as torch's here (measured on
the 2-core development machine: (20,000 x 8,192) @ (8,192 x 54) in 187 ms vs 265 ms, the
transposed product 222 ms vs 216 ms), and a run that needs no GPU then never imports torch
(about 2 s of a small run's fixed cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: sufficient-decrease constant of the Armijo line search, and its maximum number of halvings
_ARMIJO = 1e-4
_MAX_BACKTRACKS = 30
#: per-problem stop reasons
CONVERGED, MAX_ITER, PRECISION = "converged", "max_iter", "precision"
#: a float64 copy of float32 features is kept when it is this small (256 MiB); larger features
#: are converted block by block at every product
_EXACT_COPY_BYTES = 1 << 28
#: elements per row block of the block-wise float64 products (32 MiB in float64)
_BLOCK_ELEMENTS = 1 << 22


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-problem inner products of two (P, K_p, D + 1) arrays -> (P,)."""
    return np.einsum("pkd,pkd->p", a, b)


class FeatureProducts:
    """``X @ M`` and ``R^T X`` for the standardised features ``X`` (n, D), results float64.

    ``X`` is a NumPy array (CPU) or a torch tensor on its device (GPU). With ``exact`` the products
    of lower-precision features are accumulated in float64 (from a float64 copy of ``X`` when
    small, else over row blocks, so no large float64 copy is ever made); otherwise they run in the
    features' own dtype. ``times``/``transposed_times`` take and give NumPy arrays on the host;
    for torch features, ``device_times``/``device_transposed_times`` take and give float64
    tensors on the features' device, so that the objective's O(n P) work stays there too.
    """

    def __init__(self, X: Any, exact: bool = False) -> None:
        self.X = X
        self.on_host = isinstance(X, np.ndarray)
        self.device = None if self.on_host else X.device
        self.n, self.d = X.shape
        self.is_float64 = (X.dtype == np.float64) if self.on_host else (str(X.dtype) == "torch.float64")
        self.exact = exact and not self.is_float64
        self.block_rows = max(1, _BLOCK_ELEMENTS // max(1, self.d))
        self.X64 = None
        if self.exact and self.n * self.d * 8 <= _EXACT_COPY_BYTES:
            self.X64 = X.astype(np.float64) if self.on_host else X.double()

    def exactly(self) -> FeatureProducts:
        """The same features with float64 products."""
        return FeatureProducts(self.X, exact=True)

    def to_device(self, array: np.ndarray) -> Any:
        """A host array as a float64 tensor on the features' device."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(self.device)

    def times(self, M: np.ndarray) -> np.ndarray:
        """``X @ M`` for ``M`` (D, m) -> (n, m) float64."""
        if not self.on_host:
            return self.device_times(self.to_device(M)).cpu().numpy()
        if not self.exact:
            return (self.X @ M.astype(self.X.dtype)).astype(np.float64, copy=False)
        if self.X64 is not None:
            return self.X64 @ M
        return np.concatenate([self.X[start:start + self.block_rows].astype(np.float64) @ M
                               for start in range(0, self.n, self.block_rows)])

    def transposed_times(self, R: np.ndarray) -> np.ndarray:
        """``R^T X`` for ``R`` (n, m) -> (m, D) float64."""
        if not self.on_host:
            return self.device_transposed_times(self.to_device(R)).cpu().numpy()
        if not self.exact:
            return (R.astype(self.X.dtype).T @ self.X).astype(np.float64, copy=False)
        if self.X64 is not None:
            return R.T @ self.X64
        total = np.zeros((R.shape[1], self.d))
        for start in range(0, self.n, self.block_rows):
            total += R[start:start + self.block_rows].T @ self.X[start:start + self.block_rows].astype(np.float64)
        return total

    def device_times(self, M: Any) -> Any:
        """``X @ M`` for a float64 tensor ``M`` (D, m) on the device -> (n, m) float64 there."""
        import torch

        if not self.exact:
            return (self.X @ M.to(self.X.dtype)).double()
        if self.X64 is not None:
            return self.X64 @ M
        return torch.cat([self.X[start:start + self.block_rows].double() @ M
                          for start in range(0, self.n, self.block_rows)])

    def device_transposed_times(self, R: Any) -> Any:
        """``R^T X`` for a float64 tensor ``R`` (n, m) on the device -> (m, D) float64 there."""
        import torch

        if not self.exact:
            return (R.to(self.X.dtype).T @ self.X).double()
        if self.X64 is not None:
            return R.T @ self.X64
        total = torch.zeros((R.shape[1], self.d), dtype=torch.float64, device=self.device)
        for start in range(0, self.n, self.block_rows):
            total += R[start:start + self.block_rows].T @ self.X[start:start + self.block_rows].double()
        return total


class LayerStack:
    """The features of several layers of the same samples, for problems that each read one layer.

    ``times``/``transposed_times`` take, per column of ``M`` (row of the result), the layer it
    belongs to, and run each layer's share of the columns through that layer's
    :class:`FeatureProducts` -- the same products, column for column, as a fit of that layer
    alone would run.
    """

    def __init__(self, layers: Sequence[FeatureProducts]) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a LayerStack needs at least one layer's features")
        self.n, self.d = self.layers[0].n, self.layers[0].d
        if any((part.n, part.d) != (self.n, self.d) for part in self.layers):
            raise ValueError(f"the layers of a LayerStack must have equal shapes, got "
                             f"{[(part.n, part.d) for part in self.layers]}")
        self.is_float64 = all(part.is_float64 for part in self.layers)
        self.on_host = all(part.on_host for part in self.layers)
        self.device = self.layers[0].device
        if any(part.device != self.device for part in self.layers):
            raise ValueError("the layers of a LayerStack must be on one device")

    def exactly(self) -> LayerStack:
        return LayerStack([part.exactly() for part in self.layers])

    def _per_layer(self, product: str, A: Any, column_layer: np.ndarray, result_rows: bool) -> Any:
        """Each layer's ``product`` of its own columns of ``A``, put into the same columns of the
        result (``times``) or its rows (``transposed_times``); float64 NumPy, or on the device."""
        if len(self.layers) == 1:
            return getattr(self.layers[0], product)(A)
        shape = (A.shape[1], self.d) if result_rows else (self.n, A.shape[1])
        on_device = product.startswith("device_")
        if on_device:
            import torch

            out = torch.empty(shape, dtype=torch.float64, device=self.device)
        else:
            out = np.empty(shape)
        for number in np.unique(column_layer):
            columns = np.flatnonzero(column_layer == number)
            if on_device:
                columns = torch.from_numpy(columns).to(self.device)
            part = getattr(self.layers[int(number)], product)(A[:, columns])
            if result_rows:
                out[columns] = part
            else:
                out[:, columns] = part
        return out

    def times(self, M: np.ndarray, column_layer: np.ndarray) -> np.ndarray:
        """``X_l @ M[:, j]`` for every column ``j`` of ``M`` (D, m), ``l = column_layer[j]`` -> (n, m)."""
        return self._per_layer("times", M, column_layer, result_rows=False)

    def transposed_times(self, R: np.ndarray, column_layer: np.ndarray) -> np.ndarray:
        """``R[:, j]^T X_l`` for every column ``j`` of ``R`` (n, m), ``l = column_layer[j]`` -> (m, D)."""
        return self._per_layer("transposed_times", R, column_layer, result_rows=True)

    def device_times(self, M: Any, column_layer: np.ndarray) -> Any:
        """:meth:`times` for float64 tensors on the layers' device."""
        return self._per_layer("device_times", M, column_layer, result_rows=False)

    def device_transposed_times(self, R: Any, column_layer: np.ndarray) -> Any:
        """:meth:`transposed_times` for float64 tensors on the layers' device."""
        return self._per_layer("device_transposed_times", R, column_layer, result_rows=True)


def _losses_and_residual(logits: Any, targets: Any, softmax: bool, n: int, p: int, k: int,
                         xp: Any) -> tuple[Any, Any]:
    """Per-sample losses (n, P) and residuals ``probability - target`` (n, P K) from the logits
    (n, P K): the same float64 arithmetic for NumPy arrays (``xp=numpy``) and torch tensors
    (``xp=torch``)."""
    if softmax:
        z = logits.reshape(n, p, k)
        shifted = z - xp.amax(z, 2)[:, :, None]
        log_norm = xp.log(xp.exp(shifted).sum(2))[:, :, None]
        losses = log_norm[:, :, 0] - xp.einsum("npk,nk->np", shifted, targets)
        residual = (xp.exp(shifted - log_norm) - targets[:, None, :]).reshape(n, p * k)
        return losses, residual
    zero = xp.zeros_like(logits)
    losses = xp.logaddexp(zero, logits) - logits * targets
    residual = xp.exp(-xp.logaddexp(zero, -logits)) - targets  # sigmoid, without overflow
    return losses, residual


class BatchObjective:
    """Mean log-loss plus ``||W||^2 / (2 C n)`` and its gradient for any subset of the problems.

    ``targets`` (n, T) are the 0/1 targets of every head there is (findings, or one-hot classes
    for a softmax). A sigmoid problem reads column ``head[p]`` of them; a softmax problem reads all
    T columns. ``features`` are one layer's, or a :class:`LayerStack` whose layer ``layer[p]``
    problem ``p`` reads (every layer with the same targets). The gradient of sigmoid/softmax
    cross-entropy w.r.t. the logits is ``p - target``, so no autograd graph is needed.

    For features on a GPU the logits, losses and residuals -- the O(n P) part -- are computed in
    float64 on the device and only the per-problem sums and gradients (O(P D)) come back to the
    host: moving the (n, P) logits and residuals across the bus and through NumPy at every
    evaluation would cost more than the products themselves.
    """

    def __init__(self, features: FeatureProducts | LayerStack, targets: np.ndarray, softmax: bool) -> None:
        self.features = features if isinstance(features, LayerStack) else LayerStack([features])
        self.targets = targets.astype(np.float64)
        self.softmax = softmax
        self.n, self.d = self.features.n, self.features.d
        self.outputs = targets.shape[1] if softmax else 1
        self._exact: BatchObjective | None = None
        self.device_targets = None if self.features.on_host else self.features.layers[0].to_device(self.targets)

    def exactly(self) -> BatchObjective:
        """The same objective with float64 products (for the finish of :func:`solve`), built once:
        every C of a path reuses it, and with it the float64 copy of small features."""
        if self._exact is None:
            self._exact = self if self.features.is_float64 else BatchObjective(
                self.features.exactly(), self.targets, self.softmax)
        return self._exact

    def __call__(self, theta: np.ndarray, l2: np.ndarray, head: np.ndarray,
                 layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Losses (P,) and gradients (P, K_p, D + 1) at ``theta``; ``l2`` is ``1 / (C n)`` per problem."""
        p, k, d = theta.shape[0], self.outputs, self.d
        column_layer = np.repeat(layer, k)
        if self.features.on_host:
            logits = self.features.times(theta[:, :, :d].reshape(p * k, d).T, column_layer) + theta[:, :, d].reshape(p * k)
            targets = self.targets if self.softmax else self.targets[:, head]
            losses, residual = _losses_and_residual(logits, targets, self.softmax, self.n, p, k, np)
            product = self.features.transposed_times(residual, column_layer)
            loss_sums, residual_sums = losses.sum(axis=0), residual.sum(axis=0)
        else:
            import torch

            parameters = self.features.layers[0].to_device(theta)
            logits = (self.features.device_times(parameters[:, :, :d].reshape(p * k, d).T, column_layer)
                      + parameters[:, :, d].reshape(p * k))
            targets = self.device_targets if self.softmax else self.device_targets[:, torch.from_numpy(head).to(
                self.features.device)]
            losses, residual = _losses_and_residual(logits, targets, self.softmax, self.n, p, k, torch)
            product = self.features.device_transposed_times(residual, column_layer).cpu().numpy()
            loss_sums, residual_sums = losses.sum(0).cpu().numpy(), residual.sum(0).cpu().numpy()
        squares = np.einsum("pkd,pkd->p", theta[:, :, :d], theta[:, :, :d])
        loss = loss_sums / self.n + 0.5 * l2 * squares
        grad = np.empty_like(theta)
        grad[:, :, :d] = product.reshape(p, k, d) / self.n + l2[:, None, None] * theta[:, :, :d]
        grad[:, :, d] = residual_sums.reshape(p, k) / self.n
        return loss, grad


class Preconditioner:
    """Flattens the dominant directions of the standardised features for L-BFGS.

    Why: activations are strongly anisotropic even after per-feature standardisation -- a few
    shared directions carry much of the variance -- so the Hessian ``~ X^T S X / n + I / (C n)``
    is badly conditioned and plain L-BFGS crawls, worst at weak regularisation. With the top
    ``q`` eigenpairs ``(lambda_i, v_i)`` of ``X^T X / n`` (a randomised sketch: three passes over
    X, once per fit), the initial inverse Hessian of L-BFGS becomes
    ``P = I + sum_i (a_i - 1) v_i v_i^T`` with ``a_i = (lambda_q + l2) / (lambda_i + l2)``: the
    dominant directions are scaled down to the level of the q-th. ``P`` is symmetric positive
    definite and acts on the feature axis of every output's weights; the intercepts (decoupled
    from the centred features) are left alone. It changes only the path to the optimum.

    For a :class:`LayerStack` every layer gets its own sketch (row ``l`` of ``eigenvalues`` and
    ``vectors``, each the very sketch a fit of that layer alone makes), and each problem is
    preconditioned with its own layer's.
    """

    def __init__(self, features: FeatureProducts | LayerStack, max_rank: int = 64, oversampling: int = 10,
                 seed: int = 0) -> None:
        layers = features.layers if isinstance(features, LayerStack) else [features]
        n, d = layers[0].n, layers[0].d
        self.d = d
        rank = min(max_rank, min(n, d) - 1)
        #: (L, q) eigenvalues, descending, and (L, D, q) orthonormal eigenvectors; None when rank < 2
        self.eigenvalues: np.ndarray | None = None
        self.vectors: np.ndarray | None = None
        if rank < 2:
            return
        width = min(rank + oversampling, min(n, d))
        # a seeded NumPy generator: the same sketch on every device and for every layer, and no
        # global RNG touched
        probe = np.random.default_rng(seed).standard_normal((d, width))
        eigenvalues, vectors = [], []
        for layer in layers:
            # one power step (range of X^T X G), then Rayleigh-Ritz on that subspace
            gram_probe = layer.transposed_times(layer.times(probe)).T
            basis = np.linalg.qr(gram_probe)[0]  # (D, width), orthonormal
            projected = layer.times(basis)
            values, ritz = np.linalg.eigh(projected.T @ projected / n)
            order = np.argsort(values)[::-1][:rank]
            eigenvalues.append(values[order])
            vectors.append(basis @ ritz[:, order])  # (D, q), orthonormal
        self.eigenvalues, self.vectors = np.stack(eigenvalues), np.stack(vectors)

    def factors(self, l2: np.ndarray, curvature: np.ndarray, layer: np.ndarray | None = None) -> tuple:
        """Per problem: ``a_i - 1`` (P, q) of the feature directions, ``a`` (P,) of the intercepts,
        and the layer (P,) whose directions they belong to (``None``: layer 0 for all).

        The Hessian of a problem is about ``s (X^T X / n + l2 / s)`` on the weights and ``s`` on the
        intercept, where ``s`` (``curvature``) is the mean of ``p (1 - p)`` -- ``r (1 - r)`` at the
        start, for a head with positive rate ``r``. The intercept is like a feature with
        eigenvalue 1 and no penalty: ``a = lambda_q + l2 / s``. Without this scaling the
        intercept of a strongly regularised or rare head converges many times slower than its
        weights (its gradient then stalls at the precision limit above ``tol``).
        """
        shifted = (np.asarray(l2, dtype=np.float64) / np.asarray(curvature, dtype=np.float64))[:, None]
        layer = np.zeros(shifted.shape[0], dtype=np.int64) if layer is None else np.asarray(layer)
        if self.eigenvalues is None:
            return None, np.ones(shifted.shape[0]), layer
        eigenvalues = self.eigenvalues[layer]  # (P, q)
        weights = (eigenvalues[:, -1:] + shifted) / (eigenvalues + shifted) - 1.0
        return weights, eigenvalues[:, -1] + shifted[:, 0], layer

    def apply(self, vector: np.ndarray, factors: tuple | None) -> np.ndarray:
        """``P`` applied to parameter-shaped (P, K_p, D + 1) vectors (a new array)."""
        out = vector.copy()
        if factors is None:
            return out
        weights, intercept, layer = factors
        out[:, :, self.d] *= intercept[:, None]
        if weights is None:
            return out
        groups = [(0, slice(None))] if len(self.vectors) == 1 else [
            (int(number), np.flatnonzero(layer == number)) for number in np.unique(layer)]
        for number, rows in groups:
            vectors, coef = self.vectors[number], vector[rows, :, :self.d]
            out[rows, :, :self.d] += np.einsum("pkq,dq->pkd", np.einsum("pkd,dq->pkq", coef, vectors)
                                               * weights[rows][:, None, :], vectors)
        return out

    @staticmethod
    def select(factors: tuple, index) -> tuple:
        """The factors of a subset of the problems."""
        return tuple(None if part is None else part[index] for part in factors)


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


def minimise(objective: BatchObjective, preconditioner: Preconditioner, theta0: np.ndarray, l2: np.ndarray,
             head: np.ndarray, curvature: np.ndarray, max_iter: int | np.ndarray, tol: float, history_size: int,
             tol_change: float, layer: np.ndarray | None = None) -> BatchSolution:
    """Preconditioned L-BFGS with a backtracking (Armijo) line search, for P problems at once.

    Every problem behaves exactly as if it were solved alone (own step, own curvature pairs, own
    scaling ``gamma``); only the evaluations are shared. Each objective is strictly convex (L2
    term), so accepted steps satisfy ``y.s > 0`` and a sufficient-decrease search is enough.
    A problem stops when its max |gradient| <= ``tol`` (scikit-learn's ``gtol``, on the
    unpreconditioned gradient), after ``max_iter`` iterations, or when neither its objective
    decreases by more than ``tol_change`` (relative: the rounding of the loss in this dtype) nor
    its max |gradient| halves -- the precision limit. ``max_iter`` may differ per problem (an
    array); ``layer`` is each problem's layer in a :class:`LayerStack` (``None``: one layer).
    """
    n_problems = theta0.shape[0]
    layer = np.zeros(n_problems, dtype=np.int64) if layer is None else np.asarray(layer, dtype=np.int64)
    iteration_limit = np.broadcast_to(np.asarray(max_iter, dtype=np.int64), (n_problems,))
    factors_all = preconditioner.factors(l2, curvature, layer)
    theta = theta0.copy()
    loss, grad = objective(theta, l2, head, layer)
    n_evals = np.ones(n_problems, dtype=np.int64)
    n_iter = np.zeros(n_problems, dtype=np.int64)
    stop = np.array([MAX_ITER] * n_problems, dtype=object)
    # curvature history: one ring shared by all problems (they step in lockstep); an empty or
    # discarded slot of a problem has rho = 0 and then contributes nothing to the recursion
    steps = np.zeros((history_size, *theta.shape))
    changes = np.zeros_like(steps)
    rho = np.zeros((history_size, n_problems))
    gamma = np.ones(n_problems)
    ring = 0  # slot of the next pair
    active = np.flatnonzero(np.abs(grad).max(axis=(1, 2)) > tol)
    stop[np.setdiff1d(np.arange(n_problems), active)] = CONVERGED

    while active.size:
        at_limit = n_iter[active] >= iteration_limit[active]
        if at_limit.any():
            active = active[~at_limit]  # already marked MAX_ITER
            if not active.size:
                break
        a = active
        factors = Preconditioner.select(factors_all, a)
        n_iter[a] += 1
        g = grad[a]
        # two-loop recursion with the preconditioned, scaled initial inverse Hessian gamma * P
        order = [(ring - 1 - j) % history_size for j in range(history_size)]  # newest first
        direction = -g
        alphas = []
        for slot in order:
            alpha = rho[slot, a] * _dot(steps[slot, a], direction)
            direction -= alpha[:, None, None] * changes[slot, a]
            alphas.append(alpha)
        direction = gamma[a][:, None, None] * preconditioner.apply(direction, factors)
        for slot, alpha in zip(reversed(order), reversed(alphas)):
            beta = rho[slot, a] * _dot(changes[slot, a], direction)
            direction += (alpha - beta)[:, None, None] * steps[slot, a]
        slope = _dot(g, direction)
        uphill = slope >= 0  # not a descent direction (rounding): restart from the preconditioned gradient
        if uphill.any():
            rho[:, a[uphill]] = 0.0
            gamma[a[uphill]] = 1.0
            direction[uphill] = -preconditioner.apply(g[uphill], Preconditioner.select(factors, uphill))
            slope[uphill] = _dot(g[uphill], direction[uphill])
        # without curvature information the scale of the direction is unknown: start small
        has_history = (rho[:, a] != 0).any(axis=0)
        t = np.where(has_history, 1.0, np.minimum(1.0, 1.0 / np.abs(g).sum(axis=(1, 2))))
        new_loss = np.empty(len(a))
        new_grad = np.empty_like(g)
        pending = np.arange(len(a))
        for _ in range(_MAX_BACKTRACKS):
            candidate = theta[a[pending]] + t[pending][:, None, None] * direction[pending]
            trial_loss, trial_grad = objective(candidate, l2[a[pending]], head[a[pending]], layer[a[pending]])
            n_evals[a[pending]] += 1
            # sufficient decrease, up to the rounding of the loss itself (``tol_change``): near the
            # optimum of a strongly regularised problem the gradient is still informative when
            # loss differences are already below rounding
            reference = loss[a[pending]]
            accepted = trial_loss <= (reference + _ARMIJO * t[pending] * slope[pending]
                                      + tol_change * np.maximum(1.0, np.abs(reference)))
            new_loss[pending[accepted]] = trial_loss[accepted]
            new_grad[pending[accepted]] = trial_grad[accepted]
            rejected = pending[~accepted]
            if rejected.size:
                tr, sl = t[rejected], slope[rejected]
                curvature = trial_loss[~accepted] - loss[a[rejected]] - tr * sl  # quadratic model through f(0), f'(0), f(t)
                t_model = np.where(curvature > 0, -sl * tr * tr / (2 * np.where(curvature > 0, curvature, 1.0)), 0.5 * tr)
                t[rejected] = np.minimum(0.5 * tr, np.maximum(0.1 * tr, t_model))
            pending = rejected
            if not pending.size:
                break
        failed = np.zeros(len(a), dtype=bool)
        failed[pending] = True
        stop[a[failed]] = PRECISION
        ok = ~failed
        moved = a[ok]
        step = t[ok][:, None, None] * direction[ok]
        change = new_grad[ok] - grad[moved]
        curvature_pair = _dot(change, step)
        valid = curvature_pair > np.finfo(np.float64).eps * _dot(change, change)
        steps[ring, moved] = step
        changes[ring, moved] = change
        rho[ring, moved] = np.where(valid, 1.0 / np.where(valid, curvature_pair, 1.0), 0.0)
        if valid.any():
            scaled = preconditioner.apply(change[valid], Preconditioner.select(factors, np.flatnonzero(ok)[valid]))
            gamma[moved[valid]] = curvature_pair[valid] / _dot(change[valid], scaled)
        ring = (ring + 1) % history_size
        decrease = loss[moved] - new_loss[ok]
        previous_grad_max = np.abs(grad[moved]).max(axis=(1, 2))
        theta[moved] += step
        loss[moved], grad[moved] = new_loss[ok], new_grad[ok]
        grad_max = np.abs(grad[moved]).max(axis=(1, 2))
        done = grad_max <= tol
        stop[moved[done]] = CONVERGED
        # out of precision: a quasi-Newton step (not the first, unscaled one) improved neither the
        # loss (beyond rounding) nor the gradient (by half)
        stalled = (~done & has_history[ok] & (decrease <= tol_change * np.maximum(1.0, np.abs(loss[moved])))
                   & (grad_max > 0.5 * previous_grad_max))
        stop[moved[stalled]] = PRECISION
        active = moved[~done & ~stalled]
    row_grad_max = np.abs(grad).max(axis=2)
    return BatchSolution(theta, loss, row_grad_max, n_iter, n_evals, list(stop))


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
