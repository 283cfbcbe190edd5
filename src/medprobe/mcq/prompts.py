r"""Few-shot prompts for multiple-choice diagnosis, in two styles.

A prompt is first built as a model-neutral conversation (:class:`Turn` list): each shot is a
user turn (images, vignette, question, numbered options) followed by an assistant turn with its
answer; the query is a last user turn without its answer. The style decides what the answer
looks like and how the turns are rendered:

* ``study`` (:func:`render_study`, IDEFICS v1 only) -- the prompt of Han et al.'s NEJM Image
  Challenge evaluation, following their public code (``nejm_image_challenge/nejm_test.py`` in
  peterhan91/Multimodal-Probes, the layout of their Fig. S2): per case the interleaved items
  ``"User:"``, the image(s), then one text item holding the case text and, for a shot,
  ``"\nAssistant: <answer option text>.\n"``; the query's text item ends with ``"\nAssistant:"``.
  No instruction sentence, no option label in the answer, no ``<end_of_utterance>`` written by us.
  The study passed these items to ``IdeficsProcessor`` with its default
  ``add_end_of_utterance_token``, which in the transformers of 2023 was on for tokenizers that
  list ``<end_of_utterance>`` among their special tokens (the IDEFICS instruct ones do): the
  processor then put ``<end_of_utterance>`` between each shot's text and the next ``"User:"``, so
  it is part of what the study's model saw. transformers 5 no longer detects the token that way,
  so :class:`~medprobe.mcq.answer.MCQModel` decides it from the tokenizer and passes it
  explicitly. The study read seven lines of its own case files, which are not public. Two case
  texts fit seven lines (``case_text``): ``vignette`` (the default) -- the vignette line, the
  question line and the five numbered options (``1. <option>``) -- and ``study-figure`` -- the
  question, a ``Choices:`` line and the five numbered options, as the study's figure of two cases
  shows them (``figs/nejm_cases.png``). The default keeps the vignette because a NEJM Image
  Challenge case is its vignette and question together, and the figure is a display that may
  leave it out; ``study-figure`` is the figure taken at its word.
* ``chat`` -- medprobe's own format for chat models: an instruction sentence, answers written as
  ``Answer: <n>. <option>`` (and optionally ``Reason: ...``). :func:`render_idefics` lays it out
  for IDEFICS v1 with turns closed by ``<end_of_utterance>`` as in its instruct tuning;
  :func:`render_chat` uses the processor's chat template, with earlier shots as earlier
  user/assistant turns and ``{"type": "image"}`` placeholders (images passed separately, in order).

Shots are the earliest cases by date unless named, and are never scored: a case the model has
just seen answered cannot test it. When the earliest dates tie, which case is a shot (or which
comes first) would depend on the order of lines in a file, so that is an error unless the run
file names the shots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from PIL import Image

from medprobe.errors import ConfigError, ImageReadError
from medprobe.mcq.cases import MCQCase
from medprobe.mcq.parse import option_label

Role = Literal["user", "assistant"]
PromptStyle = Literal["study", "chat"]
#: how a case's text is laid out (see the module docstring)
CaseLayout = Literal["vignette", "study-figure"]
CASE_LAYOUTS: tuple[str, ...] = ("vignette", "study-figure")
#: the line the study's figure puts between the question and the numbered options
CHOICES_LINE = "Choices:"
Part = str | Image.Image

#: what the answer line starts with in the chat style; log-likelihood scoring puts it in the context
ANSWER_PREFIX = "Answer:"
#: what ends every answer in the study style ("Assistant: Sarcoidosis.")
STUDY_ANSWER_END = "."
IDEFICS_END = "<end_of_utterance>"


@dataclass(frozen=True)
class Turn:
    """One message: text pieces and images in reading order."""

    role: Role
    parts: tuple[Part, ...]

    @property
    def images(self) -> list[Image.Image]:
        return [part for part in self.parts if isinstance(part, Image.Image)]

    @property
    def text(self) -> str:
        return "".join(part for part in self.parts if isinstance(part, str))


def default_instruction(lettered: bool, include_reason: bool) -> str:
    """The task statement opening the first user turn; says how to format the reply so that
    generated answers can be parsed."""
    kind, label = ("lettered", "letter") if lettered else ("numbered", "number")
    reply = f"'{ANSWER_PREFIX} <{label}>. <option>'"
    if include_reason:
        reply += " and then 'Reason: <one sentence>'"
    return (f"Each case shows medical image(s), a clinical vignette and a question with {kind} options. "
            f"Choose the single best option and reply with {reply}.")


def select_shots(cases: Sequence[MCQCase], shots: int | Sequence[str]) -> tuple[list[MCQCase], list[MCQCase]]:
    """Split ``cases`` into (shots, cases to score).

    ``shots`` is a count -- the earliest cases by ``date``, which reproduces the study's "two
    earliest challenges" -- or a list of case ids, used in the order given. A count needs every
    chosen case dated and no two of the chosen, nor the last chosen and the next one, on the same
    date: otherwise the choice or the order of the shots would come from the file's line order,
    and this raises :class:`ConfigError` naming the cases (name the shots to settle it).
    """
    if isinstance(shots, int):
        if shots < 0:
            raise ConfigError(f"shots must be >= 0, got {shots}")
        if shots >= len(cases):
            raise ConfigError(f"shots={shots} leaves no case to score ({len(cases)} cases)")
        if shots == 0:
            return [], list(cases)
        order = sorted(range(len(cases)), key=lambda i: (cases[i].date is None, cases[i].date or 0, i))
        chosen = [cases[i] for i in order[:shots]]
        undated = [case.id for case in chosen if case.date is None]
        if undated:
            raise ConfigError(f"shots={shots} takes the earliest cases by date, but {len(undated)} of them have no "
                              f"date ({undated[:5]}); name the shots instead, e.g. shots: [{', '.join(undated[:2])}]")
        considered = [cases[i] for i in order[: shots + 1]]
        for date in sorted({case.date for case in chosen}):
            tied = [case.id for case in considered if case.date == date]
            if len(tied) > 1:
                raise ConfigError(
                    f"shots={shots}: cases {tied} share the date {date}, so which of them is a shot, or which "
                    f"comes first, would depend on the order of lines in {chosen[0].source or 'the case file'}; "
                    f"name the shots in the run file, e.g. shots: [{', '.join(c.id for c in chosen)}]")
    else:
        by_id = {case.id: case for case in cases}
        unknown = [case_id for case_id in shots if case_id not in by_id]
        if unknown:
            raise ConfigError(f"shot ids not found among the cases: {unknown}")
        if len(set(shots)) != len(shots):
            raise ConfigError(f"shot ids repeat: {list(shots)}")
        chosen = [by_id[case_id] for case_id in shots]
        if len(chosen) >= len(cases):
            raise ConfigError("every case is a shot; none is left to score")
    shot_ids = {case.id for case in chosen}
    return chosen, [case for case in cases if case.id not in shot_ids]


def load_image(case: MCQCase, path: Path, max_size: int) -> Image.Image:
    """Read one case image as RGB, shrunk to ``max_size`` on its long side (processors resize
    anyway; this only bounds memory for very large photographs)."""
    try:
        with Image.open(path) as handle:
            image = handle.convert("RGB")
    except (OSError, ValueError) as error:
        raise ImageReadError(f"case {case.id!r}: cannot read image {path}: {error}", sample_id=case.id,
                             path=str(path)) from error
    if max(image.size) > max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return image


def case_text(case: MCQCase, lettered: bool = False, layout: CaseLayout = "vignette") -> str:
    """Vignette, question and labelled options, one per line; ``layout="study-figure"``: the
    question, ``Choices:`` and the numbered options, as the study's figure shows a case."""
    if layout not in CASE_LAYOUTS:
        raise ConfigError(f"unknown case_text {layout!r}; expected one of {', '.join(CASE_LAYOUTS)}")
    lines = [case.vignette] if case.vignette and layout == "vignette" else []
    lines.append(case.question)
    if layout == "study-figure":
        lines.append(CHOICES_LINE)
    lines += [f"{option_label(i, lettered)}. {option}" for i, option in enumerate(case.options)]
    return "\n".join(lines)


def answer_text(case: MCQCase, lettered: bool = False, include_reason: bool = True) -> str:
    """A shot's reply: ``Answer: <label>. <option>`` and, when known and wanted, ``Reason: ...``."""
    text = f"{ANSWER_PREFIX} {option_label(case.answer, lettered)}. {case.answer_text}"
    if include_reason and case.explanation:
        text += f"\nReason: {case.explanation}"
    return text


LoglikTarget = Literal["option", "labelled"]


def option_continuation(index: int, option: str, *, style: PromptStyle = "chat", target: LoglikTarget = "option",
                        lettered: bool = False) -> str:
    """What log-likelihood scoring appends to the prompt (which ends in ``Assistant:`` for the
    study style, ``Answer:`` for the chat style) for one option.

    ``option`` (primary): the option's text only -- `` Sarcoidosis`` -- so no option gains or
    loses from how much the model likes its label; in the study style followed by the full stop
    every shot's answer ends with, which also marks where the answer stops (without it, an option
    that is the start of another, "Pneumonia" / "Pneumonia with effusion", could never score a
    lower sum). ``labelled``: `` 3. Sarcoidosis``, label included as the chat style's shots write it.
    """
    text = option + (STUDY_ANSWER_END if style == "study" else "")
    if target == "labelled":
        return f" {option_label(index, lettered)}. {text}"
    return f" {text}"


def study_answer_text(case: MCQCase) -> str:
    """A shot's answer in the study style: the option text and a full stop."""
    return case.answer_text + STUDY_ANSWER_END


def build_conversation(shots: Sequence[MCQCase], query: MCQCase, *, style: PromptStyle = "chat",
                       lettered: bool = False, include_reason: bool = True, instruction: str | None = None,
                       max_image_size: int = 1024, case_layout: CaseLayout = "vignette") -> list[Turn]:
    """Shots as answered user/assistant pairs, then the query's user turn (no answer).

    ``chat``: the instruction (if any) opens the first user turn rather than a system message,
    because several VLM chat templates (and IDEFICS v1) have no system role. ``study``: no
    instruction, numbered options, answers as option text (``lettered``, ``include_reason`` and
    ``instruction`` must be left off; the run file checks that).
    """
    study = style == "study"
    turns: list[Turn] = []
    for number, case in enumerate([*shots, query]):
        parts: list[Part] = []
        if number == 0 and instruction and not study:
            parts.append(instruction + "\n")
        parts += [load_image(case, path, max_image_size) for path in case.images]
        parts.append(("\n" if case.images and not study else "")
                     + case_text(case, lettered and not study, case_layout))
        turns.append(Turn("user", tuple(parts)))
        if case is not query:
            answer = study_answer_text(case) if study else answer_text(case, lettered, include_reason)
            turns.append(Turn("assistant", (answer,)))
    return turns


def render_study(turns: Sequence[Turn], suffix: str = "") -> list[Part]:
    r"""The study's interleaved list for ``IdeficsProcessor``: per user turn ``"User:"``, its
    images, then one text item -- the case text, plus ``"\nAssistant: <answer>\n"`` when an assistant turn follows;
    the last text item ends with ``"\nAssistant:"`` + ``suffix``. The processor strips spaces (not
    newlines) from the ends of each item, as it did for the study."""
    items: list[Part] = []
    for turn in turns:
        if turn.role == "user":
            items.append("User:")
            items += turn.images
            items.append(turn.text)
        else:
            items[-1] = f"{items[-1]}\nAssistant: {turn.text}\n"
    items[-1] = f"{items[-1]}\nAssistant:{suffix}"
    return items


def render_idefics(turns: Sequence[Turn], suffix: str = "") -> list[Part]:
    r"""IDEFICS v1 instruct format as an interleaved list for ``IdeficsProcessor``.

    ``User: <images><text><end_of_utterance>\nAssistant: <answer><end_of_utterance>\n...``,
    ending with ``\nAssistant:`` + ``suffix``. Adjacent text is merged into one string because
    the processor strips spaces at the ends of each string item. Call the processor with
    ``add_end_of_utterance_token=False``: the utterance ends are already here.
    """
    items: list[Part] = []
    buffer = ""
    for turn in turns:
        if turn.role == "user":
            buffer += "User:"
            for part in turn.parts:
                if isinstance(part, str):
                    buffer += part
                else:
                    if buffer:
                        items.append(buffer)
                    buffer = ""
                    items.append(part)
            buffer += f"{IDEFICS_END}\n"
        else:
            buffer += f"Assistant: {turn.text}{IDEFICS_END}\n"
    buffer += "Assistant:" + suffix
    items.append(buffer)
    return items


def chat_messages(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Turns as chat-template messages; images become ``{"type": "image"}`` placeholders."""
    messages = []
    for turn in turns:
        content = [{"type": "text", "text": part} if isinstance(part, str) else {"type": "image"}
                   for part in turn.parts]
        messages.append({"role": turn.role, "content": content})
    return messages


def render_chat(processor: Any, turns: Sequence[Turn], suffix: str = "") -> tuple[str, list[Image.Image]]:
    """Prompt text from the processor's chat template (ending with the generation prompt, then
    ``suffix``) and the images in the order their placeholders appear."""
    text = processor.apply_chat_template(chat_messages(turns), add_generation_prompt=True, tokenize=False)
    images = [image for turn in turns for image in turn.images]
    return text + suffix, images
