"""Argument types with ranges for the numeric (and path) options of the `dgalign` command.

Each factory returns a callable for argparse's `type=`; a value outside the range is an
`argparse.ArgumentTypeError`, which the command prints as one line (`dgalign: error: ...`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from dgalign.utils.checks import SEED_MAX


def _range_text(
    noun: str,
    lo: float | None,
    hi: float | None,
    lo_open: bool,
    hi_open: bool,
    show: Callable[[float], str],
    unbounded: str,
) -> str:
    """`noun in [lo, hi]` (parentheses for open ends), `noun >= lo`, or `unbounded` without a
    lower bound."""
    if lo is not None and hi is not None:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        return f"{noun} in {left}{show(lo)}, {show(hi)}{right}"
    if lo is not None:
        return f"{noun} {'>' if lo_open else '>='} {show(lo)}"
    return unbounded


def _ranged(
    name: str,
    text: str,
    convert: Callable[[str], Any],
    in_range: Callable[[Any], bool],
    echo_raw: bool,
) -> Callable[[str], Any]:
    """An argparse type: `convert` the text, then require `in_range`; the error says the value
    must be `text` and shows what was given (as typed with `echo_raw`, else as converted)."""

    def parse(raw: str) -> Any:
        try:
            value = convert(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {text}, got {raw!r}") from None
        if not in_range(value):
            raise argparse.ArgumentTypeError(f"must be {text}, got {raw if echo_raw else value}")
        return value

    parse.__name__ = name
    return parse


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum] (an open end when None)."""
    text = _range_text("an integer", minimum, maximum, False, False, str, "an integer")

    def in_range(value: int) -> bool:
        return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)

    return _ranged("integer", text, int, in_range, echo_raw=False)


def seed() -> Callable[[str], int]:
    """A seed: an integer in [0, 2**32 - 1]."""
    return integer(0, SEED_MAX)


def number(
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], float]:
    """A finite number between `lo` and `hi` (ends excluded when `*_open`; None = no bound)."""
    text = _range_text("a number", lo, hi, lo_open, hi_open, "{:g}".format, "a finite number")

    def in_range(value: float) -> bool:
        if not math.isfinite(value):
            return False
        if lo is not None and (value < lo or (lo_open and value == lo)):
            return False
        return hi is None or not (value > hi or (hi_open and value == hi))

    return _ranged("number", text, float, in_range, echo_raw=True)


def nonempty_path(raw: str) -> str:
    """A non-empty path."""
    if not raw.strip():
        raise argparse.ArgumentTypeError("must be a non-empty path")
    return raw
