"""Asking a vision-language model a multiple-choice question, two ways.

* **Generation** (:meth:`MCQModel.generate`): the model writes a reply after the few-shot prompt
  (greedy, or sampled with temperature / top-k and a seed per try), and :func:`parse_answer`
  reads the option from it. Replies it cannot read count as wrong and are reported.
* **Log-likelihood** (:meth:`MCQModel.score_options`): for each option, the log-probability the
  model gives to the answer line ``Answer: <label>. <option>`` after the prompt -- exactly the line
  the shots show -- summed over its tokens and divided by their number. The prediction is the
  argmax, so nothing has to be parsed and every case gets an answer.

  The **mean** (length-normalised) log-probability is the primary score: a sum adds one negative
  term per token, so it favours short option texts whatever their content, and NEJM options differ
  in length ("Gout" vs "Calcium pyrophosphate deposition disease"). Both are kept per option in
  ``mcq_cases.csv`` and both accuracies are reported.

The two prompt styles (IDEFICS v1 interleaving, chat templates) differ only in rendering; both go
through the model's own processor, so image tokens, BOS and padding are the model's own.
"""

from __future__ import annotations

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
    Turn,
    chat_messages,
    option_continuation,
    render_chat,
    render_idefics,
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


class MCQModel:
    """A loaded VLM and its processor, with the prompt style chosen from the processor."""

    def __init__(self, model: Any, processor: Any, name: str) -> None:
        from transformers import IdeficsProcessor

        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.tokenizer = processor.tokenizer
        if isinstance(processor, IdeficsProcessor):
            self.style = "idefics"
        elif getattr(processor, "chat_template", None):
            self.style = "chat"
        else:
            raise ModelError(
                f"model {name!r}: its processor ({type(processor).__name__}) has no chat template and is not "
                "IDEFICS v1's, so there is no known way to lay out a few-shot conversation for it"
            )
        self.device = self.model.get_input_embeddings().weight.device
        self.dtype = self.model.dtype
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    # ----------------------------------------------------------------- prompts
    def answer_glue(self, turns: Sequence[Turn]) -> str:
        """Text between the generation prompt and a reply's first character in this model's format
        (IDEFICS: ``"Assistant:" + " "``; chat templates: found by rendering a probe reply), so that
        scored answer lines sit exactly where the shots' answers sit."""
        if self.style == "idefics":
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
        if self.style == "idefics":
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
        if self.style == "idefics":
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
    def score_options(self, turns: Sequence[Turn], continuations: Sequence[str],
                      batch_size: int = 5) -> list[OptionScore]:
        """Log-probability of each continuation after the prompt and ``Answer:``.

        The prompt's own token ids are found by encoding it alone; each row's continuation is
        what follows the longest common prefix with them, so a tokenizer that merges across the
        boundary still scores the whole continuation. Rows are scored ``batch_size`` at a time.
        """
        context = self.answer_glue(turns) + ANSWER_PREFIX
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


def answer_by_generation(mcq: MCQModel, case: MCQCase, turns: Sequence[Turn], *, lettered: bool, max_new_tokens: int,
                         n_tries: int, sample: bool, seed: int, temperature: float = 1.0,
                         top_k: int = 50) -> list[CaseResult]:
    """One result per try; try ``t`` of every case uses seed ``seed + t`` when sampling."""
    results = []
    for attempt in range(n_tries):
        try_seed = seed + attempt if sample else None
        reply = mcq.generate(turns, max_new_tokens=max_new_tokens, sample=sample, seed=try_seed,
                             temperature=temperature, top_k=top_k)
        index, how = parse_answer(reply, case.options, lettered=lettered)
        _, reason = split_reason(reply)
        results.append(CaseResult(
            case_id=case.id, method="generate", correct_index=case.answer, correct_option=case.answer_text,
            parsed_index=index, parsed_option=case.options[index] if index is not None else None,
            parse_method=how, raw_answer=reply, explanation=reason, try_index=attempt, seed=try_seed,
            human_correct=case.human_correct, specialty=case.specialty))
    return results


def answer_by_loglik(mcq: MCQModel, case: MCQCase, turns: Sequence[Turn], *, lettered: bool, score: Score = "mean",
                     batch_size: int = 5) -> CaseResult:
    """Score every option's answer line; the prediction is the best ``score`` (mean or sum)."""
    continuations = [option_continuation(i, option, lettered) for i, option in enumerate(case.options)]
    scores = mcq.score_options(turns, continuations, batch_size=batch_size)
    values = [s.logprob_mean if score == "mean" else s.logprob_sum for s in scores]
    index = max(range(len(values)), key=values.__getitem__)
    return CaseResult(
        case_id=case.id, method="loglik", correct_index=case.answer, correct_option=case.answer_text,
        parsed_index=index, parsed_option=case.options[index], parse_method=f"loglik-{score}",
        human_correct=case.human_correct, specialty=case.specialty,
        logprob_sum=[s.logprob_sum for s in scores], n_tokens=[s.n_tokens for s in scores],
        logprob_mean=[s.logprob_mean for s in scores])
