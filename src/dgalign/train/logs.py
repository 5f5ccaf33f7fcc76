"""The values `update` logs over the steps between two checkpoints, kept where they are made.

`update` returns detached 0-dim tensors (on the training device) or Python floats. A
`LogWindow` keeps them as they come, without reading a device value, and reads the whole
window to the host in one copy when a checkpoint asks for it: the per-key means for the
record, and the first value that is not finite (the step and key a divergence is reported
at).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class NonFinite:
    """The first logged value of a window that is NaN or infinite."""

    key: str
    step: int
    value: float


class LogWindow:
    """Logged values of consecutive steps, read to the host once per checkpoint."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._values: list[Mapping[str, torch.Tensor | float]] = []
        self._host: list[dict[str, float]] | None = None

    def add(self, step: int, values: Mapping[str, torch.Tensor | float]) -> None:
        """Keep step `step`'s logged values (no device read)."""
        self._steps.append(step)
        self._values.append(values)
        self._host = None

    def __len__(self) -> int:
        return len(self._steps)

    def host_values(self) -> list[dict[str, float]]:
        """Every step's values as floats: one device-to-host copy for the whole window."""
        if self._host is None:
            tensors = [v for vs in self._values for v in vs.values() if torch.is_tensor(v)]
            floats = iter(_to_host(tensors))
            self._host = [
                {k: next(floats) if torch.is_tensor(v) else float(v) for k, v in vs.items()}
                for vs in self._values
            ]
        return self._host

    def first_non_finite(self) -> NonFinite | None:
        """The first (step, key) whose value is NaN or infinite, None when all are finite."""
        for step, values in zip(self._steps, self.host_values(), strict=True):
            for key, value in values.items():
                if not math.isfinite(value):
                    return NonFinite(key, step, value)
        return None

    def means(self) -> dict[str, float]:
        """The mean of each key over the steps that logged it."""
        sums: dict[str, list[float]] = {}
        for values in self.host_values():
            for key, value in values.items():
                sums.setdefault(key, []).append(value)
        return {key: float(np.mean(v)) for key, v in sums.items()}

    def clear(self) -> None:
        self._steps.clear()
        self._values.clear()
        self._host = None


def _to_host(tensors: list[torch.Tensor]) -> list[float]:
    """0-dim tensors as floats, one copy per device (one in a training run)."""
    if not tensors:
        return []
    out: list[float] = [0.0] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for device, positions in by_device.items():
        dtype = torch.float32 if device.type == "mps" else torch.float64  # mps: no float64
        stacked = torch.stack([tensors[i].reshape(()).to(dtype) for i in positions])
        for i, value in zip(positions, stacked.tolist(), strict=True):
            out[i] = value
    return out
