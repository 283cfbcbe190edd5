"""MCQ ``case_text``: medprobe's assumed layout (vignette, question, numbered options) and the
layout of the study's figure of two NEJM cases (question, ``Choices:``, numbered options)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_mcq import write_cases

from medprobe.errors import ConfigError
from medprobe.mcq.cases import load_cases
from medprobe.mcq.prompts import build_conversation, case_text, render_study, select_shots
from medprobe.mcq.run import parse_mcq_config


def test_study_figure_layout_is_question_choices_numbered_options(tmp_path: Path) -> None:
    case = load_cases(write_cases(tmp_path))[0]
    lines = case_text(case, layout="study-figure").split("\n")
    assert lines == [case.question, "Choices:", *[f"{i + 1}. {o}" for i, o in enumerate(case.options)]]
    assert len(lines) == 7  # the seven lines nejm_test.py reads of each case file (lines 1..7)
    assert case_text(case).split("\n")[0] == case.vignette  # the default keeps the vignette
    with pytest.raises(ConfigError, match="unknown case_text"):
        case_text(case, layout="figure")


def test_study_prompt_with_the_figure_layout(tmp_path: Path) -> None:
    shots, queries = select_shots(load_cases(write_cases(tmp_path)), 2)
    items = render_study(build_conversation(shots, queries[0], style="study", case_layout="study-figure"))
    texts = [item for item in items if isinstance(item, str)]
    assert texts[-1] == case_text(queries[0], layout="study-figure") + "\nAssistant:"
    assert all(shot.vignette not in "".join(texts) for shot in shots)
    assert texts[0] == "User:" and texts[1] == f"{case_text(shots[0], layout='study-figure')}\nAssistant: {shots[0].answer_text}.\n"


def test_run_file_case_text_defaults_to_the_vignette_layout() -> None:
    config = parse_mcq_config({"cases": "x", "model": {"name": "idefics-9b-instruct"}})
    assert config.case_text == "vignette"
    assert parse_mcq_config({"cases": "x", "model": {"name": "m"}, "case_text": "study-figure"}).case_text \
        == "study-figure"
