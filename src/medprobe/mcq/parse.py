"""Turn a model's free-text reply into an option index, or admit that it cannot.

Generated answers come in many shapes ("3", "(3)", "Answer: 3. Sarcoidosis", "C", "sarcoidosis",
"Sarcoidsis" with a typo). :func:`parse_answer` never guesses: it collects *every* option the
reply's answer line names -- by label ("3.", "(3)", "option 3", a reply that is only numbers), by
number or letter, and by option text -- and returns an option only when exactly one is named, the
reply does not negate it, and it is not named merely as a piece of another option's text.
Everything else is reported as unparseable (``None``) with the reason, and counted as wrong, so a
lenient parser cannot inflate accuracy:

* ``multiple`` -- two or more options named ("Option 2 or option 3", "(2) or (3)", "2 or option 3",
  "Options 1 and 2", "both 2 and 3", "A or B", "1/2", an option on each of two lines,
  "4. Tuberculosis; 3. Sarcoidosis", "Pneumonia or Pneumocystis pneumonia", "3. tumor" when
  option 3 is not the tumor);
* ``negated`` -- a negation next to the answer ("Not sarcoidosis", "Pneumonia, not pneumocystis
  pneumonia", "unlikely to be gout");
* ``substring-of-another`` -- the reply contains option A's text, but A is itself part of another
  option B ("Tuberculosis" inside "Miliary tuberculosis"), so "tuberculosis of the lung" could mean
  either; a reply that *is* A ("Tuberculosis.") or labels it ("1. Tuberculosis") is fine;
* ``out-of-range`` -- a label that is no option ("7." with five options);
* ``empty`` / ``unparseable`` -- nothing to read, or nothing that fits.

Text is compared after :func:`~medprobe.mcq.cases.normalize_option` (case, spacing, final full
stop); a misspelt or cut-off reply is read only when it is the whole answer line and fits one
option far better than any other (``fuzzy`` / ``prefix``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Sequence

from medprobe.mcq.cases import normalize_option

#: the ratio difflib must reach for a fuzzy match (typos, missing words)
FUZZY_THRESHOLD = 0.8
#: and the lead it needs over the second-best option, so near-ties stay unparsed
FUZZY_MARGIN = 0.1
#: a cut-off reply is read as the start of an option only from this many characters on
MIN_PREFIX = 4

#: methods that name an option; every other method means "no answer"
FOUND = ("number", "letter", "exact", "substring", "fuzzy", "prefix")

# "Answer: ...", "The answer is ...", "Final answer - ...", "Assistant: ..." -- we read what follows
_ANSWER_MARKER = re.compile(r"\b(?:answer\b\s*(?:is\b)?|assistant\s*:)\s*[:\-]?\s*", re.IGNORECASE)
_REASON_MARKER = re.compile(r"\breason(?:ing)?\s*:", re.IGNORECASE)
# a turn marker the model wrote after its answer (IDEFICS continues the conversation)
_NEXT_TURN = re.compile(r"\bUser\s*:")
# marked number labels: "(3)", "[3]", "3.", "3)", "3:", "#3", "option 3", "choice (3)", "no. 3"
_NUMBER_LABEL = re.compile(
    r"(?:\b(?:options?|choices?|answers?|numbers?|no\.?)\s*#?\s*[(\[]?\s*(?P<a>\d{1,2})\b\s*[)\]]?"
    r"|[(\[]\s*(?P<b>\d{1,2})\s*[)\]]"
    r"|#\s*(?P<c>\d{1,2})\b"
    r"|(?<![\w.,])(?P<d>\d{1,2})\s*[.):](?!\d))", re.IGNORECASE)
# an unmarked number ("2 or option 3", "2 (sarcoidosis)"), not a decimal, a percentage or "45-year"
_BARE_NUMBER = re.compile(r"(?<![\w.,#(\[-])\d{1,2}(?![\w.,%)\]:-])")
# marked letter labels (only when options are lettered): "(C)", "[c]", "C.", "C)", "C:", "option C"
_LETTER_LABEL = re.compile(
    r"(?:\b(?i:options?|choices?|answers?)\b\s*[(\[]?\s*(?P<a>[A-Za-z])\b\s*[)\]]?"
    r"|[(\[]\s*(?P<b>[A-Za-z])\s*[)\]]"
    r"|(?<![\w.])(?P<c>[A-Z])[.):](?!\w))")
# a number followed by one of these is a label in a list ("both 2 and 3"), not a quantity ("3 weeks")
_LIST_WORD = re.compile(r"\s*(?:and|or|nor|vs\.?|versus)\b", re.IGNORECASE)
# two capital letters joined by a connective ("A or B", "both B and C", "A/B"): a list of letter labels
_LETTER_PAIR = re.compile(
    r"(?<![\w'])(?P<first>[A-Z])\s*(?:,|/|&|\band\b|\bor\b|\bnor\b|\bvs\.?|\bversus\b)\s*(?=(?P<second>[A-Z])(?![\w']))")
# a reply that is only labels and connectives: "3", "2 or 3", "2/3", "C", "B, D"
_CONNECTIVES = r"(?:\s*(?:,|;|/|&|\bor\b|\band\b|\bvs\.?|\bversus\b|-)\s*|\s+)"
_ONLY_NUMBERS = re.compile(rf"\s*\d{{1,2}}(?:{_CONNECTIVES}\d{{1,2}})*\s*")
_ONLY_LETTERS = re.compile(rf"\s*[A-Za-z](?:{_CONNECTIVES}[A-Za-z])*\s*")
# words that turn "X" into "not X"
_NEGATION = re.compile(
    r"\b(?:not|no|never|neither|nor|isn'?t|wasn'?t|unlikely|less likely|rather than|instead of|"
    r"other than|except|excluding|excluded|exclude|rule[sd]? out|without|versus|vs)\b", re.IGNORECASE)


def option_label(index: int, lettered: bool = False) -> str:
    """How option ``index`` (0-based) is labelled in prompts: ``"1"``.. or ``"A"``.."""
    return chr(ord("A") + index) if lettered else str(index + 1)


def split_reason(text: str) -> tuple[str, str | None]:
    """Split a reply into the answer part and the explanation after ``Reason:`` (if any)."""
    match = _REASON_MARKER.search(text)
    if match is None:
        return text, None
    return text[: match.start()], text[match.end():].strip() or None


def answer_lines(text: str) -> list[str]:
    """The non-empty lines of the part of a reply that states the answer: before any "Reason:" or
    next "User:" turn, after "Answer:" when present."""
    head, _ = split_reason(text)
    turn = _NEXT_TURN.search(head)
    if turn is not None:
        head = head[: turn.start()]
    marker = _ANSWER_MARKER.search(head)
    if marker is not None:
        head = head[marker.end():]
    return [line.strip() for line in head.splitlines() if line.strip()]


def answer_segment(text: str) -> str:
    """The line that states the answer: the first of :func:`answer_lines` (models go on to ramble,
    or to write the next case, on the following lines; those are only checked for other options)."""
    lines = answer_lines(text)
    return lines[0] if lines else ""


@dataclass(frozen=True)
class _Mention:
    index: int  # 0-based option, or -1 for a label that is no option
    start: int
    end: int
    kind: str  # "number" | "letter" | "text"


def _text_mentions(segment: str, normalized: Sequence[str]) -> list[_Mention]:
    """Every place an option's text occurs as whole words; occurrences inside a longer
    occurrence ("pneumonia" inside "pneumocystis pneumonia") belong to the longer one."""
    lowered = segment.casefold()
    found = []
    for index, option in enumerate(normalized):
        pattern = r"\s+".join(re.escape(word) for word in option.split())
        for match in re.finditer(rf"(?<!\w){pattern}(?!\w)", lowered):
            found.append(_Mention(index, match.start(), match.end(), "text"))
    return [m for m in found
            if not any(o is not m and o.start <= m.start and m.end <= o.end and (o.end - o.start) > (m.end - m.start)
                       for o in found)]


def _inside(start: int, end: int, spans: Sequence[_Mention]) -> bool:
    return any(s.start <= start and end <= s.end for s in spans)


def _label_mentions(segment: str, n: int, lettered: bool, texts: Sequence[_Mention]) -> list[_Mention]:
    """Labels outside option text ("type 2 diabetes" is text, not option 2)."""
    found = []
    if _ONLY_NUMBERS.fullmatch(segment):
        for match in re.finditer(r"\d{1,2}", segment):
            value = int(match.group())
            found.append(_Mention(value - 1 if 1 <= value <= n else -1, match.start(), match.end(), "number"))
    elif lettered and not texts and _ONLY_LETTERS.fullmatch(segment) and (
            len(segment.strip()) == 1 and segment.strip().isupper() or len(segment.strip()) > 1):
        for match in re.finditer(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", segment):
            index = ord(match.group().upper()) - ord("A")
            found.append(_Mention(index if index < n else -1, match.start(), match.end(), "letter"))
    else:
        for match in _NUMBER_LABEL.finditer(segment):
            value = int(next(g for g in match.groups() if g is not None))
            if not _inside(match.start(), match.end(), texts):
                found.append(_Mention(value - 1 if 1 <= value <= n else -1, match.start(), match.end(), "number"))
        for match in _BARE_NUMBER.finditer(segment):
            if _inside(match.start(), match.end(), texts) or any(
                    m.start <= match.start() < m.end for m in found):
                continue
            after = segment[match.end():]
            word_at = match.end() + len(after) - len(after.lstrip())
            # "3 weeks of fever" is a duration; "3 sarcoidosis" and "2 (sarcoidosis)" are labels
            if (re.match(r"\s*[^\W\d_]", after) and not _LIST_WORD.match(after)
                    and not any(t.start == word_at for t in texts)):
                continue
            value = int(match.group())
            found.append(_Mention(value - 1 if 1 <= value <= n else -1, match.start(), match.end(), "number"))
        if lettered:
            for match in _LETTER_LABEL.finditer(segment):
                letter = next(g for g in match.groups() if g is not None)
                index = ord(letter.upper()) - ord("A")
                if not _inside(match.start(), match.end(), texts):
                    found.append(_Mention(index if index < n else -1, match.start(), match.end(), "letter"))
            for match in _LETTER_PAIR.finditer(segment):
                for start in (match.start("first"), match.end()):
                    index = ord(segment[start]) - ord("A")
                    if not _inside(start, start + 1, texts) and not any(m.start <= start < m.end for m in found):
                        found.append(_Mention(index if index < n else -1, start, start + 1, "letter"))
    return found


def _whole_reply_match(wanted: str, normalized: Sequence[str]) -> tuple[int | None, str]:
    """A reply naming no option outright: the start of exactly one option (cut off by
    ``max_new_tokens``), or one option with a typo, clearly ahead of the rest."""
    if len(wanted) >= MIN_PREFIX:
        prefix = [i for i, option in enumerate(normalized) if option.startswith(wanted)]
        if len(prefix) == 1:
            return prefix[0], "prefix"
        if len(prefix) > 1:
            return None, "multiple"
    ratios = sorted(((difflib.SequenceMatcher(None, wanted, option).ratio(), i)
                     for i, option in enumerate(normalized)), reverse=True)
    best_ratio, best = ratios[0]
    runner_up = ratios[1][0] if len(ratios) > 1 else 0.0
    if best_ratio >= FUZZY_THRESHOLD and best_ratio - runner_up >= FUZZY_MARGIN:
        return best, "fuzzy"
    return None, "unparseable"


def _part_of_another(index: int, normalized: Sequence[str]) -> bool:
    option = normalized[index]
    return any(other != option and re.search(rf"(?<!\w){re.escape(option)}(?!\w)", other)
               for other in normalized)


def parse_answer(text: str, options: Sequence[str], lettered: bool = False) -> tuple[int | None, str]:
    """Return ``(option index or None, method)`` for a generated reply.

    ``method`` is one of :data:`FOUND` (``number``, ``letter``, ``exact``, ``substring``,
    ``fuzzy``, ``prefix``) when an option was found, and ``empty``, ``multiple``, ``negated``,
    ``substring-of-another``, ``out-of-range`` or ``unparseable`` when none was (see the module
    docstring). Letters are read only when the prompt labelled options with letters
    (``lettered=True``: "a" is an article); numbers are always read. The answer is read from the
    first line; a later line that names another option by itself (a reply "3" then "4" on the next
    line, or "3. Sarcoidosis" then "4. Tuberculosis") makes the reply ``multiple``, while prose
    that names none is ignored.
    """
    lines = answer_lines(text)
    index, method = _parse_line(lines[0] if lines else "", options, lettered)
    if index is not None:
        for line in lines[1:]:
            other, how = _parse_line(line, options, lettered)
            if other is not None and other != index and how in ("number", "letter", "exact", "substring"):
                return None, "multiple"
    return index, method


def _parse_line(segment: str, options: Sequence[str], lettered: bool) -> tuple[int | None, str]:
    """:func:`parse_answer` for one line."""
    segment = re.sub(r"[\s.,;:!?]+$", "", segment)
    if not segment:
        return None, "empty"
    normalized = [normalize_option(o) for o in options]
    texts = _text_mentions(segment, normalized)
    labels = _label_mentions(segment, len(options), lettered, texts)
    mentions = texts + labels
    if any(m.index < 0 for m in labels):
        return None, "out-of-range"
    named = {m.index for m in mentions}
    if len(named) > 1:
        return None, "multiple"
    rest = segment
    for m in sorted(mentions, key=lambda m: -m.start):
        rest = rest[: m.start] + " " + rest[m.end:]
    if _NEGATION.search(rest):
        return None, "negated"
    if not named:
        return _whole_reply_match(normalize_option(segment), normalized)
    index = named.pop()
    kinds = {m.kind for m in mentions}
    if "number" in kinds or "letter" in kinds:
        return index, "number" if "number" in kinds else "letter"
    if normalize_option(segment) == normalized[index]:
        return index, "exact"
    if _part_of_another(index, normalized):
        return None, "substring-of-another"
    return index, "substring"
