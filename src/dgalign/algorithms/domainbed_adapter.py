"""Run an algorithm class written for DomainBed unchanged.

DomainBed's contract: `cls(input_shape, num_classes, num_domains, hparams)`, `update(
minibatches, unlabeled=None) -> dict`, `predict(x) -> logits`, hyper-parameters declared in
DomainBed's `hparams_registry` as `name -> (default, random rule)`. `register_domainbed(cls,
hparams={...})` registers a dgalign algorithm that builds `cls` inside it and forwards
`update`/`predict` to it; the table becomes its hyper-parameter space (each rule is called with
a `numpy.random.RandomState` seeded from the hparams seed and the name, as DomainBed does).
Checkpoints keep the wrapped module's state and every optimizer it holds as an attribute.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dgalign.algorithms.base import Algorithm, Logs
from dgalign.algorithms.registry import ALGORITHMS
from dgalign.errors import ConfigError
from dgalign.hparams import HParam, const

#: name -> (default, rule) or (default, rule, one-line meaning); a rule is a function of a
#: numpy RandomState (DomainBed's `lambda r: 10 ** r.uniform(-5, -3)`) or a constant.
HParamTable = Mapping[str, tuple]


def table_hparams(table: HParamTable, owner: str) -> tuple[HParam, ...]:
    """The `HParam`s of a DomainBed-style table; ConfigError for a malformed entry."""
    out = []
    for name, entry in table.items():
        if not isinstance(entry, tuple) or len(entry) not in (2, 3):
            raise ConfigError(
                f"{owner} hyper-parameter {name!r}: give (default, rule) or (default, rule, "
                f"meaning), got {entry!r}"
            )
        default, rule = entry[0], entry[1]
        meaning = entry[2] if len(entry) == 3 else "DomainBed hyper-parameter"
        sampler = rule if callable(rule) else const(rule)
        out.append(HParam(name, default, sampler, meaning))
    return tuple(out)


def _logged(value: Any) -> torch.Tensor | float:
    return value.detach().reshape(()) if isinstance(value, torch.Tensor) else float(value)


class DomainBedAlgorithm(Algorithm):
    """A dgalign algorithm around `WRAPPED`, a class written for DomainBed (module doc)."""

    WRAPPED: type[torch.nn.Module]

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.wrapped = self.WRAPPED(input_shape, num_classes, num_domains, self.hparams)

    def _forward_update(self, minibatches, **kwargs) -> Logs:
        values = self.wrapped.update(minibatches, **kwargs)
        return {k: _logged(v) for k, v in (values or {}).items()}

    def update(self, minibatches):  # replaced below for classes that take `unlabeled`
        return self._forward_update(minibatches)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.wrapped.predict(x)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            name: value
            for name, value in vars(self.wrapped).items()
            if isinstance(value, torch.optim.Optimizer)
        }

    def extra_state(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self._optimizers().items()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        optimizers = self._optimizers()
        for name, value in state.items():
            optimizers[name].load_state_dict(value)


def _update_with_unlabeled(self, minibatches, unlabeled=None) -> Logs:
    return self._forward_update(minibatches, unlabeled=unlabeled)


def register_domainbed(
    cls: type,
    hparams: HParamTable | None = None,
    *,
    name: str | None = None,
    description: str = "",
    paper: str = "",
) -> type[Algorithm]:
    """Register DomainBed algorithm class `cls` as dgalign algorithm `name` (default: its
    name), with its own hyper-parameters `hparams` (module docstring); returns the registered
    wrapper class. RegistryError (one line) when `cls` lacks DomainBed's contract."""
    missing = [m for m in ("update", "predict") if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        what = "is not a class" if not isinstance(cls, type) else f"lacks {', '.join(missing)}"
        from dgalign.utils.registry import RegistryError

        raise RegistryError(
            f"cannot register DomainBed algorithm {getattr(cls, '__name__', cls)!r}: {what}"
        )
    key = name or cls.__name__
    update_params = inspect.signature(cls.update).parameters
    body: dict[str, Any] = {
        "WRAPPED": cls,
        "HPARAMS": table_hparams(hparams or {}, key),
        "DESCRIPTION": description or (cls.__doc__ or "").strip().split("\n")[0],
        "PAPER": paper,
        "__module__": cls.__module__,
        "__qualname__": key,
        "__doc__": cls.__doc__,
    }
    if "unlabeled" in update_params:
        body["update"] = _update_with_unlabeled
    wrapper = type(key, (DomainBedAlgorithm,), body)
    return ALGORITHMS.register(wrapper, name=key)


__all__ = ["DomainBedAlgorithm", "HParamTable", "register_domainbed", "table_hparams"]
