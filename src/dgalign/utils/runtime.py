"""The process's runtime: the torch device a command asks for, an honest clock for timing work
on it, the seeding of every random generator a run draws from, the float32 matmul
precision and determinism, and how the C allocator treats freed host memory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
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


#: environment variable that turns `keep_freed_memory` off when set to 0
KEEP_FREED_MEMORY_ENV = "DGALIGN_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
_TRIM_THRESHOLD = 2**31 - 1  # bytes of free memory at the heap's top kept before trimming
_log = logging.getLogger(__name__)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed host memory for reuse; True if it now does.

    By default glibc serves every block above 32 MiB by a fresh `mmap` and unmaps it on free,
    so each step of a full-batch CPU run (tensors of tens of MB) faults in and zeroes every
    page of its activations and gradients again. `mallopt(M_MMAP_MAX, 0)` serves them from
    the heap instead and `M_TRIM_THRESHOLD` = 2 GiB keeps freed heap memory mapped, so later
    steps reuse it (the process keeps its peak resident size, as a CUDA caching allocator
    does). Only glibc (Linux) has these knobs: elsewhere, or with DGALIGN_KEEP_FREED_MEMORY=0,
    nothing changes and the result is False."""
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip() == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    if not ok:
        _log.debug("mallopt refused the settings; host memory is managed as by default")
    return ok
