"""Order robustness: does the answer follow the diagnosis or its position?

A model that picks "the third option" or copies the last shot's answer position is not
diagnosing, yet can score above chance. So the same cases are answered again (primary answer
only) with

* the query's options in ``k`` seeded random orders (never the original order; the seed of each
  case's orders comes from the run seed and the case id, like the sampling seeds), the key answer
  moved with its option, and
* the shots in reverse order (two shots: swapped).

Answers are compared as options (by original index), so a change means the model chose a
different diagnosis; an unparseable reply is a value of its own (unparseable twice is no change,
parseable once and not the other time is). Reported: accuracy of each permuted order, their mean +- SD (and range), the
share of cases whose answer changed under at least one order, the mean share per order, and the
same for the swapped shots.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np

from medprobe.errors import ConfigError
from medprobe.mcq.cases import MCQCase
from medprobe.mcq.evaluate import accuracy_row

#: answers one case after the given shots; returns the chosen option's index in *that case's*
#: option list, or None when unparseable
Answerer = Callable[[Sequence[MCQCase], MCQCase], "int | None"]


def option_orders(run_seed: int, case_id: str, n_options: int, k: int) -> list[list[int]]:
    """``k`` distinct permutations of ``range(n_options)``, none the identity, seeded per case."""
    from math import factorial

    if k > factorial(n_options) - 1:
        raise ConfigError(f"order_robustness.permutations={k}: {n_options} options have only "
                          f"{factorial(n_options) - 1} orders other than the original")
    digest = hashlib.sha256(f"{run_seed}\x00{case_id}\x00option-order".encode("utf-8")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    identity = list(range(n_options))
    orders: list[list[int]] = []
    while len(orders) < k:
        order = [int(i) for i in rng.permutation(n_options)]
        if order != identity and order not in orders:
            orders.append(order)
    return orders


def permute_case(case: MCQCase, order: Sequence[int]) -> MCQCase:
    """The case with ``options[order[j]]`` at position ``j`` and the answer moved along."""
    return case.model_copy(update={"options": tuple(case.options[i] for i in order),
                                   "answer": list(order).index(case.answer)})


def _changed(a: Sequence[int | None], b: Sequence[int | None]) -> list[bool]:
    return [x != y for x, y in zip(a, b)]


def order_robustness(answer: Answerer, shots: Sequence[MCQCase], queries: Sequence[MCQCase],
                     original: Sequence[int | None], *, permutations: int, swap_shots: bool, seed: int,
                     level: float = 0.95) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``order_robustness`` block of ``mcq_results.json`` and one row per re-answered case.

    ``original`` holds each query's primary answer (original option index or None) from the main
    run, so the baseline is not computed twice.
    """
    truth = [case.answer for case in queries]
    rows: list[dict[str, Any]] = []
    per_order: list[list[int | None]] = [[] for _ in range(permutations)]
    for case, first in zip(queries, original):
        for j, order in enumerate(option_orders(seed, case.id, len(case.options), permutations)):
            chosen = answer(shots, permute_case(case, order))
            back = None if chosen is None else order[chosen]
            per_order[j].append(back)
            rows.append({"case_id": case.id, "variant": f"options-{j + 1}", "option_order": order,
                         "answer_index": back, "correct": back == case.answer, "changed": back != first})
    block: dict[str, Any] = {"n_cases": len(queries), "original_accuracy": accuracy_row(
        [a == t for a, t in zip(original, truth)], level)["accuracy"]}
    if permutations:
        accuracies = [accuracy_row([a == t for a, t in zip(answers, truth)], level) for answers in per_order]
        values = np.array([row["accuracy"] for row in accuracies], dtype=float)
        changed = np.array([_changed(answers, original) for answers in per_order], dtype=bool)
        block["option_order"] = {
            "permutations": permutations,
            "accuracy": accuracies,
            "accuracy_mean": float(values.mean()),
            "accuracy_sd": float(values.std(ddof=1)) if permutations > 1 else 0.0,
            "accuracy_min": float(values.min()),
            "accuracy_max": float(values.max()),
            "share_changed_any": float(changed.any(axis=0).mean()),
            "share_changed_mean": float(changed.mean()),
        }
    if swap_shots:
        if len(shots) < 2:
            raise ConfigError("order_robustness.swap_shots needs at least two shots")
        reversed_shots = list(reversed(shots))
        swapped = []
        for case, first in zip(queries, original):
            chosen = answer(reversed_shots, case)
            swapped.append(chosen)
            rows.append({"case_id": case.id, "variant": "shots-swapped", "option_order": list(range(len(case.options))),
                         "answer_index": chosen, "correct": chosen == case.answer, "changed": chosen != first})
        block["shots_swapped"] = {
            "shot_ids": [case.id for case in reversed_shots],
            **accuracy_row([a == t for a, t in zip(swapped, truth)], level),
            "share_changed": float(np.mean(_changed(swapped, original))),
        }
    return block, rows
