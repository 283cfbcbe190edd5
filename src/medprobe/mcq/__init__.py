"""Few-shot multiple-choice diagnosis (NEJM Image Challenge style) with vision-language models.

``run_mcq("run.yaml", out_dir)`` is the whole pipeline; the pieces are :func:`load_cases`
(case files), :func:`select_shots` / :func:`build_conversation` (prompts), :class:`MCQModel`
(generation and log-likelihood scoring), :func:`parse_answer` (reading generated replies),
:func:`summarize` (accuracy, difficulty strata, specialties), :func:`order_robustness` (permuted
options, swapped shots) and :mod:`medprobe.mcq.figure` (the Fig. 1f-style figure).
"""

from medprobe.mcq.answer import MCQModel, OptionScore, answer_by_generation, answer_by_loglik, case_seed
from medprobe.mcq.cases import MCQCase, load_cases
from medprobe.mcq.evaluate import accuracy_row, strata_rows, summarize, write_outputs
from medprobe.mcq.parse import parse_answer
from medprobe.mcq.prompts import build_conversation, render_chat, render_idefics, render_study, select_shots
from medprobe.mcq.records import CaseResult
from medprobe.mcq.robustness import option_orders, order_robustness, permute_case
from medprobe.mcq.run import MCQRunConfig, load_mcq_config, run_mcq

__all__ = [
    "CaseResult", "MCQCase", "MCQModel", "MCQRunConfig", "OptionScore", "accuracy_row", "answer_by_generation",
    "answer_by_loglik", "build_conversation", "case_seed", "load_cases", "load_mcq_config", "option_orders",
    "order_robustness", "parse_answer", "permute_case", "render_chat", "render_idefics", "render_study", "run_mcq",
    "select_shots", "strata_rows", "summarize", "write_outputs",
]
