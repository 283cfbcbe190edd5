"""One experiment, end to end: data -> activations -> probes -> statistics -> outputs.

``run_experiment(config)`` is what ``medprobe run RUN.yaml`` calls. For every backbone it fills the
feature cache, then -- one layer at a time, so memory holds one layer's features whatever the
grid (:mod:`medprobe.probes.grid`) -- fits a probe per layer for every train fraction and seed
(C chosen on the validation split), picks the layer with the best validation score (per stack:
a VLM's vision-encoder layers form their own ``"<label> (vision)"`` row), and evaluates every
probe on the test split with bootstrap CIs. All backbones are scored on the *same* bootstrap replicates of
the same test samples, which is what makes the paired comparisons valid; the replicates resample
test patients (all their images together) whenever a patient has several images.

Outputs (``output_dir``): ``results.json``, ``predictions.parquet``, ``comparisons.json``,
``run.json`` (what produced the numbers) and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import io
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

import medprobe
from medprobe.config import BackboneConfig, RunConfig, check_options
from medprobe.data.dataset import Dataset
from medprobe.data.loaders import load_dataset
from medprobe.errors import CacheError, ConfigError, DataError
from medprobe.features.cache import FeatureCache
from medprobe.features.extract import existing_cache, extract_features, other_dtype_entries
from medprobe.io import atomic_write_bytes, atomic_write_json
from medprobe.models.registry import create_backbone
from medprobe.plan import check_fits
from medprobe.probes.grid import (
    SPLITS,
    FitPlan,
    ScoreStore,
    SpilledScores,
    ProbeSettings,
    format_duration,
    grid_estimate,
    has_language_model,
    layer_passes,
    layer_sample_ids,
    layer_stacks,
    layer_width,
    measured_flops,
    n_outputs,
    probe_layers,
    stack_display_name,
    tied_best,
    validation_size_warning,
)
from medprobe.progress import console, progress_bar
from medprobe.stats import (
    REPLICATE_T_TEST_WARNING,
    add_adjusted_p_values,
    bootstrap_metrics,
    calibration_summary,
    compute_metrics,
    delong_test,
    paired_difference,
    per_group_metrics,
    ratio_intervals,
    resampling_plan,
    summarise,
    t_test_on_replicates,
)

OUTPUT_FILES = ("results.json", "predictions.parquet", "comparisons.json", "run.json", "report.html")
#: skipped images listed one by one on the console (all of them are in run.json and the report)
SKIPPED_SHOWN = 20


@dataclass
class ProbeOutcome:
    """One probe: a backbone layer trained on one train subset, scored on the test split."""

    backbone: str
    layer: str
    train_fraction: float
    seed: int
    C: float
    val_score: float
    test_scores: np.ndarray
    converged: bool = True
    selected: bool = False
    #: heads (classes / findings) of this probe that did not meet the solver's tol
    unconverged: str = ""
    #: training / validation samples the probe actually used (after the one-per-class top-up)
    n_train: int | None = None
    n_val: int | None = None
    #: the stack this layer was selected within: "lm" / "vision" for a VLM, "main" otherwise
    stack: str = "main"
    #: True when other layers (``tied_layers``) or Cs (``tied_Cs``) of this selection scored the same
    #: on validation: the pick among them went to the first (shallowest layer, smallest C)
    val_tie: bool = False
    tied_layers: list[str] = field(default_factory=list)
    tied_Cs: list[float] = field(default_factory=list)


@dataclass
class Splits:
    """Row positions (into the aligned feature matrix) and labels of each split."""

    ids: list[str]
    index: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    groups: np.ndarray
    skipped: list[dict[str, str]] = field(default_factory=list)


#: folder of every layer's predictions with ``probe.predictions: all``
ALL_PREDICTIONS = "predictions_all"


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def _versions() -> dict[str, str]:
    versions = {"medprobe": medprobe.__version__, "python": platform.python_version()}
    for package in ("numpy", "scikit-learn", "torch", "onnxruntime", "transformers", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


#: entries of a run folder that are medprobe's: replaced by a new run; every other entry is kept
RUN_FOLDER_OWNED = (*OUTPUT_FILES, "figures", "predictions_all")


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    """Never overwrite a previous run's results unless asked. First finishes or undoes the folder
    swap of a run that was killed (:func:`medprobe.outputs.recover`), so the check sees whole runs."""
    from medprobe.outputs import recover

    for note in recover(path, RUN_FOLDER_OWNED):
        console.print(f"[yellow]{note}[/]", highlight=False)
    existing = [name for name in OUTPUT_FILES if (path / name).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"output folder {path} already holds results ({', '.join(existing)}); "
            "pass --overwrite or choose another --out"
        )


def ensure_validation_split(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """Carve a validation split from train (grouped by patient) when the data set has none, so
    that C and the layer are never chosen on test."""
    if dataset.has_split("val"):
        return dataset
    from medprobe.data.splits import carve_validation

    table = dataset.samples.copy()
    table["split"] = carve_validation(
        table["split"].to_numpy(), dataset.labels(table), table["group"].to_numpy(), fraction=fraction, seed=seed
    )
    return dataclasses.replace(dataset, samples=table)  # every other field (selection rules too) kept


def check_test_split(dataset: Dataset) -> None:
    """Every class needs test positives (and negatives), or its AUC/F1 would be silently undefined."""
    test = dataset.split("test")
    labels = dataset.labels(test)
    dataset.split("train")
    if dataset.task_type == "multilabel":
        positives = labels.sum(axis=0)
        lacking = [c for c, p in zip(dataset.classes, positives) if p == 0 or p == len(labels)]
        what = "findings with no positive (or no negative) test samples"
    else:
        counts = np.bincount(labels, minlength=len(dataset.classes))
        lacking = [c for c, n in zip(dataset.classes, counts) if n == 0]
        what = "classes with no samples in the test split"
    if lacking:
        raise DataError(
            f"dataset {dataset.name!r}: {what}: {lacking}; their AUC would be undefined. "
            "Change the split or drop the class."
        )


def align_features(dataset: Dataset, ids: list[str], skipped: list[dict[str, str]]) -> Splits:
    """Map the cache's sample order to splits; samples whose image was skipped leave every split."""
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    table = dataset.samples[dataset.samples["sample_id"].astype(str).isin(position)]
    index, labels = {}, {}
    for split in ("train", "val", "test"):
        rows = table[table["split"] == split]
        if rows.empty:
            raise DataError(f"dataset {dataset.name!r}: split {split!r} is empty after skipping unreadable images")
        index[split] = np.array([position[str(s)] for s in rows["sample_id"]], dtype=np.int64)
        labels[split] = dataset.labels(rows)
    groups = np.empty(len(ids), dtype=object)
    groups[[position[str(s)] for s in table["sample_id"]]] = table["group"].to_numpy()
    return Splits(ids, index, labels, groups, skipped)


def check_train_classes(dataset: Dataset, y_train: np.ndarray, where: str) -> None:
    """A probe needs two classes in its training subset; say which class, fit and split it lacks
    (a small train fraction can leave only one class of a rare label)."""
    if dataset.task_type == "multilabel" or len(y_train) == 0:
        return
    present = np.unique(y_train)
    if len(present) < 2:
        names = [dataset.classes[int(k)] for k in present]
        raise DataError(f"{where}: the training split subset of {len(y_train)} image(s) has only class "
                        f"{names[0]!r} of {dataset.classes}; a probe needs at least 2 classes -- use a larger "
                        "train fraction or more labelled images of the other class(es)")


def report_skipped(skipped: list[dict[str, str]], on_error: str) -> None:
    """Say on the console which unreadable images ``on_error: skip`` left out (progress bars
    count them as done, so without this a skip would pass unnoticed)."""
    if not skipped:
        return
    lines = [f"  {entry.get('sample_id')} ({entry.get('source')}): {entry.get('error')}"
             for entry in skipped[:SKIPPED_SHOWN]]
    more = f"\n  ... and {len(skipped) - SKIPPED_SHOWN} more" if len(skipped) > SKIPPED_SHOWN else ""
    console.print(f"warning: skipped {len(skipped)} unreadable image(s) (data.on_error: {on_error}); they are "
                  "left out of every split and listed in run.json and the report:\n" + "\n".join(lines) + more,
                  highlight=False, markup=False, style="yellow")


def train_subset(splits: Splits, fraction: float, seed: int, split: str = "train") -> np.ndarray:
    """Indices into the train split (or ``split``, e.g. val with ``probe.val_follows_fraction``)
    of the samples used at this label fraction (stratified by class, grouped by patient)."""
    n_train = len(splits.index[split])
    if fraction >= 1.0:
        return np.arange(n_train)
    from medprobe.data.splits import subsample_train

    train_groups = splits.groups[splits.index[split]]
    return np.asarray(subsample_train(np.arange(n_train), splits.labels[split], train_groups, fraction, seed))


class Experiment:
    """Holds the state of one run; ``run()`` executes it and writes the outputs."""

    def __init__(self, config: RunConfig, output_dir: Path | None = None, *, overwrite: bool = False,
                 show_progress: bool = True, cached_only: bool = False) -> None:
        self.config = config
        self.cached_only = cached_only
        self.output_dir = Path(output_dir or config.output_dir)
        self.overwrite = overwrite
        self.show_progress = show_progress
        self.outcomes: list[ProbeOutcome] = []
        self.backbone_info: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.skipped: list[dict[str, str]] = []
        self.probe_warnings: list[str] = []
        self.score_store = ScoreStore(config.probe.scores_in_memory_mb * 2**20)

    # ------------------------------------------------------------------ stages
    def load_data(self) -> Dataset:
        started = time.perf_counter()
        dataset = load_dataset(self.config.data)
        dataset = ensure_validation_split(dataset, self.config.probe.val_fraction, self.config.seed)
        check_test_split(dataset)
        self.timings["load_data_s"] = round(time.perf_counter() - started, 3)
        return dataset

    def extract(self, spec: BackboneConfig, dataset: Dataset) -> tuple[FeatureCache, list[str]]:
        started = time.perf_counter()
        if not self.cached_only:  # a model that cannot fit stops here, before any weight is read
            check_fits(spec.name, spec.options, label=spec.display_name, layers=spec.layers)
        backbone = create_backbone(spec.name, **spec.options)
        try:
            layers = backbone.resolve_layers(spec.layers)
            extraction = self.config.extraction
            if self.cached_only:
                root = self.config.resolved_cache_dir()
                cache = existing_cache(backbone, dataset, root, extraction.dtype)
                absent = [layer for layer in layers if cache is None or not cache.is_complete(layer)]
                if absent:
                    others = other_dtype_entries(backbone, dataset, root, extraction.dtype)
                    hint = (f" (an entry stored in another dtype exists, {others[0]}, but the run file asks for "
                            f"{extraction.dtype} and features are never converted)" if others else "")
                    where = cache.path if cache is not None else root
                    raise CacheError(f"{spec.display_name}: layers {absent} are not in the {extraction.dtype} cache "
                                     f"{where}{hint}; run `medprobe extract RUN.yaml` first")
            elif extraction.engine == "ray":
                from medprobe.features.ray_engine import extract_features_ray

                cache = extract_features_ray(
                    spec.name, spec.options, dataset, layers, self.config.resolved_cache_dir(),
                    batch_size=spec.batch_size, chunk_size=extraction.chunk_size, dtype=extraction.dtype,
                    on_error=self.config.data.on_error, num_workers=extraction.num_workers,
                    num_gpus_per_worker=extraction.num_gpus_per_worker,
                    num_cpus_per_worker=extraction.num_cpus_per_worker, show_progress=self.show_progress,
                    ray_address=extraction.ray_address, lock_wait_s=extraction.lock_wait_s,
                )
            else:
                cache = extract_features(
                    backbone, dataset, layers, self.config.resolved_cache_dir(), batch_size=spec.batch_size,
                    chunk_size=extraction.chunk_size, dtype=extraction.dtype, on_error=self.config.data.on_error,
                    show_progress=self.show_progress, lock_wait_s=extraction.lock_wait_s,
                )
            self.backbone_info.append({
                "name": spec.name, "label": spec.display_name, "layers": layers,
                "fingerprint": cache.meta["fingerprint"]["backbone"], "cache_dir": str(cache.path),
                "cache_key": cache.meta["key"], "cache_dtype": cache.dtype_name,
                "provenance": getattr(backbone, "provenance", ""),
                "prompt": getattr(backbone, "prompt", None),
            })
        finally:
            backbone.close()
        self.timings[f"extract[{spec.display_name}]_s"] = round(time.perf_counter() - started, 3)
        return cache, layers

    def probe_backbone(self, spec: BackboneConfig, dataset: Dataset, cache: FeatureCache, layers: list[str]) -> Splits:
        """Fit and score a probe for every layer x fraction x seed; mark the val-selected layer of
        each stack. Layer by layer (see :mod:`medprobe.probes.grid`): one layer's features in
        memory at a time (``probe.layers_per_pass`` of them), whatever the number of layers,
        fractions and seeds."""
        started = time.perf_counter()
        probe_config = self.config.probe
        ids, skipped = layer_sample_ids(cache, layers)
        splits = align_features(dataset, ids, skipped)
        plans = []
        for fraction in probe_config.train_fractions:
            for seed in (probe_config.seeds if fraction < 1 else [self.config.seed]):
                train_rows = train_subset(splits, fraction, seed)
                check_train_classes(dataset, splits.labels["train"][train_rows],
                                    f"{spec.display_name}, train fraction {fraction:g}, seed {seed}")
                val_rows = (train_subset(splits, fraction, seed, "val") if probe_config.val_follows_fraction
                            else None)
                plans.append(FitPlan(fraction, seed, train_rows, val_rows))
        settings = ProbeSettings(dataset.task_type, len(dataset.classes), tuple(probe_config.Cs),
                                 probe_config.selection_metric, probe_config.max_iter, probe_config.device,
                                 tuple(dataset.classes) if dataset.task_type != "binary" else None,
                                 probe_config.layers_per_pass)
        self.announce_probe_grid(spec, dataset, cache, layers, plans)
        small = validation_size_warning(splits.labels["val"], dataset.task_type, dataset.classes)
        if small and small not in self.probe_warnings:
            self.warn(small)
        labels = {split: splits.labels[split] for split in SPLITS}
        if probe_config.engine == "ray":
            from medprobe.probes.ray_engine import probe_layers_ray

            fits = probe_layers_ray(
                cache.path, layers, splits.index, labels, plans, settings, num_workers=probe_config.num_workers,
                num_cpus_per_worker=probe_config.num_cpus_per_worker,
                num_gpus_per_worker=probe_config.num_gpus_per_worker, ray_address=self.config.extraction.ray_address,
                description=f"{spec.display_name}: probing on Ray, layers", show_progress=self.show_progress,
                keep=self.score_store.keep,
            )
        else:
            fits = {}
            with progress_bar(f"{spec.display_name}: probing {len(layers)} layer(s) x {len(plans)} plan(s), layers",
                              total=len(layers), enabled=self.show_progress) as advance:
                for members in layer_passes(layers, settings.layers_per_pass):
                    try:
                        fitted = probe_layers(cache.path, members, splits.index, labels, plans, settings)
                    except DataError as error:  # the probe names the problem; say which fit it was
                        raise DataError(f"{spec.display_name}: {error}") from None
                    for layer in members:
                        fits[layer] = fitted[layer]
                        for fit in fits[layer]:
                            fit.test_scores = self.score_store.keep(fit.test_scores)
                    advance(len(members))
        self.select_layers(spec, layers, plans, fits, has_language_model(cache), len(splits.index["val"]))
        self.timings[f"probe[{spec.display_name}]_s"] = round(time.perf_counter() - started, 3)
        return splits

    def announce_probe_grid(self, spec: BackboneConfig, dataset: Dataset, cache: FeatureCache, layers: list[str],
                            plans: list[FitPlan]) -> None:
        """Print the size of the probe grid and a rough time before fitting (``medprobe plan`` style)."""
        dim = layer_width(cache, layers[0])
        probe_config = self.config.probe
        estimate = grid_estimate(len(layers), dim, n_outputs(dataset.task_type, len(dataset.classes)), plans,
                                 len(probe_config.Cs), measured_flops())
        self.timings[f"probe_estimate[{spec.display_name}]_s"] = round(estimate["estimated_seconds"], 1)
        console.print(
            f"{spec.display_name}: {estimate['layers']} layer(s) x {estimate['plans']} (fraction, seed) plan(s) x "
            f"{estimate['Cs']} C = {estimate['fits']} probe fits ({estimate['paths']} C paths) on {dim}-dim "
            f"features, engine {probe_config.engine}; roughly {format_duration(estimate['estimated_seconds'])} of "
            "single-process CPU time", highlight=False)

    def select_layers(self, spec: BackboneConfig, layers: list[str], plans: list[FitPlan],
                      fits: dict[str, list[Any]], has_lm: bool, n_val_split: int) -> None:
        """Turn the fits into outcomes (fraction/seed-major, layer order) and mark the best layer of
        each stack on validation; report validation ties instead of hiding them."""
        stacks = layer_stacks(layers, has_lm)
        ties: dict[str, list[str]] = {}
        for number, plan in enumerate(plans):
            candidates = []
            for layer in layers:
                fit = fits[layer][number]
                candidates.append(ProbeOutcome(
                    stack_display_name(spec.display_name, stacks[layer]), layer, plan.fraction, plan.seed, fit.C,
                    fit.val_score, fit.test_scores, converged=fit.converged, unconverged=fit.unconverged,
                    stack=stacks[layer],
                    tied_Cs=fit.tied_Cs if len(fit.tied_Cs) > 1 else [], n_train=len(plan.train_rows),
                    n_val=n_val_split if plan.val_rows is None else len(plan.val_rows)))
            for stack in dict.fromkeys(stacks[layer] for layer in layers):
                members = [outcome for outcome in candidates if outcome.stack == stack]
                scores = [outcome.val_score for outcome in members]
                best = members[int(np.argmax(scores))]  # the first of equal maxima
                best.selected = True
                if isinstance(best.test_scores, SpilledScores):  # compared and written many times
                    best.test_scores = best.test_scores.load()
                tied = [members[i].layer for i in tied_best(scores)]
                if len(tied) > 1:
                    best.tied_layers = tied
                best.val_tie = bool(best.tied_layers or best.tied_Cs)
                if best.val_tie:
                    what = (f"layers {tied}" if best.tied_layers else "") + (" and " if best.tied_layers and
                                                                                best.tied_Cs else "")
                    what += f"Cs {best.tied_Cs} of layer {best.layer}" if best.tied_Cs else ""
                    ties.setdefault(best.backbone, []).append(
                        f"fraction {plan.fraction}, seed {plan.seed}: {what}")
            self.outcomes.extend(candidates)
        for backbone, where in ties.items():
            self.warn(f"{backbone}: validation ties in {len(where)} of {len(plans)} selection(s) -- the first "
                      f"(shallowest layer, smallest C) was taken; rows carry val_tie. {'; '.join(where[:3])}"
                      + (" ..." if len(where) > 3 else ""))

    def warn(self, message: str) -> None:
        """A warning the user must see (also with --quiet), kept for the run's record."""
        self.probe_warnings.append(message)
        console.print(f"[yellow]warning:[/] {message}", highlight=False)

    # -------------------------------------------------------------- statistics
    def score(self, dataset: Dataset, test_ids: list[str], y_test: np.ndarray) -> tuple[list[dict], list[dict]]:
        """results.json and comparisons.json rows. Every SD, CI and paired test uses one set of
        replicates, drawn over the test *patients* when some have several images (see
        :func:`medprobe.stats.resampling_plan`), so both models of a comparison share them."""
        stats_config = self.config.stats
        patients = self.test_column(dataset, test_ids, "group")
        indices, unit = resampling_plan(patients, len(y_test), stats_config.n_bootstrap, self.config.seed,
                                        stats_config.bootstrap_unit)
        self.resampling = unit
        # point values and replicates of every metric of each selected probe, kept for the paired
        # tests and label efficiency (the same replicates, never recomputed)
        self.selected_replicates: dict[tuple[str, float, int], tuple[dict, dict]] = {}
        self.statistics_warnings: list[str] = []
        rows: list[dict[str, Any]] = []
        for outcome in self.outcomes:
            point = compute_metrics(y_test, outcome.test_scores, dataset.task_type, dataset.classes)
            if not outcome.selected and stats_config.per_class_rows == "selected":
                # a layer the sweep did not select keeps its summary metrics (the layer-sweep
                # figure's data); per-class rows would multiply results.json by the class count
                point = {metric: value for metric, value in point.items() if "[" not in metric}
            replicates = bootstrap_metrics(y_test, outcome.test_scores, dataset.task_type, dataset.classes, indices,
                                           metrics=list(point))
            if outcome.selected:
                key = (outcome.backbone, outcome.train_fraction, outcome.seed)
                self.selected_replicates[key] = (point, replicates)
            for metric, value in point.items():
                rows.append(self.result_row(outcome, metric, summarise(value, replicates[metric]), len(y_test)))
        rows.extend(self.calibration_rows(dataset, y_test, indices))
        rows.extend(self.group_rows(dataset, test_ids, y_test))
        self.warn_unconverged()
        comparisons = self.compare(dataset, y_test, patients)
        return rows, comparisons

    @staticmethod
    def test_column(dataset: Dataset, test_ids: list[str], column: str) -> np.ndarray:
        """``column`` of the sample table for the test samples, in ``test_ids`` order."""
        if column not in dataset.samples.columns:
            raise ConfigError(f"stats: {column!r} is not a column of the sample table "
                              f"(columns: {list(dataset.samples.columns)})")
        by_id = dataset.samples.set_index(dataset.samples["sample_id"].astype(str))[column]
        return by_id.loc[test_ids].to_numpy(dtype=object)

    def warn_unconverged(self) -> None:
        """A selected probe whose solver stopped at max_iter: said on the console and in run.json."""
        for outcome in self.outcomes:
            if outcome.selected and not outcome.converged:
                message = (f"selected probe did not converge: {outcome.backbone} layer {outcome.layer} "
                           f"(train fraction {outcome.train_fraction}, seed {outcome.seed}, C={outcome.C:g})"
                           + (f", heads {outcome.unconverged}" if outcome.unconverged else "")
                           + "; raise probe.max_iter or check feature scaling")
                self.statistics_warnings.append(message)
                console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def calibration_rows(self, dataset: Dataset, y_test: np.ndarray, indices: Any) -> list[dict[str, Any]]:
        """ECE with CI and reliability-bin data (``metric="ece"``) for every selected probe."""
        rows = []
        for outcome in (o for o in self.outcomes if o.selected):
            summary = calibration_summary(y_test, outcome.test_scores, dataset.task_type, dataset.classes, indices,
                                          n_bins=self.config.stats.calibration_bins)
            row = self.result_row(outcome, "ece", summary, len(y_test))
            row.update({key: summary[key] for key in ("calibrated", "n_bins", "reliability")})
            rows.append(row)
        return rows

    def group_rows(self, dataset: Dataset, test_ids: list[str], y_test: np.ndarray) -> list[dict[str, Any]]:
        """Task metric per value of ``stats.group_column`` / each of ``stats.group_columns`` (e.g.
        per organ, sex, site), selected layers only, resampling patients within each group.
        Named ``<metric>@<value>`` for ``group_column`` and ``<metric>@<column>=<value>`` otherwise."""
        stats_config = self.config.stats
        columns = ([(stats_config.group_column, False)] if stats_config.group_column else []) + \
            [(column, True) for column in stats_config.group_columns]
        if not columns:
            return []
        patients = self.test_column(dataset, test_ids, "group")
        rows = []
        for column, qualified in columns:
            groups = self.test_column(dataset, test_ids, column)
            for outcome in (o for o in self.outcomes if o.selected):
                for row in per_group_metrics(y_test, outcome.test_scores, groups, dataset.task_type, dataset.classes,
                                             metrics=[self.config.task_metric], n_replicates=stats_config.n_bootstrap,
                                             seed=self.config.seed, patients=patients,
                                             bootstrap_unit=stats_config.bootstrap_unit):
                    label = f"{column}={row['group']}" if qualified else row["group"]
                    name = f"{row['metric']}@{label}"
                    result = self.result_row(outcome, name, row, row["n"])
                    result.update(group_column=column, group=row["group"], bootstrap_unit=row["bootstrap_unit"],
                                  n_units=row["n_units"])
                    rows.append(result)
        return rows

    def result_row(self, outcome: ProbeOutcome, metric: str, summary: dict[str, Any], n_test: int) -> dict[str, Any]:
        """One results.json row: a probe's metric with its bootstrap summary and resampling unit."""
        return {
            "task": self.config.name, "backbone": outcome.backbone, "layer": outcome.layer,
            "train_fraction": outcome.train_fraction, "seed": outcome.seed, "metric": metric,
            "value": summary["value"], "sd": summary["sd"], "ci_low": summary["ci_low"],
            "ci_high": summary["ci_high"], "n_test": int(n_test),
            "n_bootstrap_dropped": int(summary["n_dropped"]),
            **getattr(self, "resampling", {"bootstrap_unit": None, "n_units": None}),
            "selected": outcome.selected, "C": outcome.C, "val_score": outcome.val_score,
            "converged": outcome.converged, "unconverged_heads": outcome.unconverged or None,
            "n_train": outcome.n_train, "n_val": outcome.n_val,
            "stack": outcome.stack, "val_tie": outcome.val_tie, "tied_layers": outcome.tied_layers,
            "tied_Cs": outcome.tied_Cs,
        }

    def compare(self, dataset: Dataset, y_test: np.ndarray, patients: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Paired tests of each backbone's selected layer against the reference backbone.

        Per pair: the paired bootstrap on the task metric and, for multi-class / multi-label
        tasks, on each class's AUC (or F1); DeLong (clustered when patients have several images)
        on the AUC, per class where there are several; optionally the study's replicate t-test.
        ``p_holm`` / ``p_bh`` adjust each family of per-class rows (same pair, fraction, seed,
        test and metric kind) for multiplicity; a headline row is a family of one."""
        names = [b.display_name for b in self.config.backbones]
        reference = self.config.stats.reference or (names[0] if len(names) > 1 else None)
        if reference is None:
            return []
        metric = self.config.task_metric
        unit = {"bootstrap_unit": self.resampling["bootstrap_unit"], "n_units": self.resampling["n_units"]}
        per_class = {"auc": "auc", "f1_macro": "f1"}.get(metric) if dataset.task_type != "binary" else None
        selected = {(o.backbone, o.train_fraction, o.seed): o for o in self.outcomes if o.selected}
        comparisons = []
        for (backbone, fraction, seed), outcome in sorted(selected.items()):
            other = selected.get((reference, fraction, seed))
            if backbone == reference or other is None:
                continue
            base = {"task": self.config.name, "train_fraction": fraction, "seed": seed,
                    "backbone_a": backbone, "layer_a": outcome.layer, "backbone_b": reference, "layer_b": other.layer}
            pair = (self.selected_replicates[(backbone, fraction, seed)],
                    self.selected_replicates[(reference, fraction, seed)])
            headline = {**base, **self.paired_bootstrap_row(pair, metric), **unit}
            comparisons.append(headline)
            for name in [f"{per_class}[{c}]" for c in dataset.classes] if per_class else []:
                comparisons.append({**base, **self.paired_bootstrap_row(pair, name), **unit})
            if self.config.stats.paired_t_test:
                test = t_test_on_replicates(pair[0][1][metric], pair[1][1][metric], metric)
                comparisons.append({**base, "metric": metric, "test": "replicate_t_test", "diff": headline["diff"],
                                    "ci_low": None, "ci_high": None, **test, **unit})
            if self.config.stats.delong:
                comparisons.extend({**base, **row} for row in self.delong_rows(dataset, y_test, outcome, other,
                                                                                patients))
        return add_adjusted_p_values(comparisons)

    @staticmethod
    def paired_bootstrap_row(pair: tuple[tuple[dict, dict], tuple[dict, dict]], metric: str) -> dict[str, Any]:
        """One paired-bootstrap comparison from both probes' ``(point, replicates)`` on the shared
        replicates; an undefined metric is a row with a note, not an error."""
        (point_a, replicates_a), (point_b, replicates_b) = pair
        try:
            test = paired_difference(point_a[metric], point_b[metric], replicates_a[metric], replicates_b[metric],
                                     metric)
        except DataError as error:
            return {"metric": metric, "test": "paired_bootstrap", "diff": None, "ci_low": None, "ci_high": None,
                    "p_value": None, "note": str(error)}
        return {"metric": metric, "test": "paired_bootstrap",
                **{k: float(test[k]) for k in ("diff", "ci_low", "ci_high", "p_value")},
                "n_bootstrap_dropped": int(test["n_dropped"])}

    def delong_rows(self, dataset: Dataset, y_test: np.ndarray, a: ProbeOutcome, b: ProbeOutcome,
                    patients: np.ndarray | None) -> list[dict[str, Any]]:
        """DeLong rows: the positive class for binary tasks, every class (one-vs-rest) otherwise.
        A class DeLong cannot serve (too few positives or negatives) is a row with a note; the
        macro AUC of a multi-class task is not a single AUC, which a row says as well."""
        clustered = patients if self.resampling["bootstrap_unit"] == "patient" else None
        if dataset.task_type == "binary":
            targets = [("auc", y_test, 1)]
        else:
            truth = (y_test if dataset.task_type == "multilabel"
                     else y_test[:, None] == np.arange(len(dataset.classes)))
            targets = [(f"auc[{c}]", truth[:, k].astype(int), k) for k, c in enumerate(dataset.classes)]
        rows = []
        for metric, labels, column in targets:
            try:
                result = delong_test(labels, a.test_scores[:, column], b.test_scores[:, column], patients=clustered)
            except DataError as error:
                rows.append({"metric": metric, "test": "delong", "diff": None, "ci_low": None, "ci_high": None,
                             "p_value": None, "note": f"DeLong not applicable: {error}"})
                continue
            rows.append({"metric": metric, "test": "delong", "method": result["method"],
                         **{k: float(result[k]) for k in ("diff", "ci_low", "ci_high", "p_value", "z")},
                         "bootstrap_unit": "patient" if result["method"] == "obuchowski" else "image"})
        if dataset.task_type != "binary" and self.config.task_metric == "auc":
            rows.append({"metric": "auc", "test": "delong", "diff": None, "ci_low": None, "ci_high": None,
                         "p_value": None, "note": "DeLong compares one AUC; the macro AUC is compared by the "
                                                  "paired bootstrap, the classes by the per-class DeLong rows"})
        return rows

    def label_efficiency(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Task metric per train fraction and its share of the full-data value, with CIs.

        ``value_mean`` / ``value_sd``: mean and SD (ddof=1; None with one seed) over seeds.
        ``fraction_of_full`` = mean over seeds / full-data value; ``chance_corrected_ratio`` =
        (mean AUC - 0.5) / (full AUC - 0.5) for AUC task metrics. Their CIs are percentile
        intervals of a two-level bootstrap: replicate r re-draws the test patients (the shared
        replicates of all rows) and the seeds (S of the S seeds, with replacement), and takes the
        ratio of the drawn seeds' mean on replicate r to the full-data value on replicate r; so
        the CI holds test-set and seed-to-seed variation, and the correlation between the
        numerator and the denominator (same test patients). ``n_train`` / ``n_val``: the sizes
        actually used (after the one-per-class top-up), per seed and their mean."""
        metric = self.config.task_metric
        frame = pd.DataFrame([r for r in rows if r["selected"] and r["metric"] == metric])
        if frame.empty or frame["train_fraction"].nunique() < 2:
            return []
        replicates = {key: kept[1][metric] for key, kept in getattr(self, "selected_replicates", {}).items()}
        rng = np.random.default_rng(self.config.seed)
        summary = []
        for backbone, part in frame.groupby("backbone", sort=False):
            full_rows = part[part["train_fraction"] == 1.0]
            full = float(full_rows["value"].mean()) if len(full_rows) else float("nan")
            full_replicates = [replicates[(backbone, 1.0, int(s))] for s in full_rows["seed"]
                               if (backbone, 1.0, int(s)) in replicates]
            full_r = np.mean(full_replicates, axis=0) if full_replicates else None
            for fraction, at in part.groupby("train_fraction"):
                values = at["value"].to_numpy(dtype=float)
                entry: dict[str, Any] = {
                    "backbone": backbone, "train_fraction": float(fraction), "value_mean": float(values.mean()),
                    "value_sd": float(values.std(ddof=1)) if values.size > 1 else None, "n_seeds": int(values.size),
                    "seeds": [int(s) for s in at["seed"]],
                    "n_train": [None if n is None or n != n else int(n) for n in at["n_train"]],
                    "n_val": [None if n is None or n != n else int(n) for n in at["n_val"]],
                    "fraction_of_full": float(values.mean() / full) if full == full else None,
                    "chance_corrected_ratio": (float((values.mean() - 0.5) / (full - 0.5))
                                               if metric == "auc" and full == full and full != 0.5 else None),
                }
                known = [n for n in entry["n_train"] if n is not None]
                entry["n_train_mean"] = float(np.mean(known)) if known else None
                seed_replicates = [replicates.get((backbone, float(fraction), int(s))) for s in at["seed"]]
                if full_r is not None and all(r is not None for r in seed_replicates):
                    entry.update(ratio_intervals(np.stack(seed_replicates), full_r, metric == "auc", rng))
                summary.append(entry)
        return summary

    def statistics_summary(self) -> dict[str, Any]:
        """run.json ``statistics``: how the uncertainty was computed, and warnings to show."""
        resampling = getattr(self, "resampling", {"bootstrap_unit": None, "n_units": None})
        return {**resampling, "n_bootstrap": self.config.stats.n_bootstrap,
                "bootstrap_unit_requested": self.config.stats.bootstrap_unit,
                "ci": "percentile, 95 %", "multiplicity": "Holm and Benjamini-Hochberg across classes",
                "paired_t_test_warning": REPLICATE_T_TEST_WARNING if self.config.stats.paired_t_test else None,
                "warnings": list(getattr(self, "statistics_warnings", []))}

    # ------------------------------------------------------------------ outputs
    def write_predictions(self, dataset: Dataset, test_ids: list[str], y_test: np.ndarray) -> None:
        """predictions.parquet: per-sample test scores of the val-selected layers. With
        ``probe.predictions: all`` every layer's are also written, one file per backbone and layer
        under ``predictions_all/`` (hive-partitioned: ``pd.read_parquet`` reads the folder as one
        table), so no single table of layers x plans x samples rows is ever built in memory."""
        selected = [outcome for outcome in self.outcomes if outcome.selected]
        write_parquet(self.output_dir / "predictions.parquet",
                      pd.concat([self.prediction_frame(dataset, test_ids, y_test, o) for o in selected],
                                ignore_index=True))
        if self.config.probe.predictions != "all":
            return
        folder = self.output_dir / ALL_PREDICTIONS
        if folder.exists():
            if not self.overwrite:
                raise ConfigError(f"{folder} already holds predictions; pass --overwrite or choose another --out")
            shutil.rmtree(folder)
        by_layer: dict[tuple[str, str], list[ProbeOutcome]] = {}
        for outcome in self.outcomes:
            by_layer.setdefault((outcome.backbone, outcome.layer), []).append(outcome)
        for (backbone, layer), outcomes in by_layer.items():
            frame = pd.concat([self.prediction_frame(dataset, test_ids, y_test, o) for o in outcomes],
                              ignore_index=True).drop(columns=["backbone", "layer"])
            path = folder / f"backbone={quote(backbone, safe='')}" / f"layer={quote(layer, safe='')}" / "part-0.parquet"
            write_parquet(path, frame)

    @staticmethod
    def prediction_frame(dataset: Dataset, test_ids: list[str], y_test: np.ndarray,
                         outcome: ProbeOutcome) -> pd.DataFrame:
        frame = pd.DataFrame({"sample_id": test_ids})
        frame["backbone"], frame["layer"] = outcome.backbone, outcome.layer
        frame["train_fraction"], frame["seed"] = outcome.train_fraction, outcome.seed
        if dataset.task_type == "multilabel":
            for k, name in enumerate(dataset.classes):
                frame[f"true[{name}]"] = y_test[:, k]
        else:
            frame["y_true"] = y_test
        scores = np.asarray(outcome.test_scores)  # one read of spilled scores
        for k, name in enumerate(dataset.classes):
            frame[f"score[{name}]"] = scores[:, k]
        return frame

    def run(self) -> Path:
        """Run every stage; the outputs are written into a staging folder that replaces the output
        folder as a whole at the end (:mod:`medprobe.outputs`), so a killed run never leaves new
        numbers next to an old report. Returns the report's path."""
        from medprobe.outputs import build_report_as, staged_run_folder

        check_options(self.config)
        prepare_output_dir(self.output_dir, self.overwrite)
        final = self.output_dir
        with staged_run_folder(final, RUN_FOLDER_OWNED) as staging:
            self.output_dir = staging  # every writer below targets the staging folder
            try:
                self.run_stages()
                build_report_as(staging, final)
            finally:
                self.output_dir = final
        return final / "report.html"

    def run_stages(self) -> None:
        """Data, extraction, probes and statistics; writes every output but the report."""
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        started = time.perf_counter()
        dataset = self.load_data()
        test_reference: tuple[list[str], np.ndarray] | None = None
        for spec in self.config.backbones:
            cache, layers = self.extract(spec, dataset)
            splits = self.probe_backbone(spec, dataset, cache, layers)
            test_ids = [splits.ids[i] for i in splits.index["test"]]
            if test_reference is None:
                test_reference = (test_ids, splits.labels["test"])
                self.skipped = splits.skipped
                report_skipped(splits.skipped, self.config.data.on_error)
            elif test_ids != test_reference[0]:
                raise DataError(f"backbone {spec.display_name!r} saw different test samples than the others "
                                "(unreadable images differ?); paired comparisons would be invalid")
        assert test_reference is not None
        test_ids, y_test = test_reference
        scoring_started = time.perf_counter()
        rows, comparisons = self.score(dataset, test_ids, y_test)
        self.timings["statistics_s"] = round(time.perf_counter() - scoring_started, 3)
        atomic_write_json(self.output_dir / "results.json", rows)
        atomic_write_json(self.output_dir / "comparisons.json", comparisons)
        self.write_predictions(dataset, test_ids, y_test)
        self.timings["total_s"] = round(time.perf_counter() - started, 3)
        atomic_write_json(self.output_dir / "run.json", self.run_summary(dataset, rows, started_at))

    def run_summary(self, dataset: Dataset, rows: list[dict], started_at: str) -> dict[str, Any]:
        counts = {}
        for split in ("train", "val", "test"):
            part = dataset.samples[dataset.samples["split"] == split]
            labels = dataset.labels(part)
            per_class = labels.sum(axis=0) if dataset.task_type == "multilabel" else np.bincount(
                labels, minlength=len(dataset.classes))
            counts[split] = {c: int(n) for c, n in zip(dataset.classes, per_class)}
        prompts = {b["prompt"] for b in self.backbone_info if b.get("prompt")}
        return {
            "name": self.config.name, "task": self.config.name, "task_type": dataset.task_type,
            "classes": dataset.classes, "task_metric": self.config.task_metric,
            "data": {"adapter": self.config.data.adapter, "root": str(dataset.root) if dataset.root else None,
                     "name": dataset.name, "description": dataset.description,
                     "n_samples": {s: int((dataset.samples["split"] == s).sum()) for s in ("train", "val", "test")},
                     "class_counts": counts},
            "backbones": self.backbone_info,
            "prompt": "; ".join(sorted(prompts)) if prompts else None,
            "seed": self.config.seed, "n_bootstrap": self.config.stats.n_bootstrap,
            "probe": self.config.probe.model_dump(), "versions": _versions(),
            "skipped": self.skipped, "excluded": dataset.excluded,
            "started": started_at, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings": self.timings, "notes": self.config.notes,
            "label_efficiency": self.label_efficiency(rows),
            "statistics": self.statistics_summary(),
            "probe_warnings": self.probe_warnings,
            "command": " ".join(sys.argv),
            "config": self.config.model_dump(),
        }


def run_experiment(config: RunConfig, output_dir: str | Path | None = None, *, overwrite: bool = False,
                   show_progress: bool = True, cached_only: bool = False) -> Path:
    """Run the experiment a run file describes; returns the path of the HTML report.
    ``cached_only`` probes features already in the cache and refuses to extract."""
    return Experiment(config, Path(output_dir) if output_dir else None, overwrite=overwrite,
                      show_progress=show_progress, cached_only=cached_only).run()


__all__ = ["run_experiment", "Experiment", "prepare_output_dir"]
