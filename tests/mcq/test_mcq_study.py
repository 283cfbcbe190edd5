"""The study's protocol: its prompt, option-text log-likelihood, primary and within-n answers with
per-case seeds, shot-date ties, order robustness and the Fig. 1f-style figure -- on a tiny IDEFICS
v1 and a tiny chat-template VLM (LLaVA)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprobe.errors import ConfigError, ModelError
from medprobe.mcq.answer import answer_by_loglik, case_seed
from medprobe.mcq.cases import load_cases
from medprobe.mcq.prompts import build_conversation, option_continuation, render_study, select_shots
from medprobe.mcq.robustness import option_orders, order_robustness, permute_case
from test_mcq import OPTIONS, write_cases

CASE_TEXT = ("a patient with a mass number {i}\nwhat is the diagnosis ?\n1. tumor\n2. nodule\n3. normal lesion\n"
             "4. abnormal brain scan\n5. left lung x-ray")


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    return write_cases(tmp_path / "cases")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from medprobe.mcq.run import MCQModelConfig, load_model
    from medprobe.testing.tiny_models import build_tiny_idefics, build_tiny_llava

    root = tmp_path_factory.mktemp("vlms")
    paths = {"idefics": build_tiny_idefics(root / "idefics"), "llava": build_tiny_llava(root / "llava")}
    return {family: (load_model(MCQModelConfig(name=f"hf:{path}", dtype="float32"), Path.cwd()), path)
            for family, path in paths.items()}


# ----------------------------------------------------------------------------------- the prompt
def test_study_prompt_two_shots_matches_hand_written_text(case_dir: Path, models) -> None:
    """Shots c3 (answer 4) and c1 (answer 2) are the earliest; the query c0 ends at "Assistant:"."""
    cases = load_cases(case_dir)
    shots, queries = select_shots(cases, 2)
    items = render_study(build_conversation(shots, queries[0], style="study"))
    texts = [item if isinstance(item, str) else "<IMG>" for item in items]
    assert texts == [
        "User:", "<IMG>", CASE_TEXT.format(i=3) + "\nAssistant: abnormal brain scan.\n",
        "User:", "<IMG>", CASE_TEXT.format(i=1) + "\nAssistant: nodule.\n",
        "User:", "<IMG>", CASE_TEXT.format(i=0) + "\nAssistant:",
    ]
    assert all(isinstance(item, Image.Image) for item in items if not isinstance(item, str))
    # what the processor makes of it: BOS, image tokens, and <end_of_utterance> before each later
    # "User:", as the study's processor call did with an instruct tokenizer
    mcq = models["idefics"][0]
    assert mcq.style == "study" and mcq.study_end_of_utterance
    image = "<fake_token_around_image><image><fake_token_around_image>"
    expected = ("<s>User:" + image + CASE_TEXT.format(i=3) + "\nAssistant: abnormal brain scan.\n<end_of_utterance>"
                "User:" + image + CASE_TEXT.format(i=1) + "\nAssistant: nodule.\n<end_of_utterance>"
                "User:" + image + CASE_TEXT.format(i=0) + "\nAssistant:")
    ids = mcq.encode(build_conversation(shots, queries[0], style="study"), [""])["input_ids"][0].tolist()
    assert ids == mcq.tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert "Answer" not in "".join(t for t in texts) and "Each case" not in "".join(texts)


def test_study_style_is_idefics_only_and_the_run_file_rejects_chat_settings(case_dir: Path, models) -> None:
    from medprobe.mcq.run import parse_mcq_config

    llava = models["llava"][0]
    assert llava.style == "chat"
    with pytest.raises(ModelError, match="prompt_style 'study' .* needs an IDEFICS v1 processor"):
        llava.set_style("study")
    assert llava.style == "chat"
    with pytest.raises(ConfigError, match="drop instruction: 'Pick one.'"):
        parse_mcq_config({"cases": "x", "model": {"name": "hf:x"}, "prompt_style": "study",
                          "instruction": "Pick one."})


# ------------------------------------------------------------------------------- log-likelihood
@pytest.mark.parametrize("family", ["idefics", "llava"])
def test_loglik_scores_the_option_text_and_the_labelled_variant(case_dir: Path, models, family: str) -> None:
    """The scored tokens are exactly the option text (study: plus its full stop); the labelled
    variant scores the label too. Each sum equals transformers' own label loss."""
    import torch

    mcq = models[family][0]
    shots, queries = select_shots(load_cases(case_dir), 2)
    query = queries[0]
    turns = build_conversation(shots, query, style=mcq.style)
    targets = ["option"] if mcq.style == "study" else ["option", "labelled"]
    results = {t: answer_by_loglik(mcq, query, turns, lettered=False, target=t) for t in targets}
    for index, option in enumerate(query.options):
        text = option + ("." if mcq.style == "study" else "")
        assert option_continuation(index, option, style=mcq.style) == f" {text}"
        words = mcq.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert results["option"].n_tokens[index] == len(words)
        inputs = mcq.encode(turns, [mcq.loglik_context(turns) + f" {text}"])
        assert inputs["input_ids"][0, -len(words):].tolist() == words
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[0, -len(words):] = inputs["input_ids"][0, -len(words):]
        with torch.inference_mode():
            loss = float(mcq.model(**inputs, labels=labels).loss)
        assert results["option"].logprob_sum[index] == pytest.approx(-loss * len(words), abs=1e-4)
    if "labelled" in results:  # " 3. normal lesion": the label and its full stop are scored too
        assert all(n == m + 2 for n, m in zip(results["labelled"].n_tokens, results["option"].n_tokens))


# ---------------------------------------------------------------------------------------- shots
def test_tied_earliest_dates_are_an_error_unless_the_shots_are_named(tmp_path: Path) -> None:
    # c3 (2020-01-02) is earliest; c1 and c6 share the second-earliest date
    folder = write_cases(tmp_path, mutate={6: lambda c: c.update(date="2020-01-15")})
    cases = load_cases(folder)
    with pytest.raises(ConfigError, match=r"cases \['c1', 'c6'\] share the date 2020-01-15.*shots: \[c3, c1\]"):
        select_shots(cases, 2)
    assert [c.id for c in select_shots(cases, 1)[0]] == ["c3"]  # the tie is past the shots
    assert [c.id for c in select_shots(cases, ["c3", "c6"])[0]] == ["c3", "c6"]
    # a tie between the two chosen shots is an error too: their order would come from the file
    folder = write_cases(tmp_path / "b", mutate={1: lambda c: c.update(date="2020-01-02")})
    with pytest.raises(ConfigError, match=r"cases \['c1', 'c3'\] share the date 2020-01-02"):
        select_shots(load_cases(folder), 2)


# ---------------------------------------------------------------------------------------- seeds
def test_case_seeds_differ_per_case_and_try_and_do_not_depend_on_other_cases() -> None:
    seeds = {(case, t): case_seed(7, case, t) for case in ("a", "b", "c") for t in (1, 2, 3)}
    assert len(set(seeds.values())) == 9 and all(0 <= s < 2**63 for s in seeds.values())
    assert case_seed(7, "a", 1) == seeds[("a", 1)] and case_seed(8, "a", 1) != seeds[("a", 1)]


# ------------------------------------------------------------------------------ order robustness
def test_option_orders_are_seeded_distinct_and_move_the_answer(case_dir: Path) -> None:
    case = load_cases(case_dir)[2]
    orders = option_orders(0, case.id, 5, 4)
    assert orders == option_orders(0, case.id, 5, 4) and orders != option_orders(1, case.id, 5, 4)
    assert len({tuple(o) for o in orders}) == 4 and list(range(5)) not in orders
    for order in orders:
        moved = permute_case(case, order)
        assert moved.answer_text == case.answer_text and moved.options == tuple(case.options[i] for i in order)
    with pytest.raises(ConfigError, match="only 1 orders"):
        option_orders(0, "x", 2, 2)


def test_robustness_tells_position_from_content(case_dir: Path) -> None:
    """A model that always picks the first position changes its answer under every order that moves
    the first option; one that always picks "tumor" never changes. Checked against hand counts."""
    shots, queries = select_shots(load_cases(case_dir), 2)
    by_position = lambda these_shots, case: 0  # noqa: E731
    by_content = lambda these_shots, case: case.options.index("tumor")  # noqa: E731
    k = 4
    truth = [c.answer for c in queries]
    block, rows = order_robustness(by_position, shots, queries, [0] * len(queries), permutations=k,
                                   swap_shots=True, seed=3)
    orders = [option_orders(3, c.id, 5, k) for c in queries]
    expected = [np.mean([o[j][0] == t for o, t in zip(orders, truth)]) for j in range(k)]
    got = block["option_order"]
    assert [row["accuracy"] for row in got["accuracy"]] == pytest.approx(expected)
    assert got["accuracy_mean"] == pytest.approx(np.mean(expected))
    assert got["accuracy_sd"] == pytest.approx(np.std(expected, ddof=1))
    changed = [[o[j][0] != 0 for o in orders] for j in range(k)]
    assert got["share_changed_mean"] == pytest.approx(np.mean(changed))
    assert got["share_changed_any"] == pytest.approx(np.mean(np.any(changed, axis=0)))
    assert block["shots_swapped"]["share_changed"] == 0.0 and block["shots_swapped"]["shot_ids"] == ["c1", "c3"]
    assert len(rows) == len(queries) * (k + 1)
    content, _ = order_robustness(by_content, shots, queries, [0] * len(queries), permutations=k,
                                  swap_shots=True, seed=3)
    assert content["option_order"]["share_changed_any"] == 0.0 and content["option_order"]["accuracy_sd"] == 0.0
    assert content["option_order"]["accuracy_mean"] == pytest.approx(np.mean([t == 0 for t in truth]))


# ------------------------------------------------------------------------------------ end to end
def _bias(mcq, token: str | None) -> None:
    import torch

    head = mcq.model.get_output_embeddings()
    if token is None:
        head.bias = None
        return
    bias = torch.zeros(head.weight.shape[0])
    bias[mcq.tokenizer.convert_tokens_to_ids(token)] = 60.0
    head.bias = torch.nn.Parameter(bias)


@pytest.mark.parametrize("family", ["idefics", "llava"])
def test_one_run_gives_primary_within_n_and_order_robustness(tmp_path: Path, models, family: str) -> None:
    """A model biased towards "tumor" answers it greedily, in every sampled try and under every
    option order and shot order: primary = within-n = accuracy on the "tumor" cases, nothing changes."""
    from medprobe.mcq.run import run_mcq

    mcq, path = models[family]
    # shots c3, c1; three cases to answer, one of them (c2) without a human value
    folder = write_cases(tmp_path / "small", n=5, mutate={2: lambda case: case.pop("human_correct")})
    config = {"name": "t", "cases": str(folder), "model": {"name": f"hf:{path}"}, "method": "generate",
              "n_tries": 2, "max_new_tokens": 2, "seed": 1,
              "order_robustness": {"permutations": 2, "swap_shots": True}}
    _bias(mcq, "tumor")
    try:
        out = run_mcq(config, tmp_path / "out", show_progress=False, mcq_model=mcq)
    finally:
        _bias(mcq, None)
    summary = json.loads((out / "mcq_results.json").read_text())
    assert summary["prompt_style"] == ("study" if family == "idefics" else "chat")
    assert summary["n_without_human_value"] == 1 and sum(row["n"] for row in summary["strata"]) == 2
    rows = list(csv.DictReader((out / "mcq_cases.csv").open()))
    assert len(rows) == 9 and {r["parsed_option"] for r in rows} == {"tumor"}
    tumor_share = np.mean([r["correct_option"] == "tumor" for r in rows if r["try"] == "0"])
    assert summary["accuracy"] == pytest.approx(tumor_share)
    assert summary["correct_within_n"]["2"]["accuracy"] == pytest.approx(tumor_share)
    robust = summary["order_robustness"]
    assert robust["option_order"]["share_changed_any"] == 0.0 and robust["shots_swapped"]["share_changed"] == 0.0
    assert robust["option_order"]["accuracy_mean"] == pytest.approx(tumor_share)
    order_rows = list(csv.DictReader((out / "mcq_order.csv").open()))
    assert len(order_rows) == 3 * 3 and {r["changed"] for r in order_rows} == {"False"}
    assert (out / "mcq_strata.png").read_bytes()[:4] == b"\x89PNG"
    from medprobe.mcq.evaluate import headline

    lines = headline(summary)
    assert lines[0].startswith(f"hf:{path} (generate, {summary['prompt_style']} prompt): primary 33.3% [")
    assert lines[1].startswith("correct within 2 sampled tries: 33.3%") and "504/929" in lines[1]
    assert "answer changed in 0.0% of cases" in lines[2] and lines[3].startswith("shots swapped: 33.3%")


def test_figure_has_strata_cis_human_share_guessing_and_study_lines(case_dir: Path) -> None:
    from medprobe.mcq.evaluate import summarize
    from medprobe.mcq.figure import strata_figure
    from medprobe.mcq.records import CaseResult

    results = []
    for i, share in enumerate([0.1, 0.3, 0.5, 0.7, 0.9, 0.95]):
        for t in range(4):
            results.append(CaseResult(case_id=f"q{i}", method="generate", correct_index=0, correct_option=OPTIONS[0],
                                      parsed_index=(i + t) % 2, parsed_option=None, parse_method="exact",
                                      try_index=t, human_correct=share))
    summary = summarize(results, model="m", method="generate", n_shots=2)
    fig = strata_figure(summary, chance=0.2)
    left, right = fig.axes
    levels = {round(float(line.get_ydata()[0]), 4) for ax in (left, right) for line in ax.lines
              if len(set(line.get_ydata())) == 1 and len(line.get_xdata()) == 2}
    assert {0.2, round(375 / 929, 4), round(504 / 929, 4)} <= levels
    labels = [text.get_text() for text in left.get_legend().get_texts()]
    assert any("within 3" in label for label in labels) and any("human" in label for label in labels)
    assert any("40.4% (375/929)" in t.get_text() for t in right.get_legend().get_texts())
    # the primary series: one marker per stratum with cases, at the summary's accuracies
    primary = [line for line in left.lines if line.get_marker() == "o"][0]
    assert list(primary.get_ydata()) == pytest.approx([r["accuracy"] for r in summary["strata"]])
