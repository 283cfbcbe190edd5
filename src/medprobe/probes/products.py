"""The two products over the features that the L-BFGS solver pays for, on the CPU or a GPU.

Only ``X @ M`` (logits) and ``R^T X`` (gradients) touch the standardised features ``X``: in NumPy
on the CPU, in torch on a GPU, in the probe's dtype (or accumulated in float64 for the finish of
:func:`medprobe.probes.lbfgs.solve`). Everything else the solver does is float64 on O(P D) or
O(n P) numbers.

Why NumPy on the CPU: its BLAS runs these skinny products as fast as torch's here (measured on
the 2-core development machine: (20,000 x 8,192) @ (8,192 x 54) in 187 ms vs 265 ms, the
transposed product 222 ms vs 216 ms), and a run that needs no GPU then never imports torch
(about 2 s of a small run's fixed cost).

:class:`SharedPassLayers` holds the features of several layers of the same samples whose problems
share one solver pass (``probe.layers_per_pass``): each layer's products run on its own
features, column for column as a fit of that layer alone would run them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: a float64 copy of float32 features is kept when it is this small (256 MiB); larger features
#: are converted block by block at every product
_EXACT_COPY_BYTES = 1 << 28
#: elements per row block of the block-wise float64 products (32 MiB in float64)
_BLOCK_ELEMENTS = 1 << 22


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


class SharedPassLayers:
    """The features of several layers of the same samples, for problems that each read one layer.

    ``times``/``transposed_times`` take, per column of ``M`` (row of the result), the layer it
    belongs to, and run each layer's share of the columns through that layer's
    :class:`FeatureProducts` -- the same products, column for column, as a fit of that layer
    alone would run.
    """

    def __init__(self, layers: Sequence[FeatureProducts]) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a SharedPassLayers needs at least one layer's features")
        self.n, self.d = self.layers[0].n, self.layers[0].d
        if any((part.n, part.d) != (self.n, self.d) for part in self.layers):
            raise ValueError(f"the layers of a SharedPassLayers must have equal shapes, got "
                             f"{[(part.n, part.d) for part in self.layers]}")
        self.is_float64 = all(part.is_float64 for part in self.layers)
        self.on_host = all(part.on_host for part in self.layers)
        self.device = self.layers[0].device
        if any(part.device != self.device for part in self.layers):
            raise ValueError("the layers of a SharedPassLayers must be on one device")

    def exactly(self) -> SharedPassLayers:
        return SharedPassLayers([part.exactly() for part in self.layers])

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


__all__ = ["FeatureProducts", "SharedPassLayers"]
