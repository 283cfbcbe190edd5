"""Drawing bootstrap replicates: which test samples (or patients) each replicate resamples.

Everything that decides *what* is resampled lives here, below the code that scores replicates
(:mod:`medprobe.stats.bootstrap`, :mod:`medprobe.stats.calibration`, :mod:`medprobe.stats.paired`),
so all of them draw from one place: :func:`resampling_plan` picks the unit for a test set,
:func:`bootstrap_indices` draws images, :func:`cluster_bootstrap_indices` draws patients.

Cluster (patient-level) bootstrap: all images of a drawn patient enter the replicate.
Images of one patient are not independent (both eyes, repeat radiographs, several lesions), so
resampling images as if they were understates every SD and CI and inflates every paired test:
on 45 patients x 6 images with a true AUC of 0.5, image-level 95 % CIs covered the truth in about
60 % of simulated test sets (``benchmarks/bench_coverage.py``). The cluster bootstrap resamples
the *independent* units, the patients, with replacement and counts each image of a drawn patient
once per draw (Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007), so a replicate has a
varying number of images, as a new test set of the same number of patients would.

A replicate is stored as the patients it drew, ``(R, G)`` positions into the test set's
patients, and turned into per-image counts block by block
(:meth:`ClusteredIndices.counts`), which is all :func:`~medprobe.stats.bootstrap.bootstrap_metrics`
needs: the metric code is the same for both units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from medprobe.errors import ConfigError, DataError

BootstrapUnit = Literal["patient", "image"]
BOOTSTRAP_UNITS: tuple[str, ...] = ("patient", "image")


def bootstrap_indices(n: int, n_replicates: int = 1000, seed: int = 0,
                      strata: np.ndarray | None = None) -> np.ndarray:
    """``(n_replicates, n)`` int64 matrix of resampled test-sample positions.

    Default: plain resampling of all ``n`` test samples with replacement, as in the study, so the
    class mix varies between replicates like it would between test sets. With ``strata`` (one
    label per sample, e.g. the class for single-label tasks or a site), every replicate resamples
    within each stratum and keeps its size, so class counts stay fixed; use it when a class is so
    rare that plain resampling would often drop it. The same ``seed`` always gives the same matrix,
    which is what lets different models be scored on identical replicates.
    """
    if n < 1:
        raise DataError(f"cannot bootstrap {n} samples")
    if n_replicates < 1:
        raise ConfigError(f"n_replicates must be at least 1, got {n_replicates}")
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_replicates, n), dtype=np.int64)
    strata = np.asarray(strata)
    if strata.shape != (n,):
        raise DataError(f"strata must have one entry per sample, shape ({n},), got {strata.shape}")
    indices = np.empty((n_replicates, n), dtype=np.int64)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        indices[:, members] = members[rng.integers(0, members.size, size=(n_replicates, members.size))]
    return indices


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """``(R, n)`` int64 matrix: how many times each replicate drew each sample."""
    n_rows = indices.shape[0]
    flat = (indices + (np.arange(n_rows, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_rows * n).reshape(n_rows, n)


def cluster_codes(groups: Sequence[Any] | np.ndarray, n: int | None = None) -> np.ndarray:
    """``(n,)`` int64 patient code 0..G-1 per image, in order of first appearance.

    A missing id (None / NaN) makes the image a patient of its own, the convention of the
    sample table (``medprobe.data.dataset``): data sets that publish no patient ids fill
    ``group`` with None, and then every image is its own cluster.
    """
    values = pd.Series(np.asarray(groups, dtype=object).ravel())
    if n is not None and len(values) != n:
        raise DataError(f"patient ids must have one entry per sample ({n}), got {len(values)}")
    missing = values.isna().to_numpy()
    codes = np.empty(len(values), dtype=np.int64)
    if (~missing).any():
        codes[~missing] = pd.factorize(values[~missing].astype(str))[0]
    n_known = int(codes[~missing].max()) + 1 if (~missing).any() else 0
    codes[missing] = n_known + np.arange(int(missing.sum()))
    return codes


def has_clusters(groups: Sequence[Any] | np.ndarray | None) -> bool:
    """True when some patient has more than one image (so the unit of resampling matters)."""
    if groups is None:
        return False
    codes = cluster_codes(groups)
    return codes.size > 0 and int(np.bincount(codes).max()) > 1


@dataclass(frozen=True)
class ClusteredIndices:
    """Bootstrap replicates drawn at patient level.

    ``draws[r]`` lists the patients (codes 0..G-1) replicate ``r`` drew, with replacement;
    ``cluster_of_sample[i]`` is image ``i``'s patient. Image ``i`` is counted in replicate ``r``
    as often as its patient was drawn.
    """

    draws: np.ndarray  # (R, G) int64
    cluster_of_sample: np.ndarray  # (n,) int64

    @property
    def n_replicates(self) -> int:
        return int(self.draws.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.cluster_of_sample.size)

    @property
    def n_clusters(self) -> int:
        return int(self.draws.shape[1])

    def counts(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``(stop - start, n)`` int64: how often replicates ``start:stop`` count each image."""
        patient_counts = resample_counts(self.draws[start:stop], self.n_clusters)
        return np.take(patient_counts, self.cluster_of_sample, axis=1)


def cluster_bootstrap_indices(groups: Sequence[Any] | np.ndarray, n_replicates: int = 1000,
                              seed: int = 0) -> ClusteredIndices:
    """Patient-level replicates: each draws G of the G test patients with replacement.

    The same ``groups`` and ``seed`` always give the same replicates, which is what lets the
    models of a paired comparison be scored on identical patient resamples.
    """
    codes = cluster_codes(groups)
    if codes.size < 1:
        raise DataError("cannot bootstrap 0 samples")
    if n_replicates < 1:
        raise ConfigError(f"n_replicates must be at least 1, got {n_replicates}")
    n_clusters = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clusters, size=(n_replicates, n_clusters), dtype=np.int64)
    return ClusteredIndices(draws, codes)


def resampling_plan(groups: Sequence[Any] | np.ndarray | None, n: int, n_replicates: int, seed: int,
                    unit: BootstrapUnit = "patient") -> tuple[np.ndarray | ClusteredIndices, dict[str, Any]]:
    """Replicates for a test set, and what they resample: ``(indices, {"bootstrap_unit", "n_units"})``.

    ``unit="patient"`` resamples patients whenever some patient has several images; when every
    image is its own patient (no ids, or one image each) the two units are the same thing and the
    plain image bootstrap is used and recorded as ``"image"``. ``unit="image"`` always resamples
    images (the study's way, which ignores the clustering).
    """
    if unit not in BOOTSTRAP_UNITS:
        raise ConfigError(f"bootstrap unit must be one of {', '.join(BOOTSTRAP_UNITS)}, got {unit!r}")
    if unit == "patient" and groups is not None and has_clusters(groups):
        clustered = cluster_bootstrap_indices(groups, n_replicates, seed=seed)
        if clustered.n_samples != n:
            raise DataError(f"patient ids must have one entry per sample ({n}), got {clustered.n_samples}")
        return clustered, {"bootstrap_unit": "patient", "n_units": clustered.n_clusters}
    return bootstrap_indices(n, n_replicates, seed=seed), {"bootstrap_unit": "image", "n_units": int(n)}


__all__ = ["BOOTSTRAP_UNITS", "BootstrapUnit", "ClusteredIndices", "bootstrap_indices", "cluster_bootstrap_indices",
           "cluster_codes", "has_clusters", "resample_counts", "resampling_plan"]
