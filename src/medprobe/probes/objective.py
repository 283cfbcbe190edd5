"""The objective of a batch of independent L2 logistic problems, evaluated in one pass over ``X``.

Why a batch: the study fits, for every layer, one probe per finding (54 on MIMIC-CXR) and per C
of a grid. Each of those is its own small convex problem, but they all multiply the *same*
feature matrix ``X``. Stacking their weight vectors as the rows of one matrix turns the two
products that cost anything -- logits ``X W^T`` and gradients ``R^T X`` -- into one pass over
``X`` per evaluation for the whole batch (the trick of the DINOv2 and THUNDER linear
evaluations), while the solvers keep everything else (line search, curvature history, stopping)
*per problem* (:mod:`medprobe.probes.descent`).

A "problem" is one C and one head: a single sigmoid (binary, or one finding of a multilabel
task) or a whole K-class softmax (multinomial: its classes share the normaliser, so they are
solved together, and each class row of its gradient is reported on its own). Problems may also
come from several layers (:class:`~medprobe.probes.products.SharedPassLayers`): the same labels
on each layer's own standardised features.

Objective per problem (scikit-learn's ``lbfgs`` scaling, so ``tol`` means the same thing)::

    mean_i logloss_i + ||W||^2 / (2 C n)          (intercepts not penalised)

Parameters travel as float64 NumPy arrays ``theta`` of shape (P, K_p, D + 1) -- P problems, K_p
outputs each (1 for a sigmoid, K for a softmax), the last column the intercept. Everything but
the two products is float64, so the solver sees objective changes far below float32's
resolution: the O(n P) logits, losses and residuals in NumPy on the CPU or in torch on the GPU
(they never cross the bus), the O(P D) parameters in NumPy on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medprobe.probes.products import FeatureProducts, SharedPassLayers


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
    T columns. ``features`` are one layer's, or a :class:`~medprobe.probes.products.SharedPassLayers` whose
    layer ``layer[p]`` problem ``p`` reads (every layer with the same targets). The gradient of sigmoid/softmax
    cross-entropy w.r.t. the logits is ``p - target``, so no autograd graph is needed.

    For features on a GPU the logits, losses and residuals -- the O(n P) part -- are computed in
    float64 on the device and only the per-problem sums and gradients (O(P D)) come back to the
    host: moving the (n, P) logits and residuals across the bus and through NumPy at every
    evaluation would cost more than the products themselves.
    """

    def __init__(self, features: FeatureProducts | SharedPassLayers, targets: np.ndarray, softmax: bool) -> None:
        self.features = features if isinstance(features, SharedPassLayers) else SharedPassLayers([features])
        self.targets = targets.astype(np.float64)
        self.softmax = softmax
        self.n, self.d = self.features.n, self.features.d
        self.outputs = targets.shape[1] if softmax else 1
        self._exact: BatchObjective | None = None
        self.device_targets = None if self.features.on_host else self.features.layers[0].to_device(self.targets)

    def exactly(self) -> BatchObjective:
        """The same objective with float64 products (for the finish of :func:`medprobe.probes.lbfgs.solve`), built once:
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
            logits = (self.features.times(theta[:, :, :d].reshape(p * k, d).T, column_layer)
                      + theta[:, :, d].reshape(p * k))
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


__all__ = ["BatchObjective"]
