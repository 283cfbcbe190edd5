"""Multiple-choice diagnosis: case files, parsing, shots, prompts, statistics, and end-to-end runs
with tiny saved VLMs (IDEFICS v1 and a chat-template VLM)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest

from medprobe.errors import ConfigError, DataError
from medprobe.mcq.cases import load_cases
from medprobe.mcq.evaluate import accuracy_row, strata_rows, summarize, write_outputs
from medprobe.mcq.parse import parse_answer
from medprobe.mcq.prompts import (
    ANSWER_PREFIX,
    build_conversation,
    chat_messages,
    default_instruction,
    render_idefics,
    select_shots,
)
from medprobe.mcq.records import CaseResult

# words of the tiny test tokenizer (tests/tiny_models.py), so every option has its own tokens
OPTIONS = ["tumor", "nodule", "normal lesion", "abnormal brain scan", "left lung x-ray"]
# file order differs from date order on purpose: the two earliest are c3 and c1
DATES = ["2020-03-01", "2020-01-15", "2020-05-01", "2020-01-02", "2020-04-01", "2020-06-01", "2020-02-01"]
SHARES = [0.05, 0.3, 0.45, 0.7, 0.9, 1.0, 0.2]


def write_cases(folder: Path, n: int = 7, dates: bool = True, mutate: dict | None = None) -> Path:
    """``n`` cases with one tiny PNG each (two for c2), answers cycling through the options."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(folder / "img" / f"c{i}.png")
        case = {
            "id": f"c{i}", "images": [f"img/c{i}.png"] + (["img/c0.png"] if i == 2 else []),
            "vignette": f"a patient with a mass number {i}", "question": "what is the diagnosis ?",
            "options": list(OPTIONS), "answer": i % 5, "human_correct": SHARES[i],
            "specialty": "radiology" if i % 2 else "dermatology", "explanation": f"reason for case {i}",
        }
        if dates:
            case["date"] = DATES[i]
        if mutate and i in mutate:
            mutate[i](case)
        lines.append(json.dumps(case))
    (folder / "cases.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    return write_cases(tmp_path / "cases")


# ------------------------------------------------------------------------------------------ cases
def test_load_cases_resolves_answers_and_images(case_dir: Path) -> None:
    cases = load_cases(case_dir)
    assert [c.id for c in cases] == [f"c{i}" for i in range(7)]
    assert [c.answer for c in cases] == [i % 5 for i in range(7)]
    assert all(p.is_file() and p.is_absolute() for c in cases for p in c.images)
    assert len(cases[2].images) == 2
    # the same file given directly, and an answer given as option text
    assert [c.id for c in load_cases(case_dir / "cases.jsonl")] == [c.id for c in cases]


def test_answer_as_text_is_matched_ignoring_case_and_full_stop(tmp_path: Path) -> None:
    folder = write_cases(tmp_path, n=3, mutate={1: lambda c: c.update(answer="Abnormal brain  SCAN.")})
    assert load_cases(folder)[1].answer == 3


def _set_option(case: dict, index: int, text: str) -> None:
    case["options"][index] = text


@pytest.mark.parametrize("mutation, message", [
    (lambda c: _set_option(c, 4, c["options"][c["answer"]]), "matches 2 options"),
    (lambda c: _set_option(c, 4, "nodule"), "same"),
    (lambda c: c.update(options=c["options"][:4]), "has 4 options, expected 5"),
    (lambda c: c.update(images=["img/missing.png"]), "image 'img/missing.png' not found"),
    (lambda c: c.update(answer="pneumonia"), "is not one of the options"),
    (lambda c: c.update(answer=7), "out of range"),
    (lambda c: c.update(answer=True), "not true/false"),
    (lambda c: c.update(human_correct=1.5), "human_correct"),
    (lambda c: c.update(colour="red"), "colour: unknown key"),
    (lambda c: c.update(date="2020-13-45"), "date"),
    (lambda c: c.update(id="c1"), "duplicate id 'c1' (first used on line 2)"),
])
def test_validation_errors_name_line_and_case(tmp_path: Path, mutation, message: str) -> None:
    folder = write_cases(tmp_path, n=4, mutate={3: mutation})
    with pytest.raises(DataError) as error:
        load_cases(folder)
    text = str(error.value)
    assert "cases.jsonl line 4" in text
    assert message in text
    assert "case 'c" in text


def test_n_options_setting_and_bad_json(tmp_path: Path) -> None:
    folder = write_cases(tmp_path, n=3, mutate={i: lambda c: c.update(options=c["options"][:4], answer=1)
                                               for i in range(3)})
    assert len(load_cases(folder, n_options=4)[0].options) == 4
    first = (folder / "cases.jsonl").read_text().splitlines()[0]
    (folder / "cases.jsonl").write_text(first + '\n\n{"id": "x", oops\n')
    with pytest.raises(DataError, match="line 3: not valid JSON"):
        load_cases(folder, n_options=4)
    with pytest.raises(DataError, match="case file not found"):
        load_cases(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("reply, expected", [
    ("3", (2, "number")),
    ("(3)", (2, "number")),
    ("[2]", (1, "number")),
    ("Answer: 4", (3, "number")),
    ("Answer: 3. normal lesion\nReason: round and calm", (2, "number")),
    ("The answer is 5.", (4, "number")),
    ("Option 2", (1, "number")),
    ("I would pick option 1 here", (0, "number")),
    ("3. tumor", (None, "multiple")),
    ("Abnormal Brain Scan", (3, "exact")),
    ("tumor.", (0, "exact")),
    ("this looks like a left lung x-ray to me", (4, "substring")),
    ("abnormal brain sc", (3, "prefix")),
    ("nodlue", (1, "fuzzy")),
    ("tumor or nodule", (None, "multiple")),
    ("7", (None, "out-of-range")),
    ("3 weeks of fever", (None, "unparseable")),
    ("I am not sure", (None, "negated")),
    ("the image is unclear", (None, "unparseable")),
    ("", (None, "empty")),
    ("Reason: nothing else", (None, "empty")),
])
def test_parse_answer_numbers_and_text(reply: str, expected: tuple) -> None:
    assert parse_answer(reply, OPTIONS) == expected


@pytest.mark.parametrize("reply, expected", [
    ("C", (2, "letter")),
    ("(d)", (3, "letter")),
    ("Answer: B. nodule", (1, "letter")),
    ("Option E", (4, "letter")),
    ("A. nodule", (None, "multiple")),
    ("A nodule in the lung", (1, "substring")),
    ("a", (None, "unparseable")),
])
def test_parse_answer_letters_only_when_lettered(reply: str, expected: tuple) -> None:
    assert parse_answer(reply, OPTIONS, lettered=True) == expected
    if expected[1] == "letter" and reply == "C":
        assert parse_answer(reply, OPTIONS, lettered=False) == (None, "unparseable")


# ------------------------------------------------------------------------------ shots and prompts
def test_default_shots_are_the_two_earliest_and_are_not_scored(case_dir: Path) -> None:
    cases = load_cases(case_dir)
    shots, queries = select_shots(cases, 2)
    assert [c.id for c in shots] == ["c3", "c1"]
    assert [c.id for c in queries] == ["c0", "c2", "c4", "c5", "c6"]


def test_shots_without_dates_must_be_named(tmp_path: Path) -> None:
    cases = load_cases(write_cases(tmp_path, dates=False))
    with pytest.raises(ConfigError, match=r"2 of them have no date .*shots: \[c0, c1\]"):
        select_shots(cases, 2)
    shots, queries = select_shots(cases, ["c5", "c2"])
    assert [c.id for c in shots] == ["c5", "c2"] and {"c5", "c2"}.isdisjoint(c.id for c in queries)
    assert select_shots(cases, 0) == ([], cases)
    with pytest.raises(ConfigError, match="not found"):
        select_shots(cases, ["c9"])
    with pytest.raises(ConfigError, match="no case to score"):
        select_shots(cases, 7)


def test_prompt_shows_shot_answers_and_reasons_but_not_the_query_answer(case_dir: Path) -> None:
    cases = load_cases(case_dir)
    shots, queries = select_shots(cases, 2)
    query = queries[0]
    turns = build_conversation(shots, query, instruction=default_instruction(False, True))
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    items = render_idefics(turns)
    text = "".join(i for i in items if isinstance(i, str))
    images = [i for i in items if not isinstance(i, str)]
    assert len(images) == 3 and all(isinstance(i, Image.Image) for i in images)
    for shot in shots:
        assert f"{ANSWER_PREFIX} {shot.answer + 1}. {shot.answer_text}\nReason: {shot.explanation}" in text
    assert f"{ANSWER_PREFIX} {query.answer + 1}." not in text
    assert query.explanation not in text
    assert query.vignette in text and "5. left lung x-ray" in text
    assert text.endswith("<end_of_utterance>\nAssistant:")
    assert text.count("User:") == 3 and text.count("<end_of_utterance>") == 5
    # without reasons
    plain = "".join(i for i in render_idefics(build_conversation(shots, query, include_reason=False))
                    if isinstance(i, str))
    assert "Reason:" not in plain and f"{ANSWER_PREFIX} {shots[0].answer + 1}." in plain
    # chat messages: image placeholders where the images are
    messages = chat_messages(turns)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert sum(p["type"] == "image" for m in messages for p in m["content"]) == 3


def test_lettered_prompt(case_dir: Path) -> None:
    cases = load_cases(case_dir)
    shots, queries = select_shots(cases, 1)
    text = "".join(i for i in render_idefics(build_conversation(shots, queries[0], lettered=True))
                   if isinstance(i, str))
    assert "\nE. left lung x-ray" in text and f"{ANSWER_PREFIX} {'ABCDE'[shots[0].answer]}." in text


# ------------------------------------------------------------------------------------- statistics
def _result(case_id: str, correct: bool, share: float | None, specialty: str | None = None,
            try_index: int = 0, parsed: bool = True) -> CaseResult:
    index = (0 if correct else 1) if parsed else None
    return CaseResult(case_id=case_id, method="generate", correct_index=0, correct_option="tumor",
                      parsed_index=index, parsed_option=None, parse_method="number" if parsed else "unparseable",
                      human_correct=share, specialty=specialty, try_index=try_index)


@pytest.mark.parametrize("k, n", [(0, 5), (3, 5), (5, 5), (17, 40), (1, 1)])
def test_accuracy_ci_matches_scipy_wilson(k: int, n: int) -> None:
    row = accuracy_row([True] * k + [False] * (n - k))
    reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert row["n"] == n and row["accuracy"] == pytest.approx(k / n)
    assert row["ci_low"] == pytest.approx(reference.low, abs=1e-12)
    assert row["ci_high"] == pytest.approx(reference.high, abs=1e-12)


def test_strata_on_known_numbers() -> None:
    shares_correct = [(0.0, True), (0.19, False), (0.2, True), (0.39, True), (0.5, False),
                      (0.8, True), (1.0, False), (0.95, True), (None, True)]
    results = [_result(f"q{i}", c, s) for i, (s, c) in enumerate(shares_correct)]
    rows = strata_rows(results)
    assert [r["stratum"] for r in rows] == ["[0.0, 0.2)", "[0.2, 0.4)", "[0.4, 0.6)", "[0.6, 0.8)", "[0.8, 1.0]"]
    assert [r["n"] for r in rows] == [2, 2, 1, 0, 3]
    assert [r["accuracy"] for r in rows] == [0.5, 1.0, 0.0, None, pytest.approx(2 / 3)]
    assert [r["human_mean"] for r in rows] == [pytest.approx(0.095), pytest.approx(0.295), 0.5, None,
                                               pytest.approx(2.75 / 3)]
    reference = binomtest(2, 3).proportion_ci(method="wilson")
    assert rows[4]["ci_low"] == pytest.approx(reference.low) and rows[3]["ci_low"] is None


def test_summary_counts_unparseable_as_wrong_and_correct_within_n() -> None:
    results = [
        _result("a", True, 0.1, "derm"), _result("a", False, 0.1, "derm", 1), _result("a", False, 0.1, "derm", 2),
        _result("b", False, 0.5, "derm", parsed=False), _result("b", True, 0.5, "derm", 1),
        _result("b", False, 0.5, "derm", 2),
        _result("c", False, 0.9, "neuro"), _result("c", False, 0.9, "neuro", 1), _result("c", True, 0.9, "neuro", 2),
        _result("d", False, 0.9), _result("d", False, 0.9, try_index=1), _result("d", False, 0.9, try_index=2),
    ]
    # try 0 is the primary answer; tries 1 and 2 are sampled
    summary = summarize(results, model="m", method="generate", n_shots=2)
    assert summary["n_cases"] == 4 and summary["accuracy"] == 0.25 and summary["n_tries"] == 2
    assert summary["n_unparseable"] == 1 and summary["parse_methods"] == {"number": 3, "unparseable": 1}
    within = summary["correct_within_n"]
    # a: only its primary answer is right; b: sampled try 1; c: sampled try 2; d: never
    assert [within[str(n)]["accuracy"] for n in (1, 2)] == [0.25, 0.5]
    reference = binomtest(2, 4).proportion_ci(method="wilson")
    assert within["2"]["ci_low"] == pytest.approx(reference.low) and within["2"]["ci_high"] == pytest.approx(
        reference.high)
    assert [(r["specialty"], r["n"], r["accuracy"], r["within_n"]["accuracy"]) for r in summary["per_specialty"]] == [
        ("derm", 2, 0.5, 0.5), ("neuro", 1, 0.0, 1.0)]
    assert summary["n_without_specialty"] == 1 and summary["n_without_human_value"] == 0
    assert [r["n"] for r in summary["strata"]] == [1, 0, 1, 0, 2]
    assert [r["within_n"]["accuracy"] for r in summary["strata"]] == [0.0, None, 1.0, None, 0.5]
    assert summary["study_reference"]["primary"] == {"k": 375, "n": 929, "accuracy": pytest.approx(0.4037, abs=1e-4)}
    assert summary["study_reference"]["within_3"]["accuracy"] == pytest.approx(0.5425, abs=1e-4)


def test_strata_count_cases_without_a_human_value() -> None:
    """9 of 10 cases have a human share: the strata hold 9 and the summary says 1 is missing."""
    results = [_result(f"q{i}", i % 2 == 0, None if i == 4 else i / 10) for i in range(10)]
    summary = summarize(results, model="m", method="loglik", n_shots=2)
    assert sum(r["n"] for r in summary["strata"]) == 9 and summary["n_without_human_value"] == 1
    assert summary["n_cases"] == 10


def test_outputs_written(tmp_path: Path) -> None:
    results = [_result("a", True, 0.1), _result("b", False, 0.5), _result("c", True, 0.9, parsed=False)]
    summary = summarize(results, model="m", method="generate", n_shots=2)
    write_outputs(tmp_path, results, summary, chance=0.2)
    assert json.loads((tmp_path / "mcq_results.json").read_text())["accuracy"] == pytest.approx(1 / 3)
    rows = list(csv.DictReader((tmp_path / "mcq_cases.csv").open()))
    assert [r["correct"] for r in rows] == ["True", "False", "False"] and rows[2]["parsed_index"] == ""
    assert (tmp_path / "mcq_strata.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "mcq_strata.svg").read_bytes()[:400]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------- tiny models, end to end
@pytest.fixture(scope="module")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """IDEFICS v1 (interleaved prompts) and two chat-template VLMs, saved like real checkpoints."""
    from medprobe.testing.tiny_models import build_tiny_idefics, build_tiny_idefics3, build_tiny_llava

    root = tmp_path_factory.mktemp("vlms")
    return {"idefics": build_tiny_idefics(root / "idefics"), "llava": build_tiny_llava(root / "llava"),
            "idefics3": build_tiny_idefics3(root / "idefics3")}


@pytest.fixture(scope="module")
def loaded(tiny_vlms: dict[str, Path]) -> dict:
    """The tiny models loaded once through the run's own loader (shared by the tests below)."""
    from medprobe.mcq.run import MCQModelConfig, load_model

    return {family: load_model(MCQModelConfig(name=f"hf:{path}", dtype="float32"), Path.cwd())
            for family, path in tiny_vlms.items()}


def _run_config(case_dir: Path, model: str, **overrides) -> dict:
    config = {"name": "t", "cases": str(case_dir), "model": {"name": model, "dtype": "float32"}, "max_new_tokens": 4}
    config.update(overrides)
    return config


def _bias_lm_head(mcq, token: str, value: float = 60.0) -> None:
    """Hand-set preference: an LM-head bias that gives ``token`` a huge logit at every position."""
    import torch

    head = mcq.model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0])
    bias[mcq.tokenizer.convert_tokens_to_ids(token)] = value
    head.bias = torch.nn.Parameter(bias)


def _remove_bias(mcq) -> None:
    mcq.model.get_output_embeddings().bias = None


def test_prompt_styles_follow_each_processor(case_dir: Path, loaded) -> None:
    cases = load_cases(case_dir)
    shots, queries = select_shots(cases, 2)
    turns = build_conversation(shots, queries[0])
    assert loaded["idefics"].family == "idefics" and loaded["llava"].family == "chat"
    assert loaded["idefics"].style == "study" and loaded["llava"].style == "chat"  # the defaults
    # each chat template renders a reply after its generation prompt in its own way
    assert loaded["llava"].answer_glue(turns) == " "
    assert loaded["idefics3"].answer_glue(turns) == ""
    loaded["idefics"].set_style("chat")
    try:
        inputs = loaded["idefics"].encode(turns, [""])
    finally:
        loaded["idefics"].set_style(None)
    assert inputs["pixel_values"].shape[:2] == (1, 3)  # two shot images and the query's
    text = loaded["llava"].tokenizer.decode(loaded["llava"].encode(turns, [""])["input_ids"][0])
    assert text.count("assistant :") == 3  # two answered shots and the open query turn


@pytest.mark.parametrize("family", ["idefics", "llava", "idefics3"])
def test_loglik_matches_transformers_loss_and_batching(case_dir: Path, loaded, family: str) -> None:
    """Summed log-probs equal -(HF's own label loss x tokens), and do not depend on batching
    (options of different lengths are padded in a batch)."""
    import torch

    from medprobe.mcq.answer import answer_by_loglik
    from medprobe.mcq.prompts import option_continuation

    mcq = loaded[family]
    cases = load_cases(case_dir)
    shots, queries = select_shots(cases, 2)
    query = queries[1]  # c2: two images
    turns = build_conversation(shots, query, style=mcq.style)
    batched = answer_by_loglik(mcq, query, turns, lettered=False, batch_size=5)
    single = answer_by_loglik(mcq, query, turns, lettered=False, batch_size=1)
    np.testing.assert_allclose(batched.logprob_sum, single.logprob_sum, rtol=1e-5, atol=1e-5)
    assert len(set(batched.n_tokens)) > 1
    context = mcq.loglik_context(turns)
    for index, option in enumerate(query.options):
        inputs = mcq.encode(turns, [context + option_continuation(index, option, style=mcq.style)])
        n = batched.n_tokens[index]
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[0, -n:] = inputs["input_ids"][0, -n:]
        with torch.inference_mode():
            loss = mcq.model(**inputs, labels=labels).loss
        assert batched.logprob_sum[index] == pytest.approx(-float(loss) * n, abs=1e-4)
    assert batched.logprob_mean == pytest.approx([s / n for s, n in zip(batched.logprob_sum, batched.n_tokens)])


@pytest.mark.parametrize("family", ["idefics", "llava"])
@pytest.mark.parametrize("method", ["loglik", "generate"])
def test_hand_set_preference_wins_end_to_end(case_dir: Path, tmp_path: Path, loaded, tiny_vlms, family: str,
                                             method: str) -> None:
    """With a huge LM-head bias on "tumor", both methods must answer option 1 ("tumor") everywhere."""
    from medprobe.mcq.run import run_mcq

    mcq = loaded[family]
    _bias_lm_head(mcq, "tumor")
    try:
        out = run_mcq(_run_config(case_dir, f"hf:{tiny_vlms[family]}", method=method), tmp_path / "out",
                      show_progress=False, mcq_model=mcq)
    finally:
        _remove_bias(mcq)
    rows = list(csv.DictReader((out / "mcq_cases.csv").open()))
    assert [r["case_id"] for r in rows] == ["c0", "c2", "c4", "c5", "c6"]
    assert {r["parsed_index"] for r in rows} == {"0"}
    expected_correct = [str(r["correct_index"] == "0") for r in rows]
    assert [r["correct"] for r in rows] == expected_correct
    summary = json.loads((out / "mcq_results.json").read_text())
    assert summary["n_cases"] == 5 and summary["n_shots"] == 2 and summary["shot_ids"] == ["c3", "c1"]
    assert summary["accuracy"] == pytest.approx(expected_correct.count("True") / 5)
    assert summary["n_unparseable"] == 0
    if method == "generate":
        assert all(r["raw_answer"].startswith("tumor tumor") for r in rows)
        assert {r["parse_method"] for r in rows} == {"substring"}
    else:
        assert summary["accuracy_by_score"]["sum"]["accuracy"] == summary["accuracy"]
        for r in rows:
            sums = json.loads(r["logprob_sum"])
            assert len(sums) == 5 and int(np.argmax(json.loads(r["logprob_mean"]))) == 0
    assert (out / "mcq_strata.png").is_file() and (out / "mcq_strata.svg").is_file()


def test_run_from_yaml_loads_the_saved_model_and_refuses_to_overwrite(case_dir: Path, tmp_path: Path,
                                                                     tiny_vlms) -> None:
    """The whole path from a run file: relative paths, model loading, outputs, overwrite guard."""
    import yaml

    from medprobe.mcq.run import run_mcq

    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(_run_config(
        Path("..") / case_dir.relative_to(tmp_path.parent), f"hf:{tiny_vlms['idefics3']}", output_dir="out")))
    out = run_mcq(run_file, show_progress=False)
    assert out == tmp_path / "out"
    summary = json.loads((out / "mcq_results.json").read_text())
    assert summary["model"].startswith("hf:") and summary["method"] == "loglik" and summary["score"] == "mean"
    assert len(summary["strata"]) == 5 and {r["specialty"] for r in summary["per_specialty"]} == {"dermatology",
                                                                                                   "radiology"}
    with pytest.raises(ConfigError, match="already holds results"):
        run_mcq(run_file, show_progress=False)
    assert run_mcq(run_file, overwrite=True, show_progress=False) == out


@pytest.mark.parametrize("blocked", ["path under a file", "read-only disk"])
def test_unwritable_output_folder_stops_before_any_case_is_answered(case_dir: Path, tmp_path: Path, monkeypatch,
                                                                    blocked: str) -> None:
    """The output folder is checked up front (its staging folder made) with the message a probe run gives,
    not after hours of answers: neither the model nor the cases' answers are reached."""
    import errno

    from medprobe import staging
    from medprobe.mcq import run as mcq_run

    def never(*args, **kwargs):
        raise AssertionError("reached before the output folder was checked")

    monkeypatch.setattr(mcq_run, "load_model", never)
    monkeypatch.setattr(mcq_run, "answer_cases", never)
    if blocked == "path under a file":
        (tmp_path / "plain").write_text("a file")
        out, reason = tmp_path / "plain" / "mcq", "plain is a file, not a folder"
    else:
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(staging.tempfile, "mkdtemp", read_only)
        out, reason = tmp_path / "mcq", "Read-only file system"
    with pytest.raises(ConfigError, match=rf"cannot create the output folder {out}: .*{reason}"):
        mcq_run.run_mcq(_run_config(case_dir, "hf:/nowhere"), out, show_progress=False)


def test_outputs_are_staged_like_run_folders(case_dir: Path, tmp_path: Path, loaded, tiny_vlms, monkeypatch) -> None:
    """An MCQ run's outputs appear together or not at all; files of yours in the folder are kept."""
    from medprobe.mcq import run as mcq_run

    config = _run_config(case_dir, f"hf:{tiny_vlms['llava']}")
    out = mcq_run.run_mcq(config, tmp_path / "out", show_progress=False, mcq_model=loaded["llava"])
    (out / "notes.txt").write_text("mine")
    before = {name: (out / name).read_bytes() for name in ("mcq_results.json", "mcq_cases.csv", "mcq_strata.png")}

    def killed(*args, **kwargs):
        raise RuntimeError("killed while writing the outputs")

    monkeypatch.setattr(mcq_run, "write_order_csv", killed)
    config["order_robustness"] = {"permutations": 1, "swap_shots": False}
    with pytest.raises(RuntimeError, match="killed"):
        mcq_run.run_mcq(config, out, overwrite=True, show_progress=False, mcq_model=loaded["llava"])
    assert {name: (out / name).read_bytes() for name in before} == before  # the old outputs stand, whole
    assert not [p for p in tmp_path.iterdir() if ".medprobe-" in p.name]
    monkeypatch.undo()
    mcq_run.run_mcq(config, out, overwrite=True, show_progress=False, mcq_model=loaded["llava"])
    assert (out / "notes.txt").read_text() == "mine" and (out / "mcq_order.csv").is_file()


def test_primary_and_sampled_tries_in_one_run(case_dir: Path, tmp_path: Path, loaded, tiny_vlms) -> None:
    """Try 0 is greedy (the headline), tries 1..3 are sampled with per-case seeds; reruns agree."""
    from medprobe.mcq.answer import case_seed
    from medprobe.mcq.run import run_mcq

    config = _run_config(case_dir, f"hf:{tiny_vlms['llava']}", method="generate", n_tries=3, seed=5)
    first = run_mcq(config, tmp_path / "a", show_progress=False, mcq_model=loaded["llava"])
    again = run_mcq(config, tmp_path / "b", show_progress=False, mcq_model=loaded["llava"])
    rows = list(csv.DictReader((first / "mcq_cases.csv").open()))
    assert len(rows) == 20 and [r["decoding"] for r in rows[:4]] == ["greedy", "sample", "sample", "sample"]
    assert [r["seed"] for r in rows[:4]] == ["", *(str(case_seed(5, "c0", t)) for t in (1, 2, 3))]
    assert len({r["seed"] for r in rows if r["try"] == "1"}) == 5  # every case its own seed
    assert rows == list(csv.DictReader((again / "mcq_cases.csv").open()))
    summary = json.loads((first / "mcq_results.json").read_text())
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], []).append(r)
    primary = [v[0]["correct"] == "True" for v in by_case.values()]
    assert summary["accuracy"] == pytest.approx(sum(primary) / 5) and summary["n_tries"] == 3
    for n in (1, 2, 3):
        hits = [any(r["correct"] == "True" for r in v if 1 <= int(r["try"]) <= n) for v in by_case.values()]
        assert summary["correct_within_n"][str(n)]["accuracy"] == pytest.approx(sum(hits) / 5)
    assert summary["n_unparseable"] == sum(r["parsed_index"] == "" for r in rows if r["try"] == "0")
    assert all("within_n" in row for row in summary["strata"] + summary["per_specialty"])


def test_run_file_validation(case_dir: Path) -> None:
    """Inconsistent settings and typos are errors; the documented example is a valid run file."""
    import yaml

    from medprobe.mcq.run import parse_mcq_config

    with pytest.raises(ConfigError, match="n_tries > 0 .sampled tries. needs method: generate"):
        parse_mcq_config(_run_config(case_dir, "hf:x", n_tries=3))
    with pytest.raises(ConfigError, match="'decoding' is gone .* set n_tries"):
        parse_mcq_config(_run_config(case_dir, "hf:x", decoding="sample"))
    with pytest.raises(ConfigError, match="drop include_reason: True, option_labels: 'letters'"):
        parse_mcq_config(_run_config(case_dir, "hf:x", prompt_style="study", include_reason=True,
                                     option_labels="letters"))
    with pytest.raises(ConfigError, match="model.temprature: unknown key"):
        parse_mcq_config(_run_config(case_dir, "hf:x") | {"model": {"name": "hf:x", "temprature": 1}})
    example = yaml.safe_load((Path(__file__).parents[2] / "configs" / "mcq_example.yaml").read_text())
    dumped = parse_mcq_config(example, "mcq_example.yaml").model_dump()
    for key, value in example.items():
        expected = {**dumped[key], **value} if isinstance(value, dict) else value
        assert dumped[key] == expected, key


def test_model_source_resolution(tmp_path: Path) -> None:
    """Presets map to hub ids, ``hf:`` folders resolve against the run file's folder, ``path`` wins."""
    from medprobe.mcq.run import MCQModelConfig, model_source

    (tmp_path / "models" / "vlm").mkdir(parents=True)
    assert model_source(MCQModelConfig(name="idefics-9b-instruct"), tmp_path) == "HuggingFaceM4/idefics-9b-instruct"
    assert model_source(MCQModelConfig(name="hf:models/vlm"), tmp_path) == str(tmp_path / "models" / "vlm")
    assert model_source(MCQModelConfig(name="hf:org/some-vlm"), tmp_path) == "org/some-vlm"
    assert model_source(MCQModelConfig(name="idefics-9b", path="models/vlm"), tmp_path) == str(
        tmp_path / "models" / "vlm")
    with pytest.raises(ConfigError, match="not a known VLM preset"):
        model_source(MCQModelConfig(name="gpt-5v"), tmp_path)
