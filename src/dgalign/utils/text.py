"""Text helpers: file and directory names from free-form labels."""

from __future__ import annotations

import re


def slug(text: str, sep: str = "_") -> str:
    """A file-system-safe name: "=" dropped, every run of characters other than letters,
    digits, "_", "." and "-" replaced by `sep`, `sep` stripped at the ends ("x" if nothing is
    left). HGP(alpha=0) -> HGP_alpha0."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", sep, text.replace("=", "")).strip(sep)
    return out or "x"
