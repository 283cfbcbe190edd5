"""A saved probe, ready to classify new images: ``medprobe.load_probe(RUN_DIR)``.

Why the backbone is checked against the probe: a probe's weights are meaningless on features of
another model, another pooling, prompt or preprocessing, and nothing in the numbers would say so.
The probe's JSON records the feature-cache fingerprint of the run (model file hash / revision,
pooling, prompt, preprocessing, ...); the backbone built now must give the same fingerprint, or
every difference is named in an error (``allow_mismatch=True`` overrides it, and the difference
is kept in :attr:`LoadedProbe.mismatches` and in every prediction table).

Features are rounded to the dtype the run stored them in (``extraction.dtype``, float16 by
default) before the probe sees them, as the run's own features were: the probe then gives the
run's scores for the run's images (rounding is idempotent, so features read from the cache are
unchanged by it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medprobe.data.images import preprocess, preprocessing_fingerprint, read_image
from medprobe.errors import ConfigError, DataError, ImageReadError, ModelError
from medprobe.features.cache import DTYPES
from medprobe.models.base import Backbone
from medprobe.models.registry import create_backbone
from medprobe.probes.saved import read_index, read_probe
from medprobe.progress import progress_bar

PROBES_FOLDER = "probes"
#: what ``predict`` does without --threshold on tasks that have operating points
DEFAULT_OPERATING_POINT = "youden"


def fingerprint_differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Each key path where two fingerprints differ: ``"backbone.pooling: the probe's 'cls', now 'mean'"``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [difference for key in sorted(set(expected) | set(actual), key=str)
                for difference in fingerprint_differences(expected.get(key), actual.get(key),
                                                          f"{where}.{key}" if where else str(key))]
    if expected == actual:
        return []
    return [f"{where or 'fingerprint'}: the probe's {expected!r}, now {actual!r}"]


def pick_probe(run_dir: Path, backbone: str | None = None, fraction: float | None = None, seed: int | None = None,
               layer: str | None = None) -> Path:
    """The JSON file of the saved probe these choices name (see :func:`load_probe`)."""
    folder = Path(run_dir) / PROBES_FOLDER
    entries = read_index(folder)
    if layer is None:
        entries = [e for e in entries if e["selected"]]
    else:
        entries = [e for e in entries if e["layer"] == layer]
    if backbone is not None:
        entries = [e for e in entries if e["backbone_row"] == backbone]
    if fraction is not None:
        entries = [e for e in entries if abs(float(e["train_fraction"]) - fraction) < 1e-12]
    elif entries:
        largest = max(float(e["train_fraction"]) for e in entries)
        entries = [e for e in entries if float(e["train_fraction"]) == largest]
    if seed is not None:
        entries = [e for e in entries if int(e["seed"]) == seed]
    elif entries:
        entries = [e for e in entries if int(e["seed"]) == min(int(o["seed"]) for o in entries)]
    if len(entries) != 1:
        available = sorted({(e["backbone_row"], e["layer"], e["train_fraction"], e["seed"])
                            for e in read_index(folder) if layer is not None or e["selected"]})
        listed = "; ".join(f"--backbone {b!r} --fraction {f:g} --seed {s} (layer {lay})" for b, lay, f, s in available)
        what = "no saved probe matches" if not entries else f"{len(entries)} saved probes match"
        hint = " -- name one with --backbone" if len({e['backbone_row'] for e in entries}) > 1 else ""
        raise DataError(f"{run_dir}: {what} the choice{hint}. Saved probes: {listed}")
    return folder / entries[0]["json_file"]


class LoadedProbe:
    """A saved probe with its backbone: ``predict_proba`` / ``predict`` on images (paths or
    arrays), ``predict_proba_features`` on feature arrays (scikit-learn's conventions: rows are
    samples, columns ``classes_``).

    Attributes: ``record`` (the probe's JSON), ``classes_``, ``task_type``, ``layer``,
    ``mismatches`` (fingerprint differences accepted with ``allow_mismatch``), ``operating_points``
    (``{finding: {name: threshold}}``, chosen on the run's validation split).
    """

    def __init__(self, json_path: str | Path, *, backbone_options: dict[str, Any] | None = None,
                 allow_mismatch: bool = False) -> None:
        self.path = Path(json_path)
        self.record, self.weights = read_probe(self.path)
        self.task_type: str = self.record["task_type"]
        self.classes_ = np.asarray(self.record["classes"], dtype=object)
        self.layer: str = self.record["layer"]
        self.operating_points: dict[str, dict[str, float]] = self.record.get("operating_points") or {}
        self.probe = self.weights.probe(self.task_type)
        self.backbone_options = {**self.record["backbone"]["options"], **(backbone_options or {})}
        self.allow_mismatch = allow_mismatch
        self.mismatches: list[str] = []
        self._backbone: Backbone | None = None
        if self.record.get("feature_dtype") not in DTYPES:
            raise DataError(f"{self.path}: unknown feature dtype {self.record.get('feature_dtype')!r}")

    # ------------------------------------------------------------ backbone
    @property
    def backbone(self) -> Backbone:
        """The backbone, built on first use and checked against the probe's fingerprint."""
        return self.build_backbone() if self._backbone is None else self._backbone

    def build_backbone(self, preprocessing: dict[str, Any] | None = None) -> Backbone:
        """Build the backbone and check it with the image ``preprocessing`` fingerprint of the images
        it will see (default: medprobe's reader at the run's ``data.max_image_size``)."""
        if self._backbone is None:
            self._backbone = create_backbone(self.record["backbone"]["name"], **self.backbone_options)
        self.check_fingerprint({"backbone": self._backbone.fingerprint(),
                                "preprocessing": preprocessing or preprocessing_fingerprint(self.max_image_size)})
        return self._backbone

    @property
    def max_image_size(self) -> int:
        return int(self.record.get("max_image_size") or 1024)

    def check_fingerprint(self, fingerprint: dict[str, Any]) -> None:
        """Refuse features whose fingerprint differs from the probe's (each difference named), unless
        ``allow_mismatch``; then the differences are kept in :attr:`mismatches`."""
        expected = self.record["cache_fingerprint"]
        differences = fingerprint_differences(expected, json.loads(json.dumps(fingerprint, default=str)))
        if differences and not self.allow_mismatch:
            raise ModelError(
                f"backbone {self.record['backbone']['name']!r} does not give the features probe {self.path.name} was "
                f"trained on:\n  " + "\n  ".join(differences)
                + "\nUse the same model file, revision, prompt, pooling and preprocessing, or pass --allow-mismatch "
                  "(allow_mismatch=True) to predict anyway; the output then says so")
        self.mismatches = differences

    def close(self) -> None:
        if self._backbone is not None:
            self._backbone.close()

    # ------------------------------------------------------------ features
    def round_features(self, features: np.ndarray) -> np.ndarray:
        """Features as the run stored them: rounded to its cache dtype, as float32."""
        dtype = DTYPES[self.record["feature_dtype"]]
        with np.errstate(over="ignore"):
            return np.asarray(features, dtype=np.float32).astype(dtype).astype(np.float32)

    def extract(self, images: Sequence[Callable[[], np.ndarray]], *, names: Sequence[str] | None = None,
                on_error: str = "raise", show_progress: bool = False) -> tuple[np.ndarray, list[int], list[dict]]:
        """Features of the probe's layer for images given as loaders (each returns a preprocessed
        image); returns ``(features, positions of the images read, skipped)``. An unreadable image
        stops with its name, or (``on_error="skip"``) is left out and listed."""
        backbone = self.backbone
        batch_size = int(self.record["backbone"].get("batch_size") or backbone.default_batch_size)
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        parts, kept, skipped = [], [], []
        with progress_bar(f"{backbone.name}: layer {self.layer}", total=len(images),
                          enabled=show_progress and len(images) > batch_size) as advance:
            for start in range(0, len(images), batch_size):
                batch = []
                for position in range(start, min(start + batch_size, len(images))):
                    try:
                        batch.append(images[position]())
                    except ImageReadError as error:
                        if on_error != "skip":
                            raise DataError(f"{names[position]}: {error}. Fix or remove the file, or pass "
                                            "--on-error skip to skip and list unreadable images") from error
                        skipped.append({"sample_id": names[position], "error": str(error)})
                        continue
                    kept.append(position)
                if batch:
                    parts.append(np.asarray(backbone.extract(batch, [self.layer])[self.layer], dtype=np.float32))
                advance(min(batch_size, len(images) - start))
        if not parts:
            raise DataError("none of the images could be read")
        return self.round_features(np.concatenate(parts)), kept, skipped

    def _loaders(self, images: Sequence[str | Path | np.ndarray]) -> list[Callable[[], np.ndarray]]:
        size = self.max_image_size
        return [lambda image=image: preprocess(read_image(image), size) for image in images]

    # ------------------------------------------------------------ scikit-learn style
    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes)`` from features of the probe's layer (rounded as the run's were)."""
        return self.probe.predict_proba(self.round_features(features))

    def predict_proba(self, images: Sequence[str | Path | np.ndarray]) -> np.ndarray:
        """Probabilities ``(n, classes)`` of images given as paths or arrays (an unreadable one is an error)."""
        if isinstance(images, (str, Path, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        features, _, _ = self.extract(self._loaders(list(images)))
        return self.predict_proba_features(features)

    def thresholds(self, operating_point: str | float | None) -> np.ndarray | None:
        """One threshold per finding (binary: the positive class) for ``operating_point`` -- a name
        (``youden``, ``sens90``, ...), a number -- or None (the most probable class / 0.5)."""
        if operating_point is None:
            return None
        if self.task_type == "multiclass":
            raise ConfigError("a multi-class probe has no operating points: its decision is the most probable class")
        names = [str(self.classes_[1])] if self.task_type == "binary" else [str(c) for c in self.classes_]
        try:
            value = float(operating_point)
        except (TypeError, ValueError):
            value = None
        if value is not None:
            if not 0 <= value <= 1:
                raise ConfigError(f"threshold {value} is not a probability in [0, 1]")
            return np.full(len(names), value)
        known = sorted({name for points in self.operating_points.values() for name in points})
        if operating_point not in known:
            raise ConfigError(f"unknown operating point {operating_point!r}; this probe has {known or 'none'} "
                              "(chosen on validation), or give a number")
        missing = [name for name in names if name not in self.operating_points]
        if missing:
            raise ConfigError(f"findings {missing} have no operating point (no positive or no negative validation "
                              "sample); give a numeric threshold")
        return np.asarray([self.operating_points[name][operating_point] for name in names])

    def decide(self, probabilities: np.ndarray, operating_point: str | float | None = None) -> np.ndarray:
        """Decisions from probabilities: class names (binary / multi-class) or a 0/1 matrix (multi-label)."""
        limits = self.thresholds(operating_point)
        if self.task_type == "multilabel":
            return (probabilities >= limits if limits is not None else probabilities > 0.5).astype(np.int64)
        if self.task_type == "binary" and limits is not None:
            return self.classes_[(probabilities[:, 1] >= limits[0]).astype(int)]
        return self.classes_[np.argmax(probabilities, axis=1)]  # ties to the lower index, as LinearProbe.predict

    def predict(self, images: Sequence[str | Path | np.ndarray],
                operating_point: str | float | None = None) -> np.ndarray:
        """Class names (or a 0/1 finding matrix) of images, at ``operating_point`` if given."""
        return self.decide(self.predict_proba(images), operating_point)


def load_probe(run_dir: str | Path, backbone: str | None = None, fraction: float | None = None,
               seed: int | None = None, *, layer: str | None = None, backbone_options: dict[str, Any] | None = None,
               allow_mismatch: bool = False) -> LoadedProbe:
    """A probe the run at ``run_dir`` saved, ready for new images.

    ``backbone`` is a result row's backbone (its label; ``"<label> (vision)"`` for a VLM's vision
    stack) and may be left out when the run has one; ``fraction`` defaults to the largest train
    fraction, ``seed`` to the smallest seed; ``layer`` (with ``probe.save: all``) picks another
    layer than the selected one. ``backbone_options`` override the run's (e.g. ``path`` of a moved
    model file); a backbone whose features would differ from the run's is refused unless
    ``allow_mismatch``.
    """
    return LoadedProbe(pick_probe(Path(run_dir), backbone, fraction, seed, layer),
                       backbone_options=backbone_options, allow_mismatch=allow_mismatch)


__all__ = ["DEFAULT_OPERATING_POINT", "LoadedProbe", "fingerprint_differences", "load_probe", "pick_probe"]
