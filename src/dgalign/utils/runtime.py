"""The process's runtime: the torch device a command asks for, an honest clock for timing work
on it, the seeding of every random generator a run draws from, and the float32 matmul
precision and determinism."""

from __future__ import annotations

import contextlib
import os
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


class StepTimer:
    """Wall times of steps without waiting for the device inside the loop: on CUDA a pair of
    events per step, recorded on the stream and read once by `times()` (the GPU time between
    them); elsewhere `time.perf_counter()`, the work being done when the call returns."""

    def __init__(self, device: str | torch.device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self._pending: list = []
        self._times: list[float] = []

    def start(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._pending.append([event])
        else:
            self._pending.append([time.perf_counter()])

    def stop(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._pending[-1].append(event)
        else:
            self._pending[-1].append(time.perf_counter())

    def times(self) -> list[float]:
        """Seconds of every step started and stopped so far (one device sync on CUDA)."""
        if self._pending:
            if self.cuda:
                self._pending[-1][-1].synchronize()
                self._times += [a.elapsed_time(b) / 1000 for a, b in self._pending]
            else:
                self._times += [b - a for a, b in self._pending]
            self._pending = []
        return list(self._times)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (as DomainBed) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


PRECISIONS = ("fp32", "tf32", "bf16")


def configure_precision(precision: str, deterministic: bool = False) -> None:
    """Set the process-wide matmul precision: fp32 (the reference) keeps full float32 matmuls;
    tf32 lets CUDA matmuls and convolutions use TensorFloat-32; bf16 keeps fp32 flags (the
    step runs under `autocast`). `deterministic` sets CUBLAS_WORKSPACE_CONFIG (before CUDA
    initialises) and `torch.use_deterministic_algorithms(True)`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """`torch.autocast(device.type, bfloat16)` for bf16, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
