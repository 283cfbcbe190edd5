"""Turn a model's free-text reply into an option index, or admit that it cannot.

Generated answers come in many shapes ("3", "(3)", "Answer: 3. Sarcoidosis", "C", "sarcoidosis",
"Sarcoidsis" with a typo). :func:`parse_answer` tries the unambiguous readings first and stops at
the first one that applies; a reply that matches no rule, or matches two options, is reported as
unparseable (``None``) and counted as wrong -- never guessed -- so accuracy cannot be inflated by a
lenient parser.
"""

from __future__ import annotations

import difflib
import re
from typing import Sequence

from medprobe.mcq.cases import normalize_option

#: the ratio difflib must reach for a fuzzy match (typos, missing words)
FUZZY_THRESHOLD = 0.8
#: and the lead it needs over the second-best option, so near-ties stay unparsed
FUZZY_MARGIN = 0.1

# "Answer: ...", "The answer is ...", "Final answer - ..." -- we read what follows
_ANSWER_MARKER = re.compile(r"\banswer\b\s*(?:is\b)?\s*[:\-]?\s*", re.IGNORECASE)
_REASON_MARKER = re.compile(r"\breason(?:ing)?\s*:", re.IGNORECASE)
# a label at the start: "3", "(3)", "[3]", "3.", "3)", "3:", "Option 3", "choice (3)". "Marked" labels
# (brackets, punctuation, "option") count on their own; a bare "3 ..." only when the text agrees.
_LEADING_NUMBER = re.compile(
    r"^(?P<word>(?:option|choice)\s*)?(?P<open>[(\[])?\s*(?P<label>\d{1,2})\s*(?P<close>[)\].:])?"
    r"(?=\s|$|[,;])(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_OPTION_WORD_NUMBER = re.compile(r"\b(?:option|choice)\s*[(\[]?(\d{1,2})\b", re.IGNORECASE)
# letters only in upper case ("a" is an article), or lower case inside brackets: "(c)"
_LEADING_LETTER = re.compile(
    r"^(?P<word>(?i:option|choice)\s*)?(?:(?P<open>[(\[])\s*(?P<label>[A-Za-z])\s*[)\]]"
    r"|(?P<upper>[A-Z])(?P<close>[.):])?)(?=\s|$|[,;])(?P<rest>.*)$", re.DOTALL)


def option_label(index: int, lettered: bool = False) -> str:
    """How option ``index`` (0-based) is labelled in prompts: ``"1"``.. or ``"A"``.."""
    return chr(ord("A") + index) if lettered else str(index + 1)


def split_reason(text: str) -> tuple[str, str | None]:
    """Split a reply into the answer part and the explanation after ``Reason:`` (if any)."""
    match = _REASON_MARKER.search(text)
    if match is None:
        return text, None
    return text[: match.start()], text[match.end():].strip() or None


def _answer_segment(text: str) -> str:
    """The part of a reply that states the answer: after "Answer:" when present, before any
    "Reason:", first non-empty line only (models often ramble on the following lines)."""
    head, _ = split_reason(text)
    marker = _ANSWER_MARKER.search(head)
    if marker is not None:
        head = head[marker.end():]
    for line in head.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _text_match(segment: str, options: Sequence[str]) -> tuple[int | None, str]:
    """Match option text: exact, then containment either way, then fuzzy."""
    wanted = normalize_option(re.sub(r"[\s.,;:!?]+$", "", segment))
    if not wanted:
        return None, "empty"
    normalized = [normalize_option(o) for o in options]
    exact = [i for i, option in enumerate(normalized) if option == wanted]
    if len(exact) == 1:
        return exact[0], "exact"
    # option text inside the reply ("it is sarcoidosis of the skin"); if several options occur,
    # the longest wins only when it contains all the others ("pneumonia" in "pcp pneumonia")
    inside = [i for i, option in enumerate(normalized) if re.search(rf"(?<!\w){re.escape(option)}(?!\w)", wanted)]
    if inside:
        longest = max(inside, key=lambda i: len(normalized[i]))
        if all(normalized[i] in normalized[longest] for i in inside):
            return longest, "substring"
        return None, "ambiguous"
    # a reply cut short by max_new_tokens: its text is the start of exactly one option
    if len(wanted) >= 4:
        prefix = [i for i, option in enumerate(normalized) if option.startswith(wanted)]
        if len(prefix) == 1:
            return prefix[0], "substring"
        if len(prefix) > 1:
            return None, "ambiguous"
    ratios = sorted(((difflib.SequenceMatcher(None, wanted, option).ratio(), i)
                     for i, option in enumerate(normalized)), reverse=True)
    best_ratio, best = ratios[0]
    runner_up = ratios[1][0] if len(ratios) > 1 else 0.0
    if best_ratio >= FUZZY_THRESHOLD and best_ratio - runner_up >= FUZZY_MARGIN:
        return best, "fuzzy"
    return None, "unparseable"


def _label_with_text(index: int, match: re.Match[str], options: Sequence[str],
                     method: str) -> tuple[int | None, str] | None:
    """Check a leading label against the text after it ("3. Sarcoidosis").

    A marked label ("3.", "(3)", "Option 3") followed by text naming another option is a
    ``conflict`` (unparseable); with text that cannot be placed ("3. see above") the label stands.
    A bare one ("3 weeks of fever", "A fracture of the rib") stands only alone or with agreeing
    text -- otherwise this returns ``None`` and the caller reads the reply as option text.
    """
    marked = bool(match.group("word") or match.group("open") or match.group("close"))
    rest = match.group("rest").strip().lstrip(".):-").strip()
    if not rest:
        return index, method
    by_text, _ = _text_match(rest, options)
    if by_text == index:
        return index, method
    if not marked:
        return None
    return (None, "conflict") if by_text is not None else (index, method)


def parse_answer(text: str, options: Sequence[str], lettered: bool = False) -> tuple[int | None, str]:
    """Return ``(option index or None, method)`` for a generated reply.

    ``method`` is one of ``number``, ``letter``, ``exact``, ``substring``, ``fuzzy`` when an
    option was found, and ``empty``, ``conflict`` (label and text name different options),
    ``ambiguous`` (several options fit) or ``unparseable`` when none was. Letters are read only
    when the prompt labelled options with letters (``lettered=True``); numbers are always read,
    since models answer "3" even to lettered lists far more rarely than the reverse.
    """
    segment = _answer_segment(text)
    if not segment:
        return None, "empty"
    n = len(options)
    number = _LEADING_NUMBER.match(segment)
    if number is not None and 1 <= int(number.group("label")) <= n:
        found = _label_with_text(int(number.group("label")) - 1, number, options, "number")
        if found is not None:
            return found
    if lettered:
        letter = _LEADING_LETTER.match(segment)
        if letter is not None:
            index = ord((letter.group("label") or letter.group("upper")).upper()) - ord("A")
            if 0 <= index < n:
                found = _label_with_text(index, letter, options, "letter")
                if found is not None:
                    return found
    word = _OPTION_WORD_NUMBER.search(segment)
    if word is not None and 1 <= int(word.group(1)) <= n:
        return int(word.group(1)) - 1, "number"
    return _text_match(segment, options)
