"""Few-shot prompts for multiple-choice diagnosis, in each model family's own format.

A prompt is first built as a model-neutral conversation (:class:`Turn` list): each shot is a
user turn (images, vignette, question, numbered options) followed by an assistant turn
("Answer: 3. Sarcoidosis" and optionally "Reason: ..."); the query is a last user turn without
its answer. Renderers then turn it into what a processor expects:

* :func:`render_idefics` -- IDEFICS v1's interleaved list of strings and PIL images, with
  ``User:`` / ``Assistant:`` turns closed by ``<end_of_utterance>`` as in its instruct tuning;
* :func:`render_chat` -- the processor's chat template, with earlier shots as earlier
  user/assistant turns and ``{"type": "image"}`` placeholders (images passed separately, in order).

Shots are the earliest cases by date (file order among equal or missing dates) unless named, and
are never scored: a case the model has just seen answered cannot test it.
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
Part = str | Image.Image

#: what the answer line starts with; log-likelihood scoring puts it in the context
ANSWER_PREFIX = "Answer:"
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

    ``shots`` is a count -- the earliest cases by ``date``, undated cases after dated ones and
    ties in file order, which reproduces the study's "two earliest challenges" -- or a list of
    case ids, used in the order given.
    """
    if isinstance(shots, int):
        if shots < 0:
            raise ConfigError(f"shots must be >= 0, got {shots}")
        if shots >= len(cases):
            raise ConfigError(f"shots={shots} leaves no case to score ({len(cases)} cases)")
        order = sorted(range(len(cases)), key=lambda i: (cases[i].date is None, cases[i].date or 0, i))
        chosen = [cases[i] for i in order[:shots]]
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


def case_text(case: MCQCase, lettered: bool = False) -> str:
    """Vignette, question and labelled options, one per line."""
    lines = [case.vignette] if case.vignette else []
    lines.append(case.question)
    lines += [f"{option_label(i, lettered)}. {option}" for i, option in enumerate(case.options)]
    return "\n".join(lines)


def answer_text(case: MCQCase, lettered: bool = False, include_reason: bool = True) -> str:
    """A shot's reply: ``Answer: <label>. <option>`` and, when known and wanted, ``Reason: ...``."""
    text = f"{ANSWER_PREFIX} {option_label(case.answer, lettered)}. {case.answer_text}"
    if include_reason and case.explanation:
        text += f"\nReason: {case.explanation}"
    return text


def option_continuation(index: int, option: str, lettered: bool = False) -> str:
    """What log-likelihood scoring appends after ``Answer:`` for one option: the same
    ``<label>. <option>`` a shot's answer line shows, so the scored text is exactly what a model
    that follows the shots would write."""
    return f" {option_label(index, lettered)}. {option}"


def build_conversation(shots: Sequence[MCQCase], query: MCQCase, *, lettered: bool = False,
                       include_reason: bool = True, instruction: str | None = None,
                       max_image_size: int = 1024) -> list[Turn]:
    """Shots as answered user/assistant pairs, then the query's user turn (no answer).

    The instruction (if any) opens the first user turn rather than a system message, because
    several VLM chat templates (and IDEFICS v1) have no system role.
    """
    turns: list[Turn] = []
    for number, case in enumerate([*shots, query]):
        parts: list[Part] = []
        if number == 0 and instruction:
            parts.append(instruction + "\n")
        parts += [load_image(case, path, max_image_size) for path in case.images]
        parts.append(("\n" if case.images else "") + case_text(case, lettered))
        turns.append(Turn("user", tuple(parts)))
        if case is not query:
            turns.append(Turn("assistant", (answer_text(case, lettered, include_reason),)))
    return turns


def render_idefics(turns: Sequence[Turn], suffix: str = "") -> list[Part]:
    """IDEFICS v1 instruct format as an interleaved list for ``IdeficsProcessor``.

    ``User: <images><text><end_of_utterance>\\nAssistant: <answer><end_of_utterance>\\n...``,
    ending with ``\\nAssistant:`` + ``suffix``. Adjacent text is merged into one string because
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
