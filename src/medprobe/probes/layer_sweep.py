"""The probe grid of one backbone: every layer x (train fraction, seed), fitted one layer at a time.

Why layer by layer: a layer's features are the big object (81 hidden states x 8,192 dims x 100k
images is ~265 GB in float32), while what selection and scoring need from a fitted layer is tiny
(a validation score per C and the test probabilities). So :func:`probe_layers` reads one layer
straight into its train / val / test matrices, fits it for every fraction and seed, returns a
:class:`LayerFit` per plan and lets the features go; the layer is chosen afterwards from the
scores alone. Peak memory is one layer's features (float32) plus one cache chunk and the solver's
working copy of one training subset, whatever the number of layers, fractions and seeds.

``probe.layers_per_pass: k`` reads k layers at a time and fits them in one solver pass per plan
(:meth:`~medprobe.probes.logistic.LinearProbe.fit_layers_path`): on a GPU the solver's
per-iteration cost is then paid once for k layers; memory holds k layers' features.

:func:`probe_layers` is a pure function of its arguments (the cache path, the split positions,
the plans and :class:`ProbeSettings`), which is what lets the Ray engine run it on any node and
still give the local engine's numbers bit for bit (see :mod:`medprobe.probes.ray_engine`).

Stacks: a vision-language model has two stacks of layers -- its vision encoder (``vision.k``)
and its language model (integer hidden states). Their layers are never compared with each other
when choosing the best layer: :func:`layer_stacks` splits them and each stack gets its own
selected layer (see :func:`stack_display_name`).
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
import weakref
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medprobe.errors import CacheError, ConvergenceWarning, DataError
from medprobe.features.cache import FeatureCache
from medprobe.probes.selection import select_probes

SPLITS = ("train", "val", "test")
VISION_PREFIX = "vision."
#: validation scores closer than this to the best one count as a tie (AUC / F1 live in [0, 1]; two
#: layers whose probes rank the validation samples identically differ by summation noise at most)
TIE_TOLERANCE = 1e-12
#: below these validation sizes the selected layer and C are mostly noise; the run says so
MIN_VAL_SAMPLES = 30
MIN_VAL_PER_CLASS = 5


@dataclass(frozen=True)
class FitPlan:
    """One (train fraction, seed) of the grid and the train-split rows it uses (and the val-split
    rows it is selected on; ``None``: the whole validation split)."""

    fraction: float
    seed: int
    train_rows: np.ndarray  # positions into the train split
    val_rows: np.ndarray | None = None  # positions into the val split


@dataclass(frozen=True)
class ProbeSettings:
    """Everything :func:`select_probe` needs besides the data (picklable, for the Ray engine)."""

    task_type: str
    n_classes: int
    Cs: tuple[float, ...]
    metric: str
    max_iter: int
    device: str
    #: names of the heads (classes or findings), so a head that does not converge is named
    head_names: tuple[str, ...] | None = None
    #: layers fitted together in one solver pass (``probe.layers_per_pass``)
    layers_per_pass: int = 1


@dataclass
class LayerFit:
    """What is kept of one layer fitted on one plan: enough to select and to score, no features."""

    layer: str
    fraction: float
    seed: int
    C: float
    val_score: float
    converged: bool
    test_scores: np.ndarray
    #: Cs (ascending) whose validation score ties the chosen one's (the chosen C included)
    tied_Cs: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0
    #: heads of the chosen C that did not meet tol (comma-separated names; empty when all did)
    unconverged: str = ""


def layer_stacks(layers: Sequence[str], has_language_model: bool) -> dict[str, str]:
    """``{layer: "lm" | "vision" | "main"}``: the stack each layer is selected within.

    Only a model with a language model (a VLM: its activations depend on a prompt) has two stacks;
    there ``vision.k`` layers are the vision encoder and every other layer the language model. A
    vision-only model (CLIP, an ONNX network) is one ``main`` stack whatever its layers are named.
    """
    if not has_language_model:
        return {layer: "main" for layer in layers}
    return {layer: "vision" if layer.startswith(VISION_PREFIX) else "lm" for layer in layers}


def stack_display_name(label: str, stack: str) -> str:
    """The backbone name result rows carry: vision-encoder rows are their own backbone row."""
    return f"{label} (vision)" if stack == "vision" else label


def tied_best(scores: Sequence[float]) -> list[int]:
    """Positions whose score is within :data:`TIE_TOLERANCE` of the best (the first is the best)."""
    values = np.asarray(scores, dtype=float)
    best = float(np.max(values))
    return [i for i, value in enumerate(values) if best - value <= TIE_TOLERANCE]


def validation_size_warning(labels: np.ndarray, task_type: str, classes: Sequence[str]) -> str | None:
    """A warning text when the validation split is too small to choose a layer and C reliably."""
    n = len(labels)
    if task_type == "multilabel":
        per_class = labels.sum(axis=0)
    else:
        per_class = np.bincount(labels, minlength=len(classes))
    scarce = [f"{name} ({int(count)})" for name, count in zip(classes, per_class) if count < MIN_VAL_PER_CLASS]
    problems = []
    if n < MIN_VAL_SAMPLES:
        problems.append(f"only {n} samples (< {MIN_VAL_SAMPLES})")
    if scarce:
        what = "positives" if task_type == "multilabel" else "samples"
        problems.append(f"fewer than {MIN_VAL_PER_CLASS} {what} for {', '.join(scarce)}")
    if not problems:
        return None
    return (f"the validation split has {'; '.join(problems)}: the chosen layer and C rest on very few samples "
            "and may be noise; use a larger validation split (probe.val_fraction) if you can")


def _complete_marker(cache: FeatureCache, layer: str) -> dict[str, Any]:
    if not cache.is_complete(layer):
        cache.load(layer)  # raises the cache's own "incomplete: resume the extraction" error
    return json.loads((cache.chunk_path(layer, 0).parent / "COMPLETE").read_text())


def layer_width(cache: FeatureCache, layer: str) -> int:
    """Feature width of a complete layer, from its marker (no features read)."""
    return int(_complete_marker(cache, layer)["dim"])


def layer_sample_ids(cache: FeatureCache, layers: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The cache's row order (sample ids that were read) and the skipped samples, without reading any
    features; every layer must have skipped the same samples, or their rows would not line up."""
    skipped = cache.skipped(layers[0])
    for layer in layers:
        marker = _complete_marker(cache, layer)
        if marker["skipped"] != skipped:
            raise CacheError(f"{cache.path}: layers {layers[0]!r} and {layer!r} skipped different samples; "
                             "delete the cache entry and extract again")
    left_out = {item["sample_id"] for item in skipped}
    return [sample_id for sample_id in cache.sample_ids if sample_id not in left_out], skipped


def has_language_model(cache: FeatureCache) -> bool:
    """Whether the cached backbone reads a language model (its features depend on a prompt): the
    HF vision-language backbones put their prompt into the fingerprint, vision-only ones have none."""
    return "prompt" in cache.meta["fingerprint"]["backbone"]


def read_layer_splits(cache: FeatureCache, layer: str, index: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One complete layer as float32 ``{split: (n_split, dim)}`` matrices, read chunk by chunk.

    ``index[split]`` are row positions in the cache's (post-skip) sample order, as
    :func:`medprobe.experiment.align_features` gives them. Rows go straight from each float16/32
    chunk into their split's matrix, so the whole layer is never held twice; the values are exactly
    ``cache.load(layer)[1][index[split]]``.
    """
    marker = _complete_marker(cache, layer)
    n_rows, dim = int(marker["n_samples"]), int(marker["dim"])
    destination_split = np.full(n_rows, -1, dtype=np.int64)
    destination_row = np.zeros(n_rows, dtype=np.int64)
    for number, split in enumerate(SPLITS):
        destination_split[index[split]] = number
        destination_row[index[split]] = np.arange(len(index[split]))
    out = {split: np.empty((len(index[split]), dim), dtype=np.float32) for split in SPLITS}
    start = 0
    for _, block in cache.iter_chunks(layer):  # each chunk checked against its checksum first
        if not len(block):  # every image of the chunk was skipped
            continue
        stop = start + len(block)
        if stop > n_rows:
            raise CacheError(f"layer {layer!r} of {cache.path}: chunks hold more rows than its COMPLETE marker says")
        for number, split in enumerate(SPLITS):
            here = destination_split[start:stop] == number
            if here.any():
                out[split][destination_row[start:stop][here]] = block[here]
        start = stop
    if start != n_rows:
        raise CacheError(f"layer {layer!r} of {cache.path}: chunks hold {start} rows, its COMPLETE marker {n_rows}")
    return out


def _rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]`` without a copy when ``rows`` is every row in order (the full fraction)."""
    if len(rows) == len(matrix) and np.array_equal(rows, np.arange(len(matrix))):
        return matrix
    return matrix[rows]


def fit_plans(features: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray], plans: Sequence[FitPlan],
              settings: ProbeSettings) -> dict[str, list[LayerFit]]:
    """Fit the probes of one or more layers (C chosen on val per layer) for every plan; keep val
    scores and test probabilities. ``features`` is ``{layer: {split: matrix}}``; several layers
    are fitted in one solver pass per plan (:func:`~medprobe.probes.selection.select_probes`)."""
    layers = list(features)
    fits: dict[str, list[LayerFit]] = {layer: [] for layer in layers}
    for plan in plans:
        started = time.perf_counter()
        X_train = [_rows(features[layer]["train"], plan.train_rows) for layer in layers]
        val_rows = np.arange(len(labels["val"])) if plan.val_rows is None else plan.val_rows
        X_val = [_rows(features[layer]["val"], val_rows) for layer in layers]
        with warnings.catch_warnings():
            # non-convergence at the extreme Cs of the grid is expected; it is recorded per row in
            # results.json ("converged") instead of flooding the terminal
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                selected = select_probes(
                    X_train, labels["train"][plan.train_rows], X_val, labels["val"][val_rows], settings.task_type,
                    Cs=list(settings.Cs), metric=settings.metric, max_iter=settings.max_iter, device=settings.device,
                    n_classes=settings.n_classes,
                    **({"head_names": list(settings.head_names)} if settings.head_names else {}),
                )
            except DataError as error:
                where = f"layer {layers[0]!r}" if len(layers) == 1 else f"layers {layers}"
                raise DataError(f"{where}, train fraction {plan.fraction}, seed {plan.seed}: {error}") from error
        del X_train, X_val
        seconds = (time.perf_counter() - started) / len(layers)
        for layer, (probe, table) in zip(layers, selected):
            chosen = table[table["selected"]].iloc[0]
            tied = [float(table["C"].iloc[i]) for i in tied_best(table["val_score"].to_numpy())]
            fits[layer].append(LayerFit(layer=layer, fraction=plan.fraction, seed=plan.seed, C=float(probe.C),
                                        val_score=float(chosen["val_score"]), converged=bool(chosen["converged"]),
                                        test_scores=probe.predict_proba(features[layer]["test"]), tied_Cs=tied,
                                        fit_seconds=seconds, unconverged=str(chosen.get("unconverged", "") or "")))
    return fits


def probe_layers(cache_path: str | Path, layers: Sequence[str], index: dict[str, np.ndarray],
                 labels: dict[str, np.ndarray], plans: Sequence[FitPlan],
                 settings: ProbeSettings) -> dict[str, list[LayerFit]]:
    """Read a pass of layers from the cache and fit them for every plan (the unit of work of both
    engines): ``{layer: [LayerFit per plan]}``. One layer per pass unless ``probe.layers_per_pass``
    asks for more -- memory then holds that many layers' features."""
    cache = FeatureCache(Path(cache_path))
    features = {layer: read_layer_splits(cache, layer, index) for layer in layers}
    return fit_plans(features, labels, plans, settings)


def layer_passes(layers: Sequence[str], layers_per_pass: int) -> list[list[str]]:
    """The layers in passes of at most ``layers_per_pass``, in order."""
    return [list(layers[start:start + layers_per_pass]) for start in range(0, len(layers), layers_per_pass)]


# ------------------------------------------------------------------------------ test probabilities
class SpilledScores:
    """Test probabilities of one probe kept in a ``.npy`` file; NumPy reads them back on every use
    (``np.asarray(scores)``, indexing), so they occupy memory only while being scored."""

    def __init__(self, store: "ScoreStore", path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._store = store  # keeps the temporary folder alive as long as any spilled scores are
        self.path, self.shape, self.dtype = path, shape, dtype
        self.ndim = len(shape)

    def load(self) -> np.ndarray:
        return np.load(self.path, allow_pickle=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.load()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.load()[key]

    def __len__(self) -> int:
        return self.shape[0]


class ScoreStore:
    """Keeps test probabilities in memory up to ``budget_bytes`` and spills the rest to a temporary
    folder (deleted when the last spilled array is gone). A paper-scale grid -- 81 layers x 19
    plans x 10k test images x 54 findings in float64 -- holds ~6 GB of them; spilled, memory keeps
    only what is being scored. Values are stored exactly (``.npy``, same dtype)."""

    def __init__(self, budget_bytes: float) -> None:
        self.budget_bytes = budget_bytes
        self.in_memory = 0
        self.spilled = 0
        self._folder: Path | None = None

    def keep(self, scores: np.ndarray) -> np.ndarray | SpilledScores:
        if self.in_memory + scores.nbytes <= self.budget_bytes:
            self.in_memory += scores.nbytes
            return scores
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="medprobe-scores-"))
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        path = self._folder / f"{self.spilled:07d}.npy"
        np.save(path, scores, allow_pickle=False)
        self.spilled += 1
        return SpilledScores(self, path, scores.shape, scores.dtype)


# ------------------------------------------------------------------------------ up-front estimate
#: effective floating-point work of one C of a warm-started L-BFGS path, per training sample x
#: feature x output: iterations x objective/gradient evaluations x two (n x D) @ (D x K) products,
#: plus standardising and scoring. Measured on the 2-core development machine at paper scale
#: (94,658 x 8,192 float16 cache, 54 findings, tol 1e-7): ~660 with one C (0.01; 185 s per layer)
#: and ~950 per C with the study's six (1e-4 ... 10, weak regularisation costs more; 1,175 s for
#: one layer, where 400 announced 496 s); 75-141 on three small synthetic problems at tol 1e-4
#: (benchmarks/calibrate_probe_estimate.py). The estimate is good to about 1.5x at paper scale;
#: small sigmoid problems, fitted by Newton's method, take far less
_FLOPS_PER_ROW_FEATURE_OUTPUT_AND_C = 750


@functools.lru_cache(maxsize=1)
def measured_flops() -> float:
    """Float32 matrix-product throughput of this process (FLOP/s), from a ~30 ms trial of the
    NumPy BLAS the CPU solver runs on, once per process (every backbone of a run shares it). The
    trial matrix is small (1 MiB: memory checks of the probe stage see it), and gives within ~5 %
    of the rate of a 4x larger one here."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 64), dtype=np.float32)
    a @ b  # warm-up
    started, repeats = time.perf_counter(), 0
    while time.perf_counter() - started < 0.03:
        a @ b
        repeats += 1
    return 2 * 256 * 1024 * 64 * repeats / (time.perf_counter() - started)


def grid_estimate(n_layers: int, dim: int, n_outputs: int, plans: Sequence[FitPlan], n_Cs: int,
                  flops: float) -> dict[str, Any]:
    """Fit count and a rough CPU time of the grid, before fitting anything."""
    rows = sum(len(plan.train_rows) for plan in plans)
    work = n_layers * rows * dim * n_outputs * n_Cs * _FLOPS_PER_ROW_FEATURE_OUTPUT_AND_C
    return {"layers": n_layers, "plans": len(plans), "Cs": n_Cs, "paths": n_layers * len(plans),
            "fits": n_layers * len(plans) * n_Cs, "estimated_seconds": work / flops}


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def n_outputs(task_type: str, n_classes: int) -> int:
    """Weight vectors a probe fits: one for binary, one per class / finding otherwise."""
    return 1 if task_type == "binary" else n_classes


__all__ = [
    "ScoreStore", "SpilledScores", "has_language_model", "layer_sample_ids", "layer_width", "FitPlan", "LayerFit", "ProbeSettings", "TIE_TOLERANCE", "fit_plans", "format_duration", "grid_estimate",
    "layer_passes", "layer_stacks", "measured_flops", "n_outputs", "probe_layers", "read_layer_splits", "stack_display_name",
    "tied_best", "validation_size_warning",
]
