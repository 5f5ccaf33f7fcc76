"""Where a `dgalign reproduce cmnist` run directory keeps each method's restarts:
<root>/<slug(method)>/restart<k>.json (records) and restart<k>.pt (weights)."""

from __future__ import annotations

from pathlib import Path

from dgalign.utils.text import slug


def method_dir(root: Path, method: str) -> Path:
    """The directory of a table row: HGP(alpha=0) -> <root>/HGP_alpha0."""
    return Path(root) / slug(method)


def restart_paths(root: Path, method: str, k: int) -> tuple[Path, Path]:
    """(JSON, weights) of restart k of `method`."""
    base = method_dir(root, method)
    return base / f"restart{k}.json", base / f"restart{k}.pt"


def restart_files(root: Path, method: str) -> list[Path]:
    """The saved restart JSONs of `method`, by restart index."""
    files = method_dir(root, method).glob("restart*.json")
    return sorted(files, key=lambda p: int(p.stem[len("restart") :]))
