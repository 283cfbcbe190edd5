"""Multiple-choice diagnosis cases (NEJM Image Challenge style) and their validation.

A case set is a JSONL file (or a folder holding ``cases.jsonl``), one case per line::

    {"id": "2021-03-04", "images": ["img/0304.jpg"], "vignette": "A 54-year-old man ...",
     "question": "What is the diagnosis?", "options": ["A", "B", "C", "D", "E"], "answer": 2,
     "date": "2021-03-04", "human_correct": 0.41, "specialty": "dermatology",
     "explanation": "Shown when the case is used as a few-shot example."}

``answer`` is the option's index (0-based) or its exact text. Image paths are relative to the
JSONL file's folder. Everything is checked on load, and every error names the file, the line and
the case id, because a wrong key answer silently corrupts an accuracy figure that nobody re-checks.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medprobe.errors import DataError

CASES_FILE = "cases.jsonl"


class _CaseRecord(BaseModel):
    """One line as written by the user: the answer may still be text and images relative."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    images: list[str] = Field(min_length=1)
    vignette: str = ""
    question: str = Field(min_length=1)
    options: list[str]
    answer: int | str
    date: dt.date | None = None
    human_correct: float | None = Field(None, ge=0.0, le=1.0)
    specialty: str | None = None
    explanation: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # numeric ids are common in exported spreadsheets; keep them as text so "7" == 7
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("answer", mode="before")
    @classmethod
    def _no_bool_answer(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("answer must be an option index (0-based) or the option text, not true/false")
        return value


class MCQCase(BaseModel):
    """A validated case: ``answer`` is an index into ``options``; ``images`` are absolute paths."""

    model_config = ConfigDict(frozen=True)

    id: str
    images: tuple[Path, ...]
    vignette: str
    question: str
    options: tuple[str, ...]
    answer: int
    date: dt.date | None = None
    human_correct: float | None = None
    specialty: str | None = None
    explanation: str | None = None
    #: where the case came from, for error messages
    source: str = ""
    line: int = 0

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]


def normalize_option(text: str) -> str:
    """Compare options the way a reader would: case, spacing and trailing full stops ignored."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip().casefold()


def _resolve_answer(record: _CaseRecord, where: str) -> int:
    """Index of the correct option; the answer must match exactly one option."""
    options = [normalize_option(o) for o in record.options]
    if isinstance(record.answer, int):
        if not 0 <= record.answer < len(options):
            raise DataError(
                f"{where}: answer index {record.answer} is out of range for {len(options)} options "
                f"(indices are 0-based: 0..{len(options) - 1})"
            )
        target = options[record.answer]
    else:
        target = normalize_option(record.answer)
    matches = [i for i, option in enumerate(options) if option == target]
    if not matches:
        raise DataError(f"{where}: answer {record.answer!r} is not one of the options {record.options}")
    if len(matches) > 1:
        raise DataError(
            f"{where}: the answer {record.options[matches[0]]!r} matches {len(matches)} options "
            f"(0-based positions {matches}); exactly one option must be correct"
        )
    return matches[0]


def _check_options(record: _CaseRecord, n_options: int, where: str) -> None:
    if len(record.options) != n_options:
        raise DataError(f"{where}: has {len(record.options)} options, expected {n_options} (set n_options to change)")
    seen: dict[str, int] = {}
    for position, option in enumerate(record.options):
        if not option.strip():
            raise DataError(f"{where}: option {position} is empty")
        key = normalize_option(option)
        if key in seen:
            raise DataError(f"{where}: options {seen[key]} and {position} are the same ({option!r}); "
                            "duplicate options make the question ambiguous")
        seen[key] = position


def _resolve_images(record: _CaseRecord, base: Path, where: str, check_images: bool) -> tuple[Path, ...]:
    paths = []
    for name in record.images:
        path = (base / name).resolve()
        if check_images and not path.is_file():
            raise DataError(f"{where}: image {name!r} not found (looked for {path})")
        paths.append(path)
    return tuple(paths)


def cases_path(path: str | Path) -> Path:
    """The JSONL file behind ``path`` (the file itself, or ``cases.jsonl`` inside a folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CASES_FILE
    if not path.is_file():
        raise DataError(f"case file not found: {path} (give a .jsonl file or a folder holding {CASES_FILE})")
    return path


def load_cases(path: str | Path, n_options: int = 5, check_images: bool = True) -> list[MCQCase]:
    """Read and validate every case; the first problem stops loading with a message naming it.

    ``check_images=False`` skips the existence check (for listing a case set whose images live
    elsewhere); running a model always needs them.
    """
    file = cases_path(path)
    base = file.parent
    cases: list[MCQCase] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{file.name} line {number}"
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object per line, got {type(data).__name__}")
        if isinstance(data.get("id"), (str, int)):
            where += f" (case {str(data['id'])!r})"
        try:
            record = _CaseRecord.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'case'}: "
                f"{'unknown key' if item['type'] == 'extra_forbidden' else item['msg']}"
                for item in error.errors()
            )
            raise DataError(f"{where}: {problems}") from None
        if record.id in first_line:
            raise DataError(f"{where}: duplicate id {record.id!r} (first used on line {first_line[record.id]})")
        first_line[record.id] = number
        answer = _resolve_answer(record, where)
        _check_options(record, n_options, where)
        cases.append(
            MCQCase(
                id=record.id,
                images=_resolve_images(record, base, where, check_images),
                vignette=record.vignette.strip(),
                question=record.question.strip(),
                options=tuple(o.strip() for o in record.options),
                answer=answer,
                date=record.date,
                human_correct=record.human_correct,
                specialty=record.specialty,
                explanation=record.explanation.strip() if record.explanation else None,
                source=str(file),
                line=number,
            )
        )
    if not cases:
        raise DataError(f"{file}: holds no cases")
    return cases
