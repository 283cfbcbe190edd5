"""Number formats shared by the report's sections: one precision and one 'n/a' everywhere."""

from __future__ import annotations

from typing import Any

from medprobe.report.blocks import Cell, Part
from medprobe.report.load import as_float


def fmt3(value: Any) -> str:
    """Three decimals, the precision the report uses for every metric; 'n/a' when undefined."""
    number = as_float(value)
    return "n/a" if number is None else f"{number:.3f}"


def fmt_ci(low: Any, high: Any) -> str:
    """``[low, high]`` to three decimals, or ``n/a`` when either end is undefined."""
    if as_float(low) is None or as_float(high) is None:
        return "n/a"
    return f"[{fmt3(low)}, {fmt3(high)}]"


def fmt_value_ci(value: Any, low: Any, high: Any) -> str:
    """'0.912 [0.889, 0.934]': the form used in the headline table and the paper."""
    ci = fmt_ci(low, high)
    return fmt3(value) if ci == "n/a" else f"{fmt3(value)} {ci}"


def fmt_p(value: Any) -> str:
    """A p-value to three decimals, ``< 0.001`` below that, ``n/a`` when undefined."""
    number = as_float(value)
    if number is None:
        return "n/a"
    return "< 0.001" if number < 0.001 else f"{number:.3f}"


def fmt_fraction(value: Any) -> str:
    """A train fraction in its shortest form (``0.1``, ``1``), ``n/a`` when undefined."""
    number = as_float(value)
    return "n/a" if number is None else f"{number:g}"


def num(text: Any, value: Any, style: str = "") -> Cell:
    """A right-aligned numeric cell sorted by its number (undefined values sort last)."""
    return Cell((Part(text, style),), as_float(value), numeric=True)
