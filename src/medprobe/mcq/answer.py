"""Asking a vision-language model a multiple-choice question, two ways.

* **Generation** (:meth:`MCQModel.generate`): the model writes a reply after the few-shot prompt
  and :func:`parse_answer` reads the option from it; replies it cannot read count as wrong and
  are reported. As in the study, one run gives the **primary** answer (greedy decoding) and
  ``n_tries`` answers sampled with temperature / top-k, read as "correct within n tries". Each
  sampled try has its own seed derived from the run seed, the case id and the try number
  (:func:`case_seed`), so tries differ between cases and a case's tries do not change when other
  cases are added or removed.
* **Log-likelihood** (:meth:`MCQModel.score_options`): for each option, the log-probability of its
  continuation (:func:`~medprobe.mcq.prompts.option_continuation`: the option text, or the
  labelled variant) after the prompt ending in ``Assistant:`` (study style) or ``Answer:`` (chat
  style), summed over its tokens and divided by their number. The prediction is the argmax, so
  nothing has to be parsed and every case gets an answer.

  The **mean** (length-normalised) log-probability is the primary score: a sum adds one negative
  term per token, so it favours short option texts whatever their content, and NEJM options differ
  in length ("Gout" vs "Calcium pyrophosphate deposition disease"). Both are kept per option in
  ``mcq_cases.csv`` and both accuracies are reported.

Both go through the model's own processor, so image tokens, BOS and padding are the model's own.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from PIL import Image

from medprobe.errors import ModelError
from medprobe.mcq.cases import MCQCase
from medprobe.mcq.records import CaseResult
from medprobe.mcq.parse import parse_answer, split_reason
from medprobe.mcq.prompts import (
    ANSWER_PREFIX,
    IDEFICS_END,
    LoglikTarget,
    PromptStyle,
    Turn,
    chat_messages,
    option_continuation,
    render_chat,
    render_idefics,
    render_study,
)

Score = Literal["mean", "sum"]
_REPLY_PROBE = "<<medprobe-reply>>"


@dataclass(frozen=True)
class OptionScore:
    """Log-probability of one option's answer line given the prompt."""

    logprob_sum: float
    n_tokens: int

    @property
    def logprob_mean(self) -> float:
        return self.logprob_sum / self.n_tokens


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def case_seed(run_seed: int, case_id: str, try_number: int) -> int:
    """The sampling seed of one try of one case: 63 bits of SHA-256 over the run seed, the case id
    and the try number -- reproducible, different for every case and try, independent of the
    other cases in the run."""
    digest = hashlib.sha256(f"{run_seed}\x00{case_id}\x00{try_number}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class MCQModel:
    """A loaded VLM and its processor.

    ``family`` comes from the processor (``idefics`` for IDEFICS v1, ``chat`` for one with a chat
    template); ``style`` is the prompt style, by default ``study`` for IDEFICS v1 (the study's
    model family) and ``chat`` otherwise. The study style exists only for IDEFICS v1.
    """

    def __init__(self, model: Any, processor: Any, name: str, prompt_style: PromptStyle | None = None) -> None:
        from transformers import IdeficsProcessor

        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.tokenizer = processor.tokenizer
        if isinstance(processor, IdeficsProcessor):
            self.family = "idefics"
        elif getattr(processor, "chat_template", None):
            self.family = "chat"
        else:
            raise ModelError(
                f"model {name!r}: its processor ({type(processor).__name__}) has no chat template and is not "
                "IDEFICS v1's, so there is no known way to lay out a few-shot conversation for it"
            )
        self.set_style(prompt_style)
        #: study style: whether the processor puts <end_of_utterance> between a shot's text and the next
        #: "User:". The study called the processor with its default, which (in the transformers of 2023)
        #: was "yes" when the tokenizer lists the token among its special tokens, as the IDEFICS instruct
        #: tokenizers do; transformers 5 no longer finds it there, so the default is decided here instead.
        self.study_end_of_utterance = IDEFICS_END in getattr(self.tokenizer, "all_special_tokens", [])
        self.device = self.model.get_input_embeddings().weight.device
        self.dtype = self.model.dtype
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def set_style(self, prompt_style: PromptStyle | None) -> None:
        """Choose the prompt style; ``None`` = the family's default (study for IDEFICS v1)."""
        style: PromptStyle = prompt_style or ("study" if self.family == "idefics" else "chat")
        if style == "study" and self.family != "idefics":
            raise ModelError(f"model {self.name!r}: prompt_style 'study' is the study's IDEFICS v1 prompt and needs "
                             f"an IDEFICS v1 processor, not {type(self.processor).__name__}; use prompt_style: chat")
        self.style = style

    # ----------------------------------------------------------------- prompts
    def answer_glue(self, turns: Sequence[Turn]) -> str:
        """Text between the generation prompt and a reply's first character in this model's format
        (study style: nothing, the continuation brings its space; IDEFICS chat style: ``" "``; chat
        templates: found by rendering a probe reply), so that scored answers sit exactly where the
        shots' answers sit."""
        if self.style == "study":
            return ""
        if self.family == "idefics":
            return " "
        messages = chat_messages(turns)
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with_reply = self.processor.apply_chat_template(
            [*messages, {"role": "assistant", "content": [{"type": "text", "text": _REPLY_PROBE}]}],
            add_generation_prompt=False, tokenize=False)
        if with_reply.startswith(prompt) and _REPLY_PROBE in with_reply[len(prompt):]:
            return with_reply[len(prompt): with_reply.index(_REPLY_PROBE, len(prompt))]
        return ""

    def encode(self, turns: Sequence[Turn], suffixes: Sequence[str]) -> Any:
        """Processor inputs with one row per suffix (prompt + suffix), right-padded so every row's
        tokens keep their positions; on the model's device, floats in its dtype."""
        if self.style == "study":
            inputs = self.processor(text=[render_study(turns, s) for s in suffixes], padding=True,
                                    add_end_of_utterance_token=self.study_end_of_utterance,
                                    padding_side="right", return_tensors="pt")
        elif self.family == "idefics":
            inputs = self.processor(text=[render_idefics(turns, s) for s in suffixes], add_end_of_utterance_token=False,
                                    padding=True, padding_side="right", return_tensors="pt")
        else:
            rendered = [render_chat(self.processor, turns, s) for s in suffixes]
            texts = [text for text, _ in rendered]
            images: list[list[Image.Image]] = [imgs for _, imgs in rendered]
            kwargs: dict[str, Any] = {"padding": True, "padding_side": "right", "return_tensors": "pt"}
            bos = self.tokenizer.bos_token
            if bos and texts[0].startswith(bos):
                kwargs["add_special_tokens"] = False  # the template wrote BOS already
            if any(images):
                kwargs["images"] = images
            inputs = self.processor(text=texts, **kwargs)
        return inputs.to(device=self.device, dtype=self.dtype)

    # -------------------------------------------------------------- generation
    def generate(self, turns: Sequence[Turn], *, max_new_tokens: int, sample: bool = False, seed: int | None = None,
                 temperature: float = 1.0, top_k: int = 50) -> str:
        """The model's reply (new tokens only, special tokens removed)."""
        inputs = self.encode(turns, [""])
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample}
        if sample:
            kwargs.update(temperature=temperature, top_k=top_k)
            if seed is not None:
                torch.manual_seed(seed)
        pad = self.tokenizer.pad_token_id
        kwargs["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
        if self.family == "idefics":
            # stop at the end of the assistant's utterance; never write image tokens
            stops = [self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids(IDEFICS_END)]
            kwargs["eos_token_id"] = [t for t in stops if t is not None]
            kwargs["bad_words_ids"] = [[self.tokenizer.convert_tokens_to_ids(t)]
                                       for t in ("<image>", "<fake_token_around_image>")]
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    # ---------------------------------------------------------- log-likelihood
    def loglik_context(self, turns: Sequence[Turn]) -> str:
        """What follows the generation prompt before the scored continuation: nothing in the study
        style (the prompt ends in ``Assistant:``), the reply glue and ``Answer:`` in the chat style."""
        return "" if self.style == "study" else self.answer_glue(turns) + ANSWER_PREFIX

    def score_options(self, turns: Sequence[Turn], continuations: Sequence[str],
                      batch_size: int = 5) -> list[OptionScore]:
        """Log-probability of each continuation after the prompt and :meth:`loglik_context`.

        The prompt's own token ids are found by encoding it alone; each row's continuation is
        what follows the longest common prefix with them, so a tokenizer that merges across the
        boundary still scores the whole continuation. Rows are scored ``batch_size`` at a time.
        """
        context = self.loglik_context(turns)
        base = self.encode(turns, [context])
        prompt_ids = base["input_ids"][0][base["attention_mask"][0].bool()]
        scores: list[OptionScore] = []
        for start in range(0, len(continuations), batch_size):
            chunk = continuations[start:start + batch_size]
            inputs = self.encode(turns, [context + c for c in chunk])
            ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
            rows = []
            for row in range(len(chunk)):
                positions = mask[row].nonzero().squeeze(1)
                boundary = _common_prefix(prompt_ids, ids[row][positions])
                if boundary == 0 or boundary >= len(positions):
                    raise ModelError(f"model {self.name!r}: continuation {chunk[row]!r} produced no tokens to score")
                rows.append(positions[boundary:])
            first_needed = min(int(p[0]) for p in rows) - 1
            kwargs = {}
            offset = 0
            if self._keeps_logits:
                # logits only for the positions that predict continuation tokens
                kwargs["logits_to_keep"] = ids.shape[1] - first_needed
                offset = first_needed
            with torch.inference_mode():
                logits = self.model(**inputs, **kwargs).logits
            for row, targets in enumerate(rows):
                predicting = logits[row, targets - 1 - offset].float().log_softmax(-1)
                picked = predicting.gather(1, ids[row, targets].unsqueeze(1)).squeeze(1)
                scores.append(OptionScore(float(picked.sum()), len(targets)))
        return scores


def _generated_result(case: MCQCase, reply: str, *, lettered: bool, try_index: int, seed: int | None) -> CaseResult:
    index, how = parse_answer(reply, case.options, lettered=lettered)
    _, reason = split_reason(reply)
    return CaseResult(
        case_id=case.id, method="generate", correct_index=case.answer, correct_option=case.answer_text,
        parsed_index=index, parsed_option=case.options[index] if index is not None else None,
        parse_method=how, raw_answer=reply, explanation=reason, try_index=try_index, seed=seed,
        decoding="greedy" if seed is None else "sample", human_correct=case.human_correct, specialty=case.specialty)


def answer_by_generation(mcq: MCQModel, case: MCQCase, turns: Sequence[Turn], *, lettered: bool, max_new_tokens: int,
                         n_tries: int = 0, seed: int = 0, temperature: float = 1.0,
                         top_k: int = 50) -> list[CaseResult]:
    """The primary (greedy) answer as try 0, then ``n_tries`` sampled answers as tries 1..n,
    try ``t`` seeded with :func:`case_seed` (``seed``, case id, ``t``)."""
    results = [_generated_result(case, mcq.generate(turns, max_new_tokens=max_new_tokens), lettered=lettered,
                                 try_index=0, seed=None)]
    for attempt in range(1, n_tries + 1):
        try_seed = case_seed(seed, case.id, attempt)
        reply = mcq.generate(turns, max_new_tokens=max_new_tokens, sample=True, seed=try_seed,
                             temperature=temperature, top_k=top_k)
        results.append(_generated_result(case, reply, lettered=lettered, try_index=attempt, seed=try_seed))
    return results


def answer_by_loglik(mcq: MCQModel, case: MCQCase, turns: Sequence[Turn], *, lettered: bool, score: Score = "mean",
                     target: LoglikTarget = "option", batch_size: int = 5) -> CaseResult:
    """Score every option's continuation; the prediction is the best ``score`` (mean or sum)."""
    continuations = [option_continuation(i, option, style=mcq.style, target=target, lettered=lettered)
                     for i, option in enumerate(case.options)]
    scores = mcq.score_options(turns, continuations, batch_size=batch_size)
    values = [s.logprob_mean if score == "mean" else s.logprob_sum for s in scores]
    index = max(range(len(values)), key=values.__getitem__)
    return CaseResult(
        case_id=case.id, method="loglik", correct_index=case.answer, correct_option=case.answer_text,
        parsed_index=index, parsed_option=case.options[index], parse_method=f"loglik-{score}",
        human_correct=case.human_correct, specialty=case.specialty,
        logprob_sum=[s.logprob_sum for s in scores], n_tokens=[s.n_tokens for s in scores],
        logprob_mean=[s.logprob_mean for s in scores])
