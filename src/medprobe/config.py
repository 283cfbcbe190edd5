"""The run file: one YAML document describes a whole experiment.

Validated with pydantic so that a typo or a wrong type is reported with the path to the bad key
(``backbones.1.layers: ...``) instead of being ignored. Unknown keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medprobe.c_grid import check_Cs
from medprobe.errors import ConfigError

LayerSpec = int | str | list[int | str] | None


class Strict(BaseModel):
    """Base of every run-file section: unknown keys are errors, so that a misspelt option never passes silently."""

    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    #: adapter name: medmnist, image_folder, manifest, or a paper task (kather, pannuke, ...)
    """The run file's ``data`` section: which adapter reads the data set, from where, and how images are read."""

    adapter: str
    #: data root; relative paths in ``options`` are resolved against it. Default: $MEDPROBE_DATA_DIR
    root: str | None = None
    #: adapter keyword arguments (paths, flags, subsampling)
    options: dict[str, Any] = Field(default_factory=dict)
    #: what to do with an unreadable image: stop with a clear error, or skip it and list it
    on_error: Literal["raise", "skip"] = "raise"
    #: images larger than this are downsampled to fit (the study used 1024)
    max_image_size: int = Field(1024, ge=1)
    #: look for every listed image while building the table (rows without a file are excluded and
    #: listed); false builds it from the label files alone, e.g. for ``medprobe data`` without images
    check_files: bool = True


class BackboneConfig(Strict):
    #: registry name (``medprobe backbones``) or ``hf:<path>`` / ``onnx:<path>``
    """One entry of the run file's ``backbones`` list: the model to build, its options and the layers to probe."""

    name: str
    #: display name in results; lets one backbone appear twice with different options
    label: str | None = None
    #: backbone options: pooling, prompt, path, dtype, device_map, ...
    options: dict[str, Any] = Field(default_factory=dict)
    #: layers to probe: "all", an index (negative from the end), a name, "start:stop:step", or a list
    layers: LayerSpec = None
    batch_size: int | None = Field(None, ge=1)

    @property
    def display_name(self) -> str:
        return self.label or self.name


class ExtractionConfig(Strict):
    """The run file's ``extraction`` section: how features are computed and stored in the cache."""

    engine: Literal["local", "ray"] = "local"
    chunk_size: int = Field(256, ge=1)
    #: storage: float16 (default), float32, or uint8 -- the study's 8-bit per-feature affine codes
    #: (min and max of each feature over the whole layer; read back dequantised to float32)
    dtype: Literal["float16", "float32", "uint8"] = "float16"
    #: Ray only: number of model replicas and resources per replica
    num_workers: int = Field(1, ge=1)
    num_gpus_per_worker: float = Field(0.0, ge=0)
    num_cpus_per_worker: float = Field(1.0, gt=0)
    #: Ray only: cluster address (e.g. "ray://head:10001"); default $RAY_ADDRESS or a local instance
    ray_address: str | None = None
    #: seconds to wait for another run writing the same cache entry (0: fail at once); --wait-for-lock
    lock_wait_s: float = Field(0.0, ge=0)


class ProbeConfig(Strict):
    #: inverse L2 strengths tried; the best is chosen on the validation split (never on test)
    """The run file's ``probe`` section: the C grid, selection, label fractions, how probes are fitted and kept."""

    Cs: list[float] = Field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    #: validation metric for choosing C and the layer
    selection_metric: Literal["auc", "f1"] = "auc"
    #: fractions of the training labels to use (label efficiency); 1.0 = all
    train_fractions: list[float] = Field(default_factory=lambda: [1.0])
    #: seeds for the subsampled fractions (each gives its own result rows)
    seeds: list[int] = Field(default_factory=lambda: [0])
    #: when the data has no validation split: carve this fraction of train (grouped by patient)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    #: subsample the validation split like train at each fraction (same fraction, seed, grouping),
    #: so that 1 % of the training labels is not tuned on a full validation split
    val_follows_fraction: bool = False
    max_iter: int = Field(1000, ge=1)
    device: str = "auto"
    #: where the probe grid (layers x fractions x seeds) runs: this process, one layer at a time,
    #: or Ray tasks, one layer each, on the cluster of ``extraction.ray_address`` (the feature cache
    #: must be on a filesystem every node sees at the same path); both give identical results
    engine: Literal["local", "ray"] = "local"
    #: layers fitted together in one solver pass (all on the same samples): on a GPU the solver's
    #: per-iteration work is then shared by k layers; memory holds k layers' features instead of one.
    #: Results equal one layer per pass to within ``tol`` (the same optimum, other summation order)
    layers_per_pass: int = Field(1, ge=1)
    #: Ray only: passes fitted at once (each task holds one pass's features) and resources per task
    num_workers: int = Field(1, ge=1)
    num_cpus_per_worker: float = Field(1.0, gt=0)
    num_gpus_per_worker: float = Field(0.0, ge=0)
    #: per-sample test predictions written to predictions.parquet: the selected layers only, or
    #: also every layer (then partitioned under predictions_all/backbone=<name>/layer=<layer>/)
    predictions: Literal["selected", "all"] = "selected"
    #: test probabilities of the probes kept in memory until scored, in MiB; beyond this they wait
    #: in a temporary folder (exact values), so memory does not grow with layers x fractions x seeds
    scores_in_memory_mb: float = Field(1024.0, ge=0)
    #: probes written to the run folder's probes/ (safetensors + JSON, for ``medprobe predict``,
    #: ``medprobe.load_probe`` and ``medprobe export``): the selected layer of every backbone, stack,
    #: fraction and seed, or every layer's (whose arrays then count against scores_in_memory_mb)
    save: Literal["selected", "all"] = "selected"

    #: how each layer's probe is trained: medprobe's L2 logistic regression (standardised features,
    #: C chosen on validation), or the study's own recipes for reproducing it as it ran:
    #: "study" (torch nn.Linear on raw features, Adam, 80 epochs) and "study-clip" (its CLIP probe,
    #: scikit-learn's SGDClassifier); see medprobe.probes.study_recipes
    recipe: Literal["medprobe", "study", "study-clip"] = "medprobe"
    #: where the layer is chosen: on validation (default), or -- with a study recipe only, to
    #: reproduce the study -- on test (results carry "selected on test (optimistic)"); a study
    #: recipe that selects on test trains on every non-test image, as the study did
    layer_selection: Literal["validation", "test"] = "validation"
    #: fit several protocols on the same cached features: [medprobe, study] adds the study's (its
    #: recipe -- ``recipe`` if it names one, else "study" -- trained on every non-test image, layer
    #: picked on test) beside medprobe's, and the report measures the difference and its causes
    protocols: list[Literal["medprobe", "study"]] | None = None
    #: how a train fraction below 1 is drawn: stratified by class and grouped by patient (medprobe),
    #: or the study's uniform draw of int(fraction * n) images (``seeds: [1]`` is its one draw)
    train_sampling: Literal["medprobe", "study"] = "medprobe"

    @model_validator(mode="after")
    def _study_options(self) -> "ProbeConfig":
        if self.layer_selection == "test" and self.recipe == "medprobe":
            raise ValueError("layer_selection: test picks the layer on the test split; it is only for "
                             "reproducing the study (recipe: study or study-clip), never for medprobe's recipe")
        if self.protocols is not None:
            if not self.protocols or len(set(self.protocols)) != len(self.protocols):
                raise ValueError(f"protocols {self.protocols}: list each of medprobe, study at most once")
            if self.layer_selection == "test":
                raise ValueError("protocols: the study protocol always picks its layer on test and medprobe's on "
                                 "validation; drop layer_selection")
        return self

    @field_validator("train_fractions")
    @classmethod
    def _fractions_in_range(cls, value: list[float]) -> list[float]:
        for fraction in value:
            if not 0 < fraction <= 1:
                raise ValueError(f"train fraction {fraction} is not in (0, 1]")
        return value

    @field_validator("seeds")
    @classmethod
    def _some_seed(cls, value: list[int]) -> list[int]:
        """An empty list would silently drop every fraction below 1 (they are drawn once per seed)."""
        if not value:
            raise ValueError("seeds is empty: give at least one seed, e.g. [0, 1, 2]; each train fraction "
                             "below 1 is drawn once per seed (the full fraction uses the run's seed)")
        return value

    @field_validator("Cs")
    @classmethod
    def _valid_cs(cls, value: list[float]) -> list[float]:
        """The probes' own rule (:func:`medprobe.c_grid.check_Cs`), so a bad grid stops the run here."""
        try:
            return list(check_Cs(value))
        except ConfigError as error:  # pydantic reports ValueErrors with the field's path
            raise ValueError(str(error)) from None


class OperatingPointsConfig(Strict):
    #: thresholds reaching at least these validation sensitivities (the most specific such one)
    """Validation levels at which thresholds are chosen for the reported sensitivity / specificity."""

    sensitivity: list[float] = Field(default_factory=lambda: [0.9, 0.95])
    #: thresholds reaching at least these validation specificities (the most sensitive such one)
    specificity: list[float] = Field(default_factory=list)

    @field_validator("sensitivity", "specificity")
    @classmethod
    def _levels_in_range(cls, value: list[float]) -> list[float]:
        for level in value:
            if not 0 < level < 1:
                raise ValueError(f"operating-point level {level} is not in (0, 1)")
        return value


class StatsConfig(Strict):
    """The run file's ``stats`` section: bootstrap, paired tests and what the results report."""

    n_bootstrap: int = Field(1000, ge=10)
    #: what the bootstrap resamples. "patient": whole patients (all their images) whenever some
    #: test patient has several images, else images (the same thing then); "image": always images,
    #: the study's way, which treats a patient's images as independent (too narrow CIs)
    bootstrap_unit: Literal["patient", "image"] = "patient"
    #: two-sided paired tests: each backbone's best layer vs this one (display name)
    reference: str | None = None
    #: also DeLong's test for AUC differences (binary and per class; Obuchowski's clustered form
    #: when patients have several images)
    delong: bool = True
    #: report metrics per value of this sample-table column (e.g. organ)
    group_column: str | None = None
    #: several such columns (e.g. [sex, age_band, site]); rows are named <metric>@<column>=<value>
    group_columns: list[str] = Field(default_factory=list)
    #: equal-width probability bins of the calibration error (ECE) and reliability diagram
    calibration_bins: int = Field(10, ge=2, le=100)
    #: for reproducing the study only: its paired two-tailed t-test on bootstrap replicates. Not a
    #: valid test (its statistic grows with n_bootstrap); stored with a warning in comparisons.json
    paired_t_test: bool = False
    #: per-class rows (auc[c], f1[c]) in results.json for the selected probes only (compact at 81
    #: layers x 54 findings), or for every layer
    per_class_rows: Literal["selected", "all"] = "selected"
    #: operating points of binary tasks and of each finding of multi-label tasks, chosen on the
    #: validation split (Youden's J, and these sensitivity / specificity levels), reported with their
    #: test sensitivity, specificity, PPV and NPV in operating_points.json
    operating_points: OperatingPointsConfig = Field(default_factory=lambda: OperatingPointsConfig())


class RunConfig(Strict):
    """A whole run file, checked; every stage reads its settings from here."""

    name: str = "run"
    #: headline metric for figures and comparisons
    task_metric: Literal["auc", "f1_macro", "accuracy"] = "auc"
    seed: int = 0
    output_dir: str = "runs/run"
    #: feature cache root; default $MEDPROBE_CACHE_DIR or ~/.cache/medprobe/features
    cache_dir: str | None = None
    data: DataConfig
    backbones: list[BackboneConfig] = Field(min_length=1)
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    #: free text shown at the top of the report (data provenance, caveats)
    notes: str = ""

    @model_validator(mode="after")
    def _unique_labels(self) -> "RunConfig":
        names = [b.display_name for b in self.backbones]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"backbone names must be unique; give `label:` to tell {duplicated} apart")
        if self.stats.reference is not None and self.stats.reference not in names:
            raise ValueError(f"stats.reference {self.stats.reference!r} is not one of the backbones {names}")
        return self

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("MEDPROBE_CACHE_DIR")
        return Path(env).expanduser() if env else Path.home() / ".cache" / "medprobe" / "features"


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"invalid run file {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check spelling; see the run-file format in the README)"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Check an already-loaded run file (a mapping); ``source`` names it in the error, which lists every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid run file {source}: expected a mapping at the top level")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(source, error)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and check a YAML run file; a missing file or bad YAML is a :class:`ConfigError`, not a traceback."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"run file {path} is not valid YAML: {error}") from None
    return parse_config(data, str(path))
