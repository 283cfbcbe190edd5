"""Benchmarks that compare the naive way with medprobe's, measured side by side in one run.

Each module has ``run(quick) -> dict`` (used by ``medprobe bench``) and a ``main`` for
``python benchmarks/bench_<name>.py``. Absolute times depend on the machine; the ratios are the point.

:data:`BENCHMARKS` is the table ``medprobe bench`` reads: per benchmark, its module (imported only
when it runs) and how its result becomes rows of the summary table (``benchmark, baseline, baseline
result, medprobe, ratio, agreement``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from medprobe.errors import ConfigError

Row = tuple[str, str, str, str, str, str]


def _bootstrap_rows(result: dict[str, Any]) -> list[Row]:
    return [
        (result["name"], "loop over sklearn roc_auc_score", f"{result['naive_s']:.2f} s", f"{result['ours_s']:.3f} s",
         f"{result['ratio']:.1f}x", f"max |diff| {result['max_abs_diff']:.1e}"),
        (result["name"], "vectorised NumPy (sort once, draw counts)", f"{result['numpy_s']:.3f} s",
         f"{result['ours_s']:.3f} s", f"{result['ratio_vs_numpy']:.2f}x", f"max |diff| {result['max_abs_diff']:.1e}"),
    ]


def _probes_rows(result: dict[str, Any]) -> list[Row]:
    return [(result["name"], f"scikit-learn LogisticRegression(lbfgs, warm_start=True) up the C grid "
             f"({result['naive_threads']})", f"{result['naive_s']:.2f} s",
             f"{result['ours_s']:.2f} s", f"{result['ratio']:.1f}x",
             f"AUC {result['auc_naive']:.4f} vs {result['auc_ours']:.4f}")]


#: what each rung of the extraction ladder is measured against
_LADDER_BASELINES = {"stop": "study-style loop", "medprobe": "the same at batch 1", "bf16": "the same in fp32"}


def _extraction_rows(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [(result["name"], "study-style loop (batch 1, all hidden states)",
                        f"{result['study_images_per_s']:.1f} img/s", f"{result['medprobe_images_per_s']:.1f} img/s",
                        f"{result['ratio']:.1f}x", f"max |diff| {result['max_abs_diff_vs_study']:.1e}")]
    speeds = result["ladder_images_per_s"]
    for (step, factor), (before, after) in zip(result["factors"].items(), zip(speeds, list(speeds)[1:])):
        rows.append((f"  of which {step}", _LADDER_BASELINES[after], f"{speeds[before]:.1f} img/s",
                     f"{speeds[after]:.1f} img/s", f"{factor:.2f}x",
                     f"min cosine {result['bf16_min_cosine_vs_fp32']:.4f}" if after == "bf16" else ""))
    return rows


def _precision_rows(result: dict[str, Any]) -> list[Row]:
    onnx = result["onnx"]
    cosine = min(v["min_cosine"] for v in onnx["fidelity"].values())
    noise = max(v["standardised_noise"] for v in onnx["fidelity"].values())
    fp32, tuned = onnx["fp32"]["images_per_s"], onnx["tuned_onnxruntime"]["images_per_s"]
    rows: list[Row] = [
        ("onnx fp32 extraction", "tuned plain onnxruntime loop (all optimisations, threads = cores)",
         f"{tuned:.1f} img/s", f"{fp32:.1f} img/s", f"{fp32 / tuned:.2f}x", "same graph and inputs"),
        ("onnx int8 extraction", "the same backbone in fp32", f"{fp32:.1f} img/s",
         f"{onnx['int8']['images_per_s']:.1f} img/s", f"{result['onnx_ratio']:.2f}x",
         f"min cosine {cosine:.4f}, noise per standardised feature up to {noise:.2f}"),
    ]
    if "torch" in result:
        row = result["torch"]
        cosine = min(v["min_cosine"] for v in row["fidelity"].values())
        rows.append(("torch bf16 extraction", "the same backbone in fp32", f"{row['fp32']['images_per_s']:.1f} img/s",
                     f"{row['bf16']['images_per_s']:.1f} img/s", f"{result['torch_ratio']:.2f}x",
                     f"min cosine {cosine:.4f}"))
    else:
        peaks = result["torch_peak_gflops"]
        rows.append(("torch bf16 matrix product", "the same in fp32 (no bf16 units: extraction not run)",
                     f"{peaks['fp32']:.1f} GFLOP/s", f"{peaks['bf16']:.2f} GFLOP/s",
                     f"{result['torch_ratio']:.3f}x", ""))
    auto = result["auto"]
    rows.append(("precision chosen here", result["cpu"], f"fastest: torch {result['fastest']['torch']}, "
                 f"onnx {result['fastest']['onnx']}",
                 f"auto: torch {auto['torch']['value']}, onnx {auto['onnx']['value']}",
                 "", auto["onnx"]["reason"]))
    return rows


@dataclass(frozen=True)
class Benchmark:
    """One entry of ``medprobe bench``: the module with ``run(quick)`` and its summary rows."""

    module: str
    rows: Callable[[dict[str, Any]], list[Row]]

    def run(self, quick: bool) -> dict[str, Any]:
        return importlib.import_module(f"medprobe.bench.{self.module}").run(quick=quick)

    def check_inputs(self) -> None:
        """Raise now, with the module's own clear error, if something the benchmark reads is missing
        (a module without ``check_inputs`` reads nothing but what it generates)."""
        check = getattr(importlib.import_module(f"medprobe.bench.{self.module}"), "check_inputs", None)
        if check is not None:
            check()


def prepare(names: list[str]) -> str:
    """Check every named benchmark's inputs before any of them runs (a missing data file must not
    surface after minutes of the others), and return the header line: this machine's CPU and
    matrix units, which every speed figure depends on."""
    from medprobe.hardware import cpu_units

    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    for name in names:
        BENCHMARKS[name].check_inputs()
    return f"this machine: {cpu_units().describe()}"


#: ``medprobe bench`` runs these, in this order, unless ``--only`` names some
BENCHMARKS: dict[str, Benchmark] = {
    "bootstrap": Benchmark("bootstrap", _bootstrap_rows),
    "probes": Benchmark("probes", _probes_rows),
    "extraction": Benchmark("extraction", _extraction_rows),
    "precision": Benchmark("precision", _precision_rows),
}

__all__ = ["BENCHMARKS", "Benchmark", "prepare"]
