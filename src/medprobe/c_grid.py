"""The one rule for a grid of inverse L2 strengths C, shared by the run file and the probes.

Why here, below both: the run file's ``probe.Cs`` (:class:`medprobe.config.ProbeConfig`), the
selection functions and :class:`~medprobe.probes.logistic.LinearProbe` used to check the grid
three times with three rules (one sorted and dropped repeats, one refused them, one allowed
infinities); now a grid is valid or not in the same way everywhere, and a run file is refused
before anything runs. This module imports nothing of medprobe's but the errors, so the
configuration can use it without importing the probes.
"""

from __future__ import annotations

import math
from typing import Iterable

from medprobe.errors import ConfigError


def check_Cs(Cs: Iterable[float]) -> tuple[float, ...]:
    """The grid as floats in ascending order, or a :class:`ConfigError`: it must be non-empty,
    every C positive and finite, none repeated (a repeat would be fitted, scored and reported twice)."""
    values = [float(c) for c in Cs]
    if not values or any(not math.isfinite(c) or c <= 0 for c in values):
        raise ConfigError(f"Cs must be a non-empty list of positive finite numbers, got {values}")
    if len(set(values)) != len(values):
        raise ConfigError(f"Cs has repeated values: {values}")
    return tuple(sorted(values))


__all__ = ["check_Cs"]
