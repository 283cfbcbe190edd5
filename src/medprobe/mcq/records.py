"""One answer to one case, as every answering method reports it and every summary reads it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CaseResult:
    """One answer to one case: try 0 is the primary answer (greedy decoding, or the log-likelihood
    argmax); tries 1..n are sampled answers."""

    case_id: str
    method: str
    correct_index: int
    correct_option: str
    parsed_index: int | None
    parsed_option: str | None
    parse_method: str
    raw_answer: str = ""
    explanation: str | None = None
    try_index: int = 0
    seed: int | None = None
    #: "greedy" (the primary answer) or "sample"
    decoding: str = "greedy"
    human_correct: float | None = None
    specialty: str | None = None
    #: log-likelihood scoring: per option, summed log-prob, token count and mean log-prob
    logprob_sum: list[float] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)
    logprob_mean: list[float] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return self.parsed_index is not None and self.parsed_index == self.correct_index
