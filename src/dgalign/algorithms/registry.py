"""The algorithm registry (a `dgalign.utils.registry.Registry`): `register` a class under its
name, `get` it back, list `names`.

Contract checked at registration: a `torch.nn.Module` class with `update` and `predict`
implemented, and `hparam_space`, `extra_state`, `load_extra_state` (all inherited from
`dgalign.algorithms.Algorithm`). A class written for DomainBed goes through
`dgalign.algorithms.domainbed_adapter.register_domainbed` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from dgalign.utils.registry import Registry

if TYPE_CHECKING:
    from dgalign.algorithms.base import Algorithm

A = TypeVar("A", bound="type[Algorithm]")

REQUIRED = ("update", "predict", "hparam_space", "extra_state", "load_extra_state")


def _check(cls: Any) -> list[str]:
    import torch

    if not isinstance(cls, type):
        return ["is not a class"]
    problems = []
    if not issubclass(cls, torch.nn.Module):
        problems.append("is not a torch.nn.Module")
    from dgalign.algorithms.base import Algorithm

    for method in ("update", "predict"):
        if getattr(cls, method, None) is getattr(Algorithm, method):
            problems.append(f"does not implement {method}")
    hparams = getattr(cls, "HPARAMS", ())
    from dgalign.hparams import HParam

    if not all(isinstance(h, HParam) for h in hparams):
        problems.append("HPARAMS holds entries that are not dgalign.hparams.HParam")
    return problems


ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm",
    required=REQUIRED,
    check=_check,
    describe=lambda cls: getattr(cls, "DESCRIPTION", ""),
    fix="subclass dgalign.algorithms.Algorithm, or wrap a DomainBed class with "
    "dgalign.algorithms.domainbed_adapter.register_domainbed",
)
_REGISTRY = ALGORITHMS._entries  # the name -> class mapping (tests patch it)


def register(cls: A) -> A:
    """Class decorator: make `cls` available as `get(cls.__name__)` (contract checked)."""
    return ALGORITHMS.register(cls)


def get(name: str) -> type[Algorithm]:
    """The algorithm class registered as `name`; ConfigError listing valid names otherwise."""
    return ALGORITHMS.get(name)


def names() -> list[str]:
    """Registered algorithm names, in registration order."""
    return ALGORITHMS.names()
