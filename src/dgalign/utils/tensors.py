"""Small tensor helpers shared across packages."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def flatten(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one vector (each flattened in row-major order)."""
    return torch.cat([t.reshape(-1) for t in tensors])
