"""The ``medprobe mcq RUN.yaml`` run: load cases and a model, answer, score, write outputs.

Outputs (in the run's output folder): ``mcq_results.json`` (summary), ``mcq_cases.csv`` (every
answer), ``mcq_strata.png`` / ``.svg`` (accuracy by difficulty, as in the study's Fig. 1f) and,
with ``order_robustness``, ``mcq_order.csv`` (every re-answered case). They are written into a
staging folder that replaces the output folder as a whole (:mod:`medprobe.staging`), as a probe
run's are: a killed run never leaves new answers next to an old figure. The staging folder is made
before the first case is answered, so an output folder that cannot be written is said at once.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medprobe.errors import ConfigError
from medprobe.io import atomic_write_text
from medprobe.mcq.answer import MCQModel, answer_by_generation, answer_by_loglik
from medprobe.mcq.cases import MCQCase, load_cases
from medprobe.mcq.evaluate import CASES_CSV, FIGURE_STEM, RESULTS_JSON, accuracy_row, summarize, write_outputs
from medprobe.mcq.prompts import Turn, build_conversation, default_instruction, select_shots
from medprobe.mcq.records import CaseResult
from medprobe.mcq.robustness import order_robustness
from medprobe.progress import console, progress_bar
from medprobe.staging import recover, staged_run_folder

ORDER_CSV = "mcq_order.csv"
OUTPUT_FILES = (RESULTS_JSON, CASES_CSV, ORDER_CSV)
#: what an MCQ run replaces in its output folder (every other entry is carried over, never deleted)
MCQ_FOLDER_OWNED = (*OUTPUT_FILES, f"{FIGURE_STEM}.png", f"{FIGURE_STEM}.svg")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MCQModelConfig(_Strict):
    #: ``hf:<folder-or-hub-id>`` for a Hugging Face VLM, or an IDEFICS v1 preset (``idefics-9b-instruct``, ...)
    """The MCQ run file's ``model`` section: which VLM answers, where its weights are and how it is loaded."""

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


class OrderRobustnessConfig(_Strict):
    #: seeded random orders of each case's options (0 = none)
    """The MCQ order-robustness check: option permutations and shot swaps, to see if answers follow order."""

    permutations: int = Field(3, ge=0)
    #: answer once more with the shots in reverse order
    swap_shots: bool = True


class MCQRunConfig(_Strict):
    """A whole MCQ run file (``medprobe mcq``), checked: cases, model, prompt, scoring method and outputs."""

    name: str = "mcq"
    #: a cases.jsonl file or a folder holding one
    cases: str
    #: options per case (NEJM Image Challenge: 5)
    n_options: int = Field(5, ge=2, le=26)
    model: MCQModelConfig
    #: number of earliest cases used as shots, or their ids; shots are not scored
    shots: int | list[str] = 2
    #: study = the study's IDEFICS prompt (IDEFICS v1 only); chat = instruction, "Answer: <n>. <option>";
    #: null = study for IDEFICS v1 models (the presets), chat for the others
    prompt_style: Literal["study", "chat"] | None = None
    #: how each case's text is laid out: its vignette, question and numbered options (default), or
    #: "study-figure": question, "Choices:" and numbered options, as the study's figure shows a case
    case_text: Literal["vignette", "study-figure"] = "vignette"
    #: chat style: show each shot's explanation as "Reason: ..." after its answer (null = yes)
    include_reason: bool | None = None
    #: chat style: label options 1..n (default) or A..E
    option_labels: Literal["numbers", "letters"] = "numbers"
    #: chat style: task statement opening the prompt; null = the default, "" = none
    instruction: str | None = None
    method: Literal["loglik", "generate"] = "loglik"
    #: loglik: rank options by mean (length-normalised, primary) or summed log-probability
    score: Literal["mean", "sum"] = "mean"
    #: loglik: score the option text (primary) or "<label>. <option text>"
    loglik_target: Literal["option", "labelled"] = "option"
    #: loglik: options scored per forward pass
    batch_size: int = Field(5, ge=1)
    #: generate: sampled tries after the primary greedy answer, read as "correct within n tries"
    n_tries: int = Field(0, ge=0)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(50, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    seed: int = 0
    #: re-answer with permuted options / swapped shots (null = off)
    order_robustness: OrderRobustnessConfig | None = None
    #: long image side is reduced to this before the processor sees it
    max_image_size: int = Field(1024, ge=16)
    #: CI level for every accuracy
    ci_level: float = Field(0.95, gt=0, lt=1)
    output_dir: str = "runs/mcq"

    @model_validator(mode="after")
    def _consistent(self) -> "MCQRunConfig":
        if self.n_tries > 0 and self.method != "generate":
            raise ValueError("n_tries > 0 (sampled tries) needs method: generate "
                             "(log-likelihood scoring gives the same answer every try)")
        if self.prompt_style == "study":
            unused = [f"{key}: {value!r}" for key, value, off in (
                ("include_reason", self.include_reason, (None, False)), ("instruction", self.instruction, (None, "")),
                ("option_labels", self.option_labels, ("numbers",)),
                ("loglik_target", self.loglik_target, ("option",))) if value not in off]
            if unused:
                raise ValueError(f"prompt_style: study is the study's own prompt (no instruction, no reasons, "
                                 f"numbered options, answers as option text); drop {', '.join(unused)} or use "
                                 "prompt_style: chat")
        return self


def parse_mcq_config(data: Any, source: str = "<dict>") -> MCQRunConfig:
    """Check an already-loaded MCQ run file; retired keys and every bad key are named in a :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid MCQ run file {source}: expected a mapping at the top level")
    if "decoding" in data:
        raise ConfigError(f"invalid MCQ run file {source}: 'decoding' is gone -- method: generate now always gives "
                          "the greedy primary answer and n_tries sampled tries (temperature, top_k) in the same "
                          "run; remove 'decoding' and set n_tries (0 = greedy only)")
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
    from medprobe.models.records import vlm_presets

    presets = vlm_presets()
    if spec.name not in presets:
        raise ConfigError(f"model.name {spec.name!r} is not a known VLM preset ({', '.join(presets)}); "
                          "use hf:<folder-or-hub-id> for any other Hugging Face VLM")
    return presets[spec.name].source


def load_model(spec: MCQModelConfig, base: Path, prompt_style: Literal["study", "chat"] | None = None) -> MCQModel:
    """Load the VLM and its processor with the shared Hugging Face loader (local files only,
    safetensors, no remote code unless asked); IDEFICS v1 gets its own model class."""
    from medprobe.models.hf_loading import load_hf_model, model_type_of

    source = model_source(spec, base)
    kind = "idefics" if model_type_of(source) == "idefics" else "auto"
    loaded = load_hf_model(source, kind=kind, dtype=spec.dtype, device_map=spec.device_map,
                           quantization=spec.quantization, trust_remote_code=spec.trust_remote_code)
    return MCQModel(loaded.model, loaded.processor, spec.name, prompt_style=prompt_style)


def conversation(mcq: MCQModel, shots: Sequence[MCQCase], case: MCQCase, config: MCQRunConfig) -> list[Turn]:
    """The prompt for one case in the model's prompt style, with the run file's chat settings."""
    lettered = config.option_labels == "letters"
    include_reason = config.include_reason is not False
    instruction = (default_instruction(lettered, include_reason) if config.instruction is None
                   else config.instruction)
    return build_conversation(shots, case, style=mcq.style, lettered=lettered, include_reason=include_reason,
                              instruction=instruction, max_image_size=config.max_image_size,
                              case_layout=config.case_text)


def answer_case(mcq: MCQModel, shots: Sequence[MCQCase], case: MCQCase, config: MCQRunConfig,
                n_tries: int = 0) -> list[CaseResult]:
    """The primary answer to one case (try 0) and, for generation, ``n_tries`` sampled tries."""
    lettered = config.option_labels == "letters" and mcq.style == "chat"
    turns = conversation(mcq, shots, case, config)
    if config.method == "loglik":
        return [answer_by_loglik(mcq, case, turns, lettered=lettered, score=config.score,
                                 target=config.loglik_target, batch_size=config.batch_size)]
    return answer_by_generation(mcq, case, turns, lettered=lettered, max_new_tokens=config.max_new_tokens,
                                n_tries=n_tries, seed=config.seed, temperature=config.temperature,
                                top_k=config.top_k)


def answer_cases(mcq: MCQModel, shots: list[MCQCase], queries: list[MCQCase], config: MCQRunConfig,
                 show_progress: bool = True) -> list[CaseResult]:
    """Answer every query case after the shots, the way ``config`` says."""
    results: list[CaseResult] = []
    with progress_bar(f"MCQ {config.method} ({mcq.name})", len(queries), enabled=show_progress) as advance:
        for case in queries:
            results += answer_case(mcq, shots, case, config, n_tries=config.n_tries)
            advance(1)
    return results


def write_order_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write the order-robustness answers (one row per case and variant) as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "variant", "option_order", "answer_index", "correct",
                                                "changed"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "option_order": json.dumps(row["option_order"])})
    atomic_write_text(path, buffer.getvalue())


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

    The staging folder is made before the model is loaded, as a probe run's is: an output folder
    that cannot be written (a read-only disk, a path under a file) stops the run at once with a
    :class:`ConfigError` naming it, not after every case was answered.
    """
    config, base = load_mcq_config(config_path_or_dict)
    out = Path(out_dir) if out_dir is not None else base / config.output_dir
    for note in recover(out, MCQ_FOLDER_OWNED):  # an earlier MCQ run killed while writing its outputs
        console.print(note, highlight=False)
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"output folder {out} already holds results ({', '.join(existing)}); "
                          "pass --overwrite or choose another output folder")
    # all outputs appear together or not at all (:mod:`medprobe.staging`); an mcq_order.csv of an
    # earlier run is not carried over, being an MCQ output
    with staged_run_folder(out, MCQ_FOLDER_OWNED) as staging:
        results, summary, order_rows = _answer_and_summarize(config, base, mcq_model, show_progress)
        write_outputs(staging, results, summary, chance=1 / config.n_options)
        if order_rows:
            write_order_csv(staging / ORDER_CSV, order_rows)
    return out


def _answer_and_summarize(config: MCQRunConfig, base: Path, mcq_model: MCQModel | None, show_progress: bool
                          ) -> tuple[list[CaseResult], dict[str, Any], list[dict[str, Any]]]:
    """Load the cases and the model, answer, and build ``mcq_results.json``'s document; returns the
    answers, that document and the order-robustness rows (empty without ``order_robustness``)."""
    cases_location = Path(config.cases).expanduser()
    cases = load_cases(cases_location if cases_location.is_absolute() else base / cases_location,
                       n_options=config.n_options)
    shots, queries = select_shots(cases, config.shots)
    if mcq_model is not None:
        mcq_model.set_style(config.prompt_style)
    mcq = mcq_model if mcq_model is not None else load_model(config.model, base, config.prompt_style)
    results = answer_cases(mcq, shots, queries, config, show_progress=show_progress)

    extra: dict[str, Any] = {
        "name": config.name,
        "prompt_style": mcq.style,
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
        extra["loglik_target"] = config.loglik_target
    else:
        extra["sampling"] = {"temperature": config.temperature, "top_k": config.top_k,
                             "seeds": "sha256(run seed, case id, try)"}
    order_rows: list[dict[str, Any]] = []
    if config.order_robustness is not None:
        primary = {r.case_id: r.parsed_index for r in results if r.try_index == 0}

        def primary_answer(these_shots: Sequence[MCQCase], case: MCQCase) -> int | None:
            return answer_case(mcq, these_shots, case, config)[0].parsed_index

        extra["order_robustness"], order_rows = order_robustness(
            primary_answer, shots, queries, [primary[case.id] for case in queries],
            permutations=config.order_robustness.permutations, swap_shots=config.order_robustness.swap_shots,
            seed=config.seed, level=config.ci_level)
    summary = summarize(results, model=config.model.name, method=config.method, n_shots=len(shots),
                        level=config.ci_level, extra=extra)
    return results, summary, order_rows
