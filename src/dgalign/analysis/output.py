"""Where an analysis writes its files, and its numbers as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dgalign.utils.io import atomic_write_text


def output_dir(out: str | Path | None, source: str) -> Path:
    """The folder an analysis writes into (created): `out`, else `analysis/` beside the run of
    weight source `source` (a run directory or a file in it; `:swa` and `init:` forms too)."""
    base = Path(source.removeprefix("init:").split(":swa")[0])
    folder = Path(out) if out else (base if base.is_dir() else base.parent) / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_numbers(path: Path, payload: dict[str, Any]) -> None:
    """The numbers behind a plot, as JSON (NumPy scalars as floats), written atomically."""
    atomic_write_text(path, json.dumps(payload, indent=1, default=float) + "\n")
