"""Plotting helpers shared by every module that writes figures: matplotlib on the Agg backend
(no display needed; matplotlib is imported only when a plot is made) and atomic PNG writes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from dgalign.utils.io import atomic_write_bytes


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write `fig` as a PNG atomically (a reader never sees a half-written file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
