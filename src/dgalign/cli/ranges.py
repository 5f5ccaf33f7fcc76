"""Argument types with ranges for the numeric (and path) options of the `dgalign` command.

Each factory returns a callable for argparse's `type=`; a value outside the range is an
`argparse.ArgumentTypeError`, which the command prints as one line (`dgalign: error: ...`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from dgalign.utils.checks import SEED_MAX


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum] (an open end when None)."""
    if minimum is not None and maximum is not None:
        text = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        text = f"an integer >= {minimum}"
    else:
        text = "an integer"

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {text}, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {text}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


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
    if lo is not None and hi is not None:
        text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        text = "a finite number"

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {text}, got {raw!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad = bad or value < lo or (lo_open and value == lo)
        if hi is not None:
            bad = bad or value > hi or (hi_open and value == hi)
        if bad:
            raise argparse.ArgumentTypeError(f"must be {text}, got {raw}")
        return value

    parse.__name__ = "number"
    return parse


def nonempty_path(raw: str) -> str:
    """A non-empty path."""
    if not raw.strip():
        raise argparse.ArgumentTypeError("must be a non-empty path")
    return raw
