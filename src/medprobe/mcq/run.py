"""The ``medprobe mcq RUN.yaml`` run: load cases and a model, answer, score, write outputs.

Outputs (in the run's output folder): ``mcq_results.json`` (summary), ``mcq_cases.csv`` (every
answer), ``mcq_strata.png`` / ``.svg`` (accuracy by difficulty, as in the study's Fig. 1f).
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medprobe.errors import ConfigError
from medprobe.mcq.answer import MCQModel, answer_by_generation, answer_by_loglik
from medprobe.mcq.cases import MCQCase, load_cases
from medprobe.mcq.evaluate import CASES_CSV, RESULTS_JSON, accuracy_row, summarize, write_outputs
from medprobe.mcq.prompts import build_conversation, default_instruction, select_shots
from medprobe.mcq.records import CaseResult
from medprobe.progress import progress_bar

OUTPUT_FILES = (RESULTS_JSON, CASES_CSV)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MCQModelConfig(_Strict):
    #: ``hf:<folder-or-hub-id>`` for a Hugging Face VLM, or an IDEFICS v1 preset (``idefics-9b-instruct``, ...)
    name: str
    #: local folder overriding the preset's location (weights already downloaded)
    path: str | None = None
    #: weights dtype; null = bfloat16 on a GPU, float32 on the CPU
    dtype: Literal["bfloat16", "float16", "float32"] | None = None
    #: passed to ``from_pretrained`` ("auto" spreads a large model over the GPUs)
    device_map: str | None = None
    #: "8bit" / "4bit" (bitsandbytes) to fit a large model, e.g. idefics-80b-instruct on one GPU
    quantization: Literal["8bit", "4bit"] | None = None
    trust_remote_code: bool = False


class MCQRunConfig(_Strict):
    name: str = "mcq"
    #: a cases.jsonl file or a folder holding one
    cases: str
    #: options per case (NEJM Image Challenge: 5)
    n_options: int = Field(5, ge=2, le=26)
    model: MCQModelConfig
    #: number of earliest cases used as shots, or their ids; shots are not scored
    shots: int | list[str] = 2
    #: show each shot's explanation as "Reason: ..." after its answer
    include_reason: bool = True
    #: label options 1..n (default) or A..E
    option_labels: Literal["numbers", "letters"] = "numbers"
    #: task statement opening the prompt; null = the default, "" = none
    instruction: str | None = None
    method: Literal["loglik", "generate"] = "loglik"
    #: loglik: rank options by mean (length-normalised, primary) or summed log-probability
    score: Literal["mean", "sum"] = "mean"
    #: loglik: options scored per forward pass
    batch_size: int = Field(5, ge=1)
    #: generate: greedy (deterministic, one try) or sampled (temperature / top_k, n_tries seeds)
    decoding: Literal["greedy", "sample"] = "greedy"
    n_tries: int = Field(1, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(50, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    seed: int = 0
    #: long image side is reduced to this before the processor sees it
    max_image_size: int = Field(1024, ge=16)
    #: CI level for every accuracy
    ci_level: float = Field(0.95, gt=0, lt=1)
    output_dir: str = "runs/mcq"

    @model_validator(mode="after")
    def _consistent(self) -> "MCQRunConfig":
        if self.n_tries > 1 and not (self.method == "generate" and self.decoding == "sample"):
            raise ValueError("n_tries > 1 needs method: generate and decoding: sample "
                             "(greedy decoding and log-likelihood give the same answer every try)")
        return self


def parse_mcq_config(data: Any, source: str = "<dict>") -> MCQRunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid MCQ run file {source}: expected a mapping at the top level")
    try:
        return MCQRunConfig.model_validate(data)
    except ValidationError as error:
        lines = [f"invalid MCQ run file {source}:"]
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "(top level)"
            message = "unknown key (check spelling)" if item["type"] == "extra_forbidden" else item["msg"]
            lines.append(f"  {where}: {message}")
        raise ConfigError("\n".join(lines)) from None


def load_mcq_config(config: str | Path | dict[str, Any]) -> tuple[MCQRunConfig, Path]:
    """The validated config and the folder relative paths in it are resolved against (the run
    file's folder, or the working directory for a dict)."""
    if isinstance(config, dict):
        return parse_mcq_config(config), Path.cwd()
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"MCQ run file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"MCQ run file {path} is not valid YAML: {error}") from None
    return parse_mcq_config(data, str(path)), path.resolve().parent


def model_source(spec: MCQModelConfig, base: Path) -> str:
    """Where the weights are: ``path`` if given (relative to the run file), else the folder or hub
    id after ``hf:``, else the hub id a preset name stands for."""
    if spec.path:
        path = Path(spec.path).expanduser()
        return str(path if path.is_absolute() else base / path)
    if spec.name.startswith("hf:"):
        source = spec.name[3:]
        relative = base / source
        return str(relative) if not Path(source).is_absolute() and relative.is_dir() else source
    from medprobe.models.hf import IDEFICS_PRESETS

    if spec.name not in IDEFICS_PRESETS:
        raise ConfigError(f"model.name {spec.name!r} is not a known VLM preset ({', '.join(IDEFICS_PRESETS)}); "
                          "use hf:<folder-or-hub-id> for any other Hugging Face VLM")
    return IDEFICS_PRESETS[spec.name]


def load_model(spec: MCQModelConfig, base: Path) -> MCQModel:
    """Load the VLM and its processor with the shared Hugging Face loader (local files only,
    safetensors, no remote code unless asked); IDEFICS v1 gets its own model class."""
    from medprobe.models.hf_loading import load_hf_model, model_type_of

    source = model_source(spec, base)
    kind = "idefics" if model_type_of(source) == "idefics" else "auto"
    loaded = load_hf_model(source, kind=kind, dtype=spec.dtype, device_map=spec.device_map,
                           quantization=spec.quantization, trust_remote_code=spec.trust_remote_code)
    return MCQModel(loaded.model, loaded.processor, spec.name)


def answer_cases(mcq: MCQModel, shots: list[MCQCase], queries: list[MCQCase], config: MCQRunConfig,
                 show_progress: bool = True) -> list[CaseResult]:
    """Answer every query case after the shots, the way ``config`` says."""
    lettered = config.option_labels == "letters"
    instruction = (default_instruction(lettered, config.include_reason)
                   if config.instruction is None else config.instruction)
    results: list[CaseResult] = []
    with progress_bar(f"MCQ {config.method} ({mcq.name})", len(queries), enabled=show_progress) as advance:
        for case in queries:
            turns = build_conversation(shots, case, lettered=lettered, include_reason=config.include_reason,
                                       instruction=instruction, max_image_size=config.max_image_size)
            if config.method == "loglik":
                results.append(answer_by_loglik(mcq, case, turns, lettered=lettered, score=config.score,
                                                batch_size=config.batch_size))
            else:
                results += answer_by_generation(
                    mcq, case, turns, lettered=lettered, max_new_tokens=config.max_new_tokens,
                    n_tries=config.n_tries, sample=config.decoding == "sample", seed=config.seed,
                    temperature=config.temperature, top_k=config.top_k)
            advance(1)
    return results


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("medprobe", "torch", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def run_mcq(config_path_or_dict: str | Path | dict[str, Any], out_dir: str | Path | None = None,
            overwrite: bool = False, *, show_progress: bool = True, mcq_model: MCQModel | None = None) -> Path:
    """Run a multiple-choice evaluation and return the output folder.

    ``out_dir`` overrides the run file's ``output_dir``. An existing result is never overwritten
    unless ``overwrite``. ``mcq_model`` skips loading (an already-loaded model, e.g. in tests or
    notebooks); the run file's ``model.name`` is still what the results are labelled with.
    """
    config, base = load_mcq_config(config_path_or_dict)
    out = Path(out_dir) if out_dir is not None else base / config.output_dir
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"output folder {out} already holds results ({', '.join(existing)}); "
                          "pass --overwrite or choose another output folder")
    cases_location = Path(config.cases).expanduser()
    cases = load_cases(cases_location if cases_location.is_absolute() else base / cases_location,
                       n_options=config.n_options)
    shots, queries = select_shots(cases, config.shots)
    mcq = mcq_model if mcq_model is not None else load_model(config.model, base)
    results = answer_cases(mcq, shots, queries, config, show_progress=show_progress)

    extra: dict[str, Any] = {
        "name": config.name,
        "shot_ids": [case.id for case in shots],
        "n_options": config.n_options,
        "chance": 1 / config.n_options,
        "config": config.model_dump(),
        "versions": _versions(),
    }
    if config.method == "loglik":
        extra["score"] = config.score
        # both rankings from the same forward passes, so the choice of primary score is visible
        extra["accuracy_by_score"] = {
            score: accuracy_row([_argmax(r.logprob_mean if score == "mean" else r.logprob_sum) == r.correct_index
                                 for r in results], config.ci_level)
            for score in ("mean", "sum")
        }
    else:
        extra["decoding"] = config.decoding
        extra["n_tries"] = config.n_tries
    summary = summarize(results, model=config.model.name, method=config.method, n_shots=len(shots),
                        level=config.ci_level, extra=extra)
    write_outputs(out, results, summary, chance=1 / config.n_options)
    return out
