"""The process's runtime: the torch device a command asks for, an honest clock for timing work
on it, and the seeding of every random generator a run draws from."""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from dgalign.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; `cuda` without a GPU, or `cuda:N` beyond the
    GPU count, is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"--device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA GPU is available; use auto")
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(
                f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}; pick one of them or use cuda"
            )
    return device


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on `device` (CUDA kernels run asynchronously); no-op on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: str | torch.device) -> float:
    """`time.perf_counter()` after `synchronize(device)`: the difference of two readings is
    the wall time of the work queued on `device` between them, not of its launches."""
    synchronize(device)
    return time.perf_counter()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (as DomainBed) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
