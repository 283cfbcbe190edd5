"""One experiment, end to end: data -> extract -> probe -> statistics -> outputs (:mod:`medprobe.stages`).

``run_experiment(config)`` is what ``medprobe run RUN.yaml`` calls. For every backbone it fills the
feature cache, fits a probe per layer for every train fraction and seed (C chosen on the validation
split), picks the layer with the best validation score per stack (a VLM's vision-encoder layers
form their own ``"<label> (vision)"`` row), then scores every probe on the test split with
bootstrap CIs on replicates all backbones share, and writes the outputs.

Outputs (``output_dir``): ``results.json``, ``predictions.parquet``, ``comparisons.json``,
``run.json`` (what produced the numbers) and ``report.html``. They are written into a staging
folder that replaces the output folder as a whole at the end (:mod:`medprobe.outputs`), so a killed
run never leaves new numbers next to an old report.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from medprobe.config import RunConfig
from medprobe.errors import DataError
from medprobe.outputs import build_report_as, staged_run_folder
from medprobe.probes.score_store import ScoreStore
from medprobe.run_checks import check_options
from medprobe.stages.data import Splits, load_data, report_skipped
from medprobe.stages.extract import extract_backbone
from medprobe.stages.outputs import RUN_FOLDER_OWNED, RunResults, prepare_output_dir, write_outputs
from medprobe.stages.protocols import probe_protocols
from medprobe.stages.statistics import score_run


def run_experiment(config: RunConfig, output_dir: str | Path | None = None, *, overwrite: bool = False,
                   show_progress: bool = True, cached_only: bool = False) -> Path:
    """Run the experiment a run file describes; returns the path of the HTML report.
    ``cached_only`` probes features already in the cache and refuses to extract."""
    check_options(config)
    final = Path(output_dir or config.output_dir)
    prepare_output_dir(final, overwrite)
    with staged_run_folder(final, RUN_FOLDER_OWNED) as staging:
        write_outputs(staging, config, run_stages(config, show_progress=show_progress, cached_only=cached_only))
        build_report_as(staging, final)
    return final / "report.html"


def run_stages(config: RunConfig, *, show_progress: bool = True, cached_only: bool = False) -> RunResults:
    """Data, then extraction and probes backbone by backbone, then statistics: what the outputs are
    written from. The test samples must be the same for every backbone (paired comparisons)."""
    started_at, started = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    dataset = load_data(config.data, val_fraction=config.probe.val_fraction, seed=config.seed)
    timings = {"load_data_s": round(time.perf_counter() - started, 3)}
    score_store = ScoreStore(config.probe.scores_in_memory_mb * 2**20)  # one memory budget for the whole run
    outcomes, backbones, warnings = [], [], []
    first: Splits | None = None
    for spec in config.backbones:
        features = extract_backbone(spec, dataset, config.extraction, config.resolved_cache_dir(),
                                    on_error=config.data.on_error, show_progress=show_progress,
                                    cached_only=cached_only)
        timings[f"extract[{spec.display_name}]_s"] = features.seconds
        probed = probe_protocols(config.probe, config.seed, dataset, features, score_store=score_store,
                                ray_address=config.extraction.ray_address, show_progress=show_progress,
                                earlier_warnings=warnings)
        timings.update(probed.timings)
        outcomes.extend(probed.outcomes)
        warnings.extend(probed.warnings)
        backbones.append(dict(features.info))
        if first is None:
            first = probed.splits
            report_skipped(first.skipped, config.data.on_error)
        elif probed.splits.test_ids() != first.test_ids():
            raise DataError(f"backbone {spec.display_name!r} saw different test samples than the others "
                            "(unreadable images differ?); paired comparisons would be invalid")
    assert first is not None  # a run file has at least one backbone
    scored = score_run(config, dataset, first.test_ids(), first.labels["test"], outcomes)
    timings["statistics_s"] = scored.seconds
    return RunResults(dataset, first.test_ids(), first.labels["test"], tuple(outcomes), scored.statistics, backbones,
                      first.skipped, warnings, timings, started_at, started)


__all__ = ["run_experiment", "run_stages"]
