"""Run code as if its model and data lived on an accelerator, on a machine without one.

Under `on_fake_device()` every tensor is a `FakeTensor` (shapes, dtypes and devices, no data):
the model and the inputs are made on `DEVICE` (the fake `meta` device: a fake `cuda` tensor
cannot go through backward without a CUDA driver, the autograd engine asks the driver for the
device's context; the propagation rules of fake tensors are the same for every device). A
computation that mixes a tensor of the device with one of the CPU fails as it would on a GPU
(`FakeTensorDeviceMismatchError`; 0-dim CPU tensors mix, as on a GPU), and the harness also
records every op that *makes* a CPU tensor with a dimension (`Report.cpu_ops`): a random draw,
an index or a constant built on the host and copied over, which a GPU would accept but pay a
copy and often a sync for. Reads of a scalar (`.item()`, `float()`, `bool()`, `.tolist()`)
are answered with fixed values (`Answers`) and counted (`Report.scalar_reads`).

`Report.syncs` lists what would make the host wait for a GPU: a scalar read of a device
tensor, a copy from the device to the CPU, and an op on the device whose output shape depends
on the data (`nonzero`, boolean-mask indexing, `unique`...), each with its caller's frame.

Ops whose output shape depends on the data are answered with fixed shapes where that is
well defined (`nonzero` and boolean-mask indexing: half the elements; `bincount`:
`minlength` bins); others (`unique`, `masked_select`...) raise `DynamicOutputShapeException`;
code that uses them is covered by the real CPU tests and listed where a harness test skips.

`moved_leftovers(obj)` covers what construction under the fake device hides: a plain tensor
attribute that `Module.to` does not move (not a parameter or buffer) stays on the CPU after
`algorithm.to(device)`; it builds the object for real on the CPU, moves it to `meta` for real
and lists every CPU tensor with a dimension still reachable from it.
"""

from __future__ import annotations

import contextlib
import traceback
import unittest.mock
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

DEVICE = torch.device("meta")
_SCALAR = torch.ops.aten._local_scalar_dense.default
_CURRENT: list = []  # the reports of the open `on_fake_device` blocks
_MODES: list = []  # their fake modes


@dataclass
class Answers:
    """The value a scalar read returns, by the tensor's dtype kind."""

    boolean: bool = False
    integer: int = 1
    floating: float = 0.5


@dataclass
class Report:
    """What the harness saw: ops that made CPU tensors (op name and the caller's frame) and
    the number of scalar reads."""

    cpu_ops: list[str] = field(default_factory=list)
    scalar_reads: int = 0
    syncs: list[str] = field(default_factory=list)
    quiet: int = 0  # > 0 while the harness itself makes a tensor on the CPU to move it

    def wrong_device(self, host_sites: frozenset[str] = frozenset()) -> list[str]:
        """The CPU-tensor ops, less those made in a function named in `host_sites`."""
        return [op for op in self.cpu_ops if _site(op) not in host_sites]


def _site(op: str) -> str:
    return op.rsplit("(", 1)[-1].rstrip(")")


class _Guard(TorchDispatchMode):
    def __init__(self, report: Report, answers: Answers) -> None:
        super().__init__()
        self.report = report
        self.answers = answers

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _syncs(func, args, kwargs):
            self.report.syncs.append(f"{func} at {_caller()}")
        if func is _SCALAR:
            self.report.scalar_reads += 1
            dtype = args[0].dtype
            if dtype == torch.bool:
                return self.answers.boolean
            if dtype.is_floating_point or dtype.is_complex:
                return self.answers.floating
            return self.answers.integer
        out = _DATA_DEPENDENT.get(func, func)(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0:
                if self.report.quiet:
                    continue
                self.report.cpu_ops.append(f"{func} at {_caller()}")
        return out


def _on_device(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "cpu"


def _syncs(func, args, kwargs) -> bool:
    """Whether `func(*args, **kwargs)` waits for the device on a GPU."""
    if func is torch.ops.aten.index.Tensor:
        masks = [i for i in args[1] if i is not None and i.dtype == torch.bool]
        return _on_device(args[0]) and bool(masks)
    if func is _SCALAR or func in _DATA_DEPENDENT or func in _SYNCING:
        return _on_device(args[0])
    if func is torch.ops.aten._to_copy.default:
        target = kwargs.get("device")
        return _on_device(args[0]) and target is not None and torch.device(target).type == "cpu"
    if func is torch.ops.aten.copy_.default:
        return args[0].device.type == "cpu" and _on_device(args[1])
    return False


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    """nonzero with a fixed count: half the elements (at least one)."""
    return torch.empty(max(1, x.numel() // 2), x.dim(), dtype=torch.long, device=x.device)


def _bincount(x: torch.Tensor, weights=None, minlength: int = 0) -> torch.Tensor:
    """bincount of values below `minlength` (at least 2 bins)."""
    dtype = torch.long if weights is None else weights.dtype
    return torch.empty(max(minlength, 2), dtype=dtype, device=x.device)


def _index(x: torch.Tensor, indices) -> torch.Tensor:
    """Indexing with boolean masks, each as the indices `_nonzero` gives it."""
    out = []
    for index in indices:
        if index is not None and index.dtype == torch.bool:
            out.extend(_nonzero(index).unbind(1))
        else:
            out.append(index)
    return torch.ops.aten.index.Tensor(x, out)


#: Ops whose output shape depends on the data, answered with a fixed shape.
_DATA_DEPENDENT = {
    torch.ops.aten.nonzero.default: _nonzero,
    torch.ops.aten.bincount.default: _bincount,
    torch.ops.aten.index.Tensor: _index,
}
#: Ops that read the data to size their output; the fake mode raises on most of them.
_SYNCING = frozenset(
    {
        torch.ops.aten._unique.default,
        torch.ops.aten._unique2.default,
        torch.ops.aten.unique_dim.default,
        torch.ops.aten.masked_select.default,
        torch.ops.aten.repeat_interleave.Tensor,
    }
)


def _caller() -> str:
    """The innermost frame outside torch and this file: where the CPU tensor was made."""
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename
        if "/torch/" not in name and not name.endswith("/tests/device_harness.py"):
            return f"{name.rsplit('/', 2)[-1]}:{frame.lineno} ({frame.name})"
    return "?"


_AUTOCAST = torch.autocast


class _Autocast(_AUTOCAST):
    """`torch.autocast` that takes the fake device as the CPU (autocast has no state for
    `meta`; code that disables autocast around a kernel names the tensors' device type)."""

    def __init__(self, device_type: str, *args: Any, **kwargs: Any) -> None:
        super().__init__("cpu" if device_type == DEVICE.type else device_type, *args, **kwargs)


@contextlib.contextmanager
def on_fake_device(answers: Answers | None = None) -> Iterator[Report]:
    """Fake tensors for everything made inside; yields the `Report` filled as code runs.
    Build models with `build(...)` inside it, data with `device=DEVICE`."""
    report = Report()
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    mode.cache_enabled = False  # its dispatch cache segfaulted on another fake mode's tensors
    with (
        unittest.mock.patch.object(torch, "autocast", _Autocast),
        unittest.mock.patch.object(torch.amp, "autocast", _Autocast),
        mode,
        FakeCopyMode(mode),  # copy.deepcopy of a model stays in this mode
        _Guard(report, answers or Answers()),
        _OnDevice(report),
        unittest.mock.patch.object(torch.distributions.Distribution, "_validate_args", False),
    ):
        _CURRENT.append(report)
        _MODES.append(mode)
        try:
            yield report
        finally:
            _CURRENT.pop()
            _MODES.pop()


def fake(tensor: torch.Tensor) -> torch.Tensor:
    """A real (CPU) tensor as a fake one on `DEVICE`, inside `on_fake_device`: data made
    before the block, handed to the code under test as if it already lived on the device."""
    report = _CURRENT[-1]
    report.quiet += 1
    try:
        return _MODES[-1].from_tensor(tensor).to(DEVICE)
    finally:
        report.quiet -= 1


def host(tensor: torch.Tensor) -> torch.Tensor:
    """A real tensor as a fake one still on the CPU, inside `on_fake_device`: data held in
    host memory (a dataset) that the code under test must move to the device itself."""
    report = _CURRENT[-1]
    report.quiet += 1
    try:
        return _MODES[-1].from_tensor(tensor)
    finally:
        report.quiet -= 1


def build(factory, *args: Any, **kwargs: Any) -> Any:
    """`factory(*args, **kwargs)` with `DEVICE` as the default device (inside
    `on_fake_device`: parameters, buffers and optimizer state on the fake device); pair it with
    `moved_leftovers` for what `.to(device)` would have left behind."""
    report = _CURRENT[-1] if _CURRENT else Report()
    with _OnDevice(report, default=True):
        return factory(*args, **kwargs)


class _OnDevice(TorchFunctionMode):
    """Data constructors aimed at `DEVICE` (`torch.tensor(data, device=...)`,
    `x.new_tensor(data)` of a tensor there) are made on the CPU and moved, unrecorded: made on
    `meta` directly they are plain tensors that the fake mode never sees. With `default`,
    every factory without a device makes its tensor on `DEVICE` (building a model there)."""

    def __init__(self, report: Report, default: bool = False) -> None:
        super().__init__()
        self.report = report
        self.default = default

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FROM_DATA:
            if func is torch.Tensor.new_tensor:
                like, args = args[0], args[1:]
                kwargs.setdefault("device", like.device)
                kwargs.setdefault("dtype", like.dtype)
                func = torch.tensor
            device = kwargs.pop("device", None)
            if device is None and self.default:
                device = DEVICE
            if device is None or torch.device(device).type != DEVICE.type:
                return func(*args, **kwargs, **({} if device is None else {"device": device}))
            self.report.quiet += 1
            try:
                return func(*args, **kwargs).to(DEVICE)
            finally:
                self.report.quiet -= 1
        if self.default and func in _device_constructors() and kwargs.get("device") is None:
            kwargs["device"] = DEVICE
        return func(*args, **kwargs)


_FROM_DATA = (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor)


def moved_leftovers(obj: Any) -> list[str]:
    """Paths of CPU tensors with a dimension reachable from `obj` after `obj.to("meta")` (a
    real, CPU-built object): attributes that moving a module to a device leaves behind."""
    obj.to(DEVICE)
    found: list[str] = []
    seen: set[int] = set()

    def walk(value: Any, path: str, depth: int) -> None:
        if id(value) in seen or depth > 6:
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            if value.device.type == "cpu" and value.dim() > 0:
                found.append(path)
            return
        if isinstance(value, torch.optim.Optimizer):
            return  # its state is made on the parameters' device at the first step
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}[{k!r}]", depth + 1)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]", depth + 1)
        elif isinstance(value, torch.nn.Module) or not (
            isinstance(value, type) or callable(value) or not hasattr(value, "__dict__")
        ):
            for k, v in vars(value).items():
                walk(v, f"{path}.{k}", depth + 1)

    walk(obj, type(obj).__name__, 0)
    return found
