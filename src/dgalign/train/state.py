"""Resumable state: the algorithm, its optimizers and every RNG, as plain data.

Everything saved is tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: opening a checkpoint never executes code. Its SHA-256 is
listed in `checkpoint.pt.sha256` (`dgalign.utils.io`) and checked before it is loaded.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgalign.errors import RunDirError
from dgalign.runs.directory import RESTART_HINT
from dgalign.utils.io import atomic_torch_save, read_verified_torch

CHECKPOINT_FORMAT = "dgalign-checkpoint-1"


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Python, NumPy, torch CPU and (for a CUDA `device`) that GPU's generator states as
    plain data. Only the device in use is saved, so a run resumes on a machine with fewer
    GPUs, and a CPU run never initialises CUDA."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *map(float, np_state[2:]),
        ],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if _is_cuda(device) else [],
    }


def _is_cuda(device: torch.device | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what `rng_state` returned; the saved GPU state goes to `device` when it is a
    CUDA device (an older checkpoint, holding every GPU's state, gives its first); a CPU run
    touches no GPU state."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and _is_cuda(device):
        torch.cuda.set_rng_state(state["cuda"][0], device)


def save_checkpoint(
    path: Path,
    algorithm,
    next_step: int,
    args: dict[str, Any],
    device: torch.device | None = None,
) -> None:
    """Atomically save what resuming at `next_step` needs, with its digest beside it."""
    atomic_torch_save(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "step": next_step,
            "model": algorithm.state_dict(),
            "extra": algorithm.extra_state(),
            "rng": rng_state(device),
            "args": args,
        },
        digest=True,
    )


def damaged(path: Path, why: str) -> RunDirError:
    """The one-line error for a checkpoint that cannot be resumed from."""
    return RunDirError(f"checkpoint {path} cannot be used: {why}; {RESTART_HINT}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint whose digest matches, safely (no code runs); RunDirError if it is
    damaged, unreadable or not ours."""
    state, problem = read_verified_torch(path)
    if problem is not None:
        raise damaged(path, problem)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise damaged(path, "it is not a dgalign checkpoint")
    missing = sorted({"step", "model", "extra", "rng"} - set(state))
    if missing:
        raise damaged(path, f"it lacks {', '.join(missing)}")
    return state


def restore(
    algorithm, state: dict[str, Any], path: Path, device: torch.device | None = None
) -> int:
    """Load the model, optimizers and RNGs from `state` (read from `path`); return the step to
    resume at. RunDirError (naming `path`) when they do not fit the algorithm."""
    try:
        algorithm.load_state_dict(state["model"])
        algorithm.load_extra_state(state["extra"])
        _check_optimizer_shapes(algorithm)
        set_rng_state(state["rng"], device)
    except RunDirError as exc:
        raise damaged(path, str(exc).split(";")[0]) from None
    except Exception as exc:  # wrong keys, shapes, types: the file does not fit this run
        detail = " ".join(str(exc).split())[:200]
        raise damaged(path, f"it does not fit this run ({type(exc).__name__}: {detail})") from None
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool):
        raise damaged(path, f"its step {step!r} is not an integer")
    return step


class ExtraStateView:
    """What the checkpoint functions see when a run keeps state beside the algorithm's (SWA's
    weight average, SWAD's segments): `inner` (the algorithm, or another such view of it) with
    `holder.state_dict()` under the reserved key `key` of `extra_state`, so a checkpoint
    resumes that state exactly; a checkpoint without it is refused with `missing`."""

    def __init__(self, inner: Any, key: str, holder: Any, missing: str) -> None:
        self.inner = inner
        self.key = key
        self.holder = holder
        self.missing = missing

    @property
    def algorithm(self) -> Any:
        """The algorithm under every view."""
        return getattr(self.inner, "algorithm", self.inner)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        return self.inner.load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        return {**self.inner.extra_state(), self.key: self.holder.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if self.key not in state:
            raise RunDirError(self.missing)
        self.holder.load_state_dict(state.pop(self.key))
        self.inner.load_extra_state(state)


def _check_optimizer_shapes(algorithm) -> None:
    """ValueError when an optimizer's per-parameter state (Adam's moments, ...) has another
    shape than its parameter: `Optimizer.load_state_dict` does not check that."""
    owner = getattr(algorithm, "algorithm", algorithm)  # under an `ExtraStateView`
    for name, value in vars(owner).items():
        if not isinstance(value, torch.optim.Optimizer):
            continue
        for param, slots in value.state.items():
            for key, tensor in slots.items():
                if torch.is_tensor(tensor) and tensor.dim() > 0 and tensor.shape != param.shape:
                    raise ValueError(
                        f"{name} state {key} has shape {tuple(tensor.shape)}, its parameter "
                        f"{tuple(param.shape)}"
                    )


def checkpoint_steps(n_steps: int, checkpoint_freq: int, below: int) -> list[int]:
    """The steps < `below` that write a record and a checkpoint: every `checkpoint_freq`-th
    and the last one."""
    return [s for s in range(min(below, n_steps)) if s % checkpoint_freq == 0 or s == n_steps - 1]


def resumed_records(
    rundir, start_step: int, records: list[dict[str, Any]], n_steps: int, checkpoint_freq: int
) -> list[dict[str, Any]]:
    """The records a resume at `start_step` keeps (those of earlier steps), after checking
    that the checkpoint's step is one a run of `n_steps` saves at and that results.jsonl holds
    exactly one record per checkpoint before it. RunDirError naming the damaged file else."""
    path = rundir.checkpoint
    if not 1 <= start_step <= n_steps:
        raise damaged(path, f"its step {start_step} is outside this run's 1..{n_steps}")
    if (start_step - 1) % checkpoint_freq != 0 and start_step != n_steps:
        raise damaged(
            path, f"its step {start_step} follows no checkpoint (every {checkpoint_freq} steps)"
        )
    kept = [r for r in records if r["step"] < start_step]
    expected = checkpoint_steps(n_steps, checkpoint_freq, start_step)
    found = [r["step"] for r in kept]
    if found != expected:
        missing = sorted(set(expected) - set(found))
        what = (
            f"lacks the records of steps {', '.join(map(str, missing[:5]))}"
            if missing
            else f"holds records of steps {found[:8]}, expected {expected[:8]}"
        )
        raise RunDirError(
            f"{rundir.results} {what} (checkpoint {path.name} is at step {start_step}); "
            f"{RESTART_HINT}"
        )
    return kept
