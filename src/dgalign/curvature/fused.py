"""The switch of the fused (`torch.compile`) passes of the one-logit moments kernel.

The closed-form backward of `moments.head_moments` makes several memory-bound elementwise
passes and matrix-vector products over each chunk of feature rows (squares, row sums, rank-1
and rank-2 updates of the feature gradient). With fused kernels on, for one logit and a square
or Hessian output, they run as one compiled function per chunk (inductor: a loop for the row
sums, one writing the feature gradient in place), the Hessian's product with the features
staying with BLAS. In the forward pass, with a square and no Hessian, the column sums
G = r^T Z and Q = u^T (Z * Z) run as one compiled pass per domain over blocks of rows instead
of the squares and two products. `_fused_moments` holds the bodies; they compute what the
eager code does, in another summation order. The other forward passes stay eager, and so do
HGP's kernels (`hvp`, `_hgp_one_logit`) and the plain gradient: they are matrix-vector
products already, which compiled column sums did not beat on the Colored MNIST shapes
(docs/benchmarks.md).

Modes: "on", "off", or "auto" (the default): on for CPU features of at least
`AUTO_MIN_ELEMENTS` entries (a full-batch Colored MNIST step, not DomainBed minibatches or unit
tests, which would only pay the compile time), off on other devices unless switched on. Only the
one-logit head (C = 1) has fused bodies; C >= 2 always runs eagerly. Set the mode by
`fused_kernels(mode)` (a plain call, or a `with` block that restores the previous mode) or the
environment variable DGALIGN_FUSED_KERNELS=auto|1|0, read while no call has set one.

Each body is compiled once per dtype and combination of its static options; every dim is
dynamic, so chunks of any length share one compilation (inductor caches it on disk too). A
compiler that fails makes the kernels fall back to the eager code, with one warning.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dgalign.curvature._head import cpu_vendor
from dgalign.errors import ConfigError

ENV_VAR = "DGALIGN_FUSED_KERNELS"
MODES = ("auto", "on", "off")
#: "auto" fuses a kernel call whose features [B, N, d] have at least this many entries
AUTO_MIN_ELEMENTS = 1 << 22
#: the fused body takes chunks of about this many feature entries: a whole Colored MNIST
#: domain (25,000 x 390). The body streams rows (the column sum dl^T z is a BLAS product
#: outside it), so it needs no cache-sized chunks, and each call costs a guard check and a
#: launch (the whole-domain body was the faster one, docs/benchmarks.md)
CHUNK_ELEMENTS = 1 << 24
#: the same with the head Hessian: its contraction Y = Z Gam_zz, a [rows, d] x [d, d] product,
#: ran 20-25% faster with chunks of 2^18-2^19 entries than of 2^21 on an AMD EPYC (its output
#: stays in cache) and 4% slower on an Intel Xeon, where 2^21 and whole domains ran fastest
#: (`dgalign bench head-products`, docs/benchmarks.md)
HESSIAN_CHUNK_ELEMENTS = 1 << 19 if cpu_vendor() == "AuthenticAMD" else 1 << 21
_ALIASES = {"1": "on", "true": "on", "0": "off", "false": "off"}

#: inductor options: compile in this process (a pool of compile workers would start, and
#: compete with training for the cores, at the first compilation)
_OPTIONS = {"compile_threads": 1}

_state: dict[str, Any] = {"mode": None, "broken": False}
_compiled: dict[str, Callable[..., Any]] = {}


def _parse(mode: bool | str, where: str) -> str:
    if isinstance(mode, bool):
        return "on" if mode else "off"
    key = str(mode).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in MODES:
        raise ConfigError(f"{where} must be auto, on (1) or off (0), got {mode!r}")
    return key


def mode() -> str:
    """The current mode: the last `fused_kernels` call, else DGALIGN_FUSED_KERNELS, else auto."""
    if _state["mode"] is not None:
        return _state["mode"]
    return _parse(os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR)


class fused_kernels:  # lower case: used like a function (and as a context manager)
    """Set the mode ("auto", "on"/True, "off"/False, None: back to the environment variable);
    as a `with` block, the previous mode comes back on exit."""

    def __init__(self, mode: bool | str | None) -> None:
        self.previous = _state["mode"]
        _state["mode"] = None if mode is None else _parse(mode, "fused_kernels mode")

    def __enter__(self) -> fused_kernels:
        return self

    def __exit__(self, *exc: object) -> None:
        _state["mode"] = self.previous


def enabled(z: Tensor) -> bool:
    """Whether a kernel call on features z [B, N, d] runs the fused bodies."""
    current = mode()
    if current == "off" or _state["broken"] or torch.compiler.is_compiling():
        return False
    if current == "on":
        return True
    return z.device.type == "cpu" and z.numel() >= AUTO_MIN_ELEMENTS


def chunk_rows(z: Tensor, hessian: bool = False) -> int:
    """Rows per fused chunk for features z [B, N, d] (`CHUNK_ELEMENTS`, or
    `HESSIAN_CHUNK_ELEMENTS` with the head Hessian)."""
    elements = HESSIAN_CHUNK_ELEMENTS if hessian else CHUNK_ELEMENTS
    return max(8, elements // max(1, z.shape[0] * z.shape[2]))


def run(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) through its compiled version; None (and one warning for the process) if the
    compiler fails, the caller then runs the eager code."""
    if _state["broken"]:
        return None
    name = f"{fn.__module__}.{fn.__qualname__}"
    if name not in _compiled:
        if not torch.cuda.is_available():  # inductor's C++ build would log "No CUDA runtime
            # is found" on a CPU-only machine, which says nothing about CPU kernels
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _compiled[name] = torch.compile(fn, dynamic=True, fullgraph=True, options=_OPTIONS)
    try:
        return _compiled[name](*args)
    except Exception as exc:  # any compiler failure falls back to eager
        _state["broken"] = True
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(
            f"fused curvature kernels disabled, running eagerly: torch.compile failed "
            f"({type(exc).__name__}: {first[:200]})",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def reset() -> None:
    """Forget compiled functions and a recorded compiler failure (tests)."""
    _compiled.clear()
    _state["broken"] = False
