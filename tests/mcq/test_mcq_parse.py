"""The answer parser never guesses: an adversarial corpus of replies, each with its expected parse.

Options are NEJM-like on purpose: "Pneumonia" is part of "Pneumocystis pneumonia" and
"Tuberculosis" of "Miliary tuberculosis", so substring readings can be told apart from real ones.
"""

from __future__ import annotations

import pytest

from medprobe.mcq.parse import FOUND, answer_segment, parse_answer

OPTIONS = ["Pneumonia", "Pneumocystis pneumonia", "Sarcoidosis", "Tuberculosis", "Miliary tuberculosis"]

CORPUS = [
    # the examples
    ("Option 2 or option 3", None, "multiple"),
    ("(2) or (3)", None, "multiple"),
    ("4. Tuberculosis; 3. Sarcoidosis", None, "multiple"),
    ("Pneumonia or Pneumocystis pneumonia", None, "multiple"),
    ("Pneumonia, not pneumocystis pneumonia", None, "multiple"),
    ("Not sarcoidosis", None, "negated"),
    # several options, by number, label or text
    ("2 or 3", None, "multiple"),
    ("2/3", None, "multiple"),
    ("3, 4", None, "multiple"),
    ("Option 2 or 3", None, "multiple"),
    ("2 (sarcoidosis)", None, "multiple"),
    ("Answer: 3. Tuberculosis", None, "multiple"),
    ("Sarcoidosis or tuberculosis", None, "multiple"),
    ("Sarcoidosis and tuberculosis", None, "multiple"),
    ("Tuberculosis rather than sarcoidosis", None, "multiple"),
    ("Tuberculosis vs sarcoidosis", None, "multiple"),
    ("Neither sarcoidosis nor tuberculosis", None, "multiple"),
    ("Sarcoidosis; tuberculosis is less likely", None, "multiple"),
    # plural label words, lists with "both"/"either", options on separate lines (issue 25)
    ("Options 1 and 2", None, "multiple"),
    ("Answers 2, 3", None, "multiple"),
    ("choices 2 and 4", None, "multiple"),
    ("both 2 and 3", None, "multiple"),
    ("either 2 or 3", None, "multiple"),
    ("1/2", None, "multiple"),
    ("3\n4", None, "multiple"),
    ("Answer: 3\n4", None, "multiple"),
    ("3. Sarcoidosis\n4. Tuberculosis", None, "multiple"),
    ("Sarcoidosis\nTuberculosis", None, "multiple"),
    ("Sarcoidosis\nPneumocystis pneumonia may also fit", None, "multiple"),
    ("3. Sarcoidosis\nThe hilar nodes are enlarged", 2, "number"),  # prose on later lines is no option
    ("3\nTuberculosis is unlikely", 2, "number"),
    # negations
    ("It is not tuberculosis", None, "negated"),
    ("Unlikely to be sarcoidosis", None, "negated"),
    ("Sarcoidosis is ruled out", None, "negated"),
    ("not 3", None, "negated"),
    ("Anything except sarcoidosis", None, "negated"),
    # an option found only as part of another option's text
    ("Tuberculosis of the lung", None, "substring-of-another"),
    ("Probably tuberculosis", None, "substring-of-another"),
    ("Likely pneumonia", None, "substring-of-another"),
    # labels that are no option, nothing to read
    ("6", None, "out-of-range"),
    ("Option 7", None, "out-of-range"),
    ("0", None, "out-of-range"),
    ("", None, "empty"),
    ("   \n  ", None, "empty"),
    ("Reason: the lungs", None, "empty"),
    ("I don't know", None, "unparseable"),
    ("None of the above", None, "unparseable"),
    ("3 weeks of fever", None, "unparseable"),
    ("A 3.5 cm mass", None, "unparseable"),
    ("Option C", None, "unparseable"),  # letters are not read for numbered options
    # one option, unambiguously
    ("Sarcoidosis", 2, "exact"),
    ("tuberculosis.", 3, "exact"),
    ("Miliary tuberculosis", 4, "exact"),
    ("Pneumonia", 0, "exact"),
    ("Pneumocystis pneumonia.", 1, "exact"),
    ("The answer is pneumonia", 0, "exact"),
    ("Assistant: Sarcoidosis.", 2, "exact"),
    ("Sarcoidosis.\nUser: A 40-year-old man. 1. Pneumonia 2. Pneumocystis pneumonia", 2, "exact"),
    ("Sarcoidosis\nTuberculosis is also possible", 2, "exact"),  # first line only
    ("4", 3, "number"),
    ("(3)", 2, "number"),
    ("Answer: (3)", 2, "number"),
    ("4. Tuberculosis", 3, "number"),
    ("5. Miliary tuberculosis", 4, "number"),
    ("3 (sarcoidosis)", 2, "number"),
    ("No. 3", 2, "number"),
    ("I would choose option 1", 0, "number"),
    ("Sarcoidosis of the skin", 2, "substring"),
    ("pneumocystis", 1, "prefix"),
    ("Sarcoidsis", 2, "fuzzy"),
]

LETTERED = [
    ("B or C", None, "multiple"),
    ("(B) or (C)", None, "multiple"),
    ("C. Tuberculosis", None, "multiple"),
    ("Not C", None, "negated"),
    ("c", None, "unparseable"),  # a lone lower-case letter may be a word
    ("F", None, "out-of-range"),
    ("A or B", None, "multiple"),
    ("Options A and B", None, "multiple"),
    ("both B and C", None, "multiple"),
    ("A/B", None, "multiple"),
    ("It is B or C", None, "multiple"),
    ("B\nC", None, "multiple"),
    ("C", 2, "letter"),
    ("(c)", 2, "letter"),
    ("Answer: D. Tuberculosis", 3, "letter"),
    ("Option E", 4, "letter"),
]


def test_corpus_is_large_and_covers_every_outcome() -> None:
    assert len(CORPUS) + len(LETTERED) >= 40
    methods = {method for _, _, method in CORPUS + LETTERED}
    assert {"multiple", "negated", "substring-of-another", "out-of-range", "empty", "unparseable"} <= methods
    assert set(FOUND) <= methods


@pytest.mark.parametrize("reply, index, method", CORPUS)
def test_numbered_replies(reply: str, index: int | None, method: str) -> None:
    assert parse_answer(reply, OPTIONS) == (index, method)


@pytest.mark.parametrize("reply, index, method", LETTERED)
def test_lettered_replies(reply: str, index: int | None, method: str) -> None:
    assert parse_answer(reply, OPTIONS, lettered=True) == (index, method)


def test_numbers_inside_option_text_are_not_labels() -> None:
    options = ["Type 2 diabetes", "Type 1 diabetes", "Gout", "Pseudogout", "Lupus"]
    assert parse_answer("Type 2 diabetes", options) == (0, "exact")
    assert parse_answer("1. Type 2 diabetes", options) == (0, "number")
    assert parse_answer("2. Type 2 diabetes", options) == (None, "multiple")  # label 2 is "Type 1 diabetes"
    assert parse_answer("Gout", options) == (2, "exact")  # not the end of "Pseudogout"
    assert parse_answer("Pseudogout", options) == (3, "exact")


def test_answer_segment_stops_at_reason_and_next_turn() -> None:
    assert answer_segment("Answer: 3. Sarcoidosis\nReason: granulomas") == "3. Sarcoidosis"
    assert answer_segment(" Gout. User: next case") == "Gout."
