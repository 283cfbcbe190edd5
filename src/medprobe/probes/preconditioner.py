"""The L-BFGS preconditioner: the dominant directions of the standardised features, flattened."""

from __future__ import annotations

import numpy as np

from medprobe.probes.products import FeatureProducts, SharedPassLayers


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

    For :class:`~medprobe.probes.products.SharedPassLayers` every layer gets its own sketch (row ``l`` of
    ``eigenvalues`` and ``vectors``, each the very sketch a fit of that layer alone makes), and each problem is
    preconditioned with its own layer's.
    """

    def __init__(self, features: FeatureProducts | SharedPassLayers, max_rank: int = 64, oversampling: int = 10,
                 seed: int = 0) -> None:
        layers = features.layers if isinstance(features, SharedPassLayers) else [features]
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


__all__ = ["Preconditioner"]
