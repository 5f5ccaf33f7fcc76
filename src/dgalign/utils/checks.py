"""Checks of integer arguments shared by the commands' library functions (one-line
ConfigErrors naming the flag)."""

from __future__ import annotations

from dgalign.errors import ConfigError

SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit; DomainBed's per-job seeds are below 2**31


def check_seed(flag: str, value: object) -> None:
    """ConfigError unless `value` is an integer in [0, SEED_MAX]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{flag} must be an integer in [0, {SEED_MAX}], got {value!r}")


def check_count(flag: str, value: object, minimum: int = 1) -> None:
    """ConfigError unless `value` is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{flag} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{flag} must be at least {minimum}, got {value}")
