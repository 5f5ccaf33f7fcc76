"""Hyper-parameter declarations: `HParam`, the random rules, the dataset-level entries every
algorithm shares, and applying `--hparams` overrides.

DomainBed's semantics: every hyper-parameter is drawn from its own `RandomState` seeded by
`seed_hash(seed, name)` (`HParam.draw_name`: a renamed entry keeps its old name's draws), so
adding a hyper-parameter never shifts the draws of the others, and hyper-parameters shared with
DomainBed get the same draws as DomainBed for the same seed. Algorithms declare their own
entries in `HPARAMS`; resolving an algorithm's space by name is `dgalign.algorithms.spaces`
(this module sits below the algorithms and never imports them).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dgalign.errors import ConfigError
from dgalign.utils.seeding import seed_hash

LOG = logging.getLogger("dgalign.hparams")
_NOTICED: set[tuple[str, str]] = set()

SMALL_IMAGES = ("Debug28", "RotatedMNIST", "ColoredMNIST")


@dataclass(frozen=True)
class Sampler:
    """A random-value rule with a readable description, e.g. `10^U(-4.5, -2.5)`."""

    draw: Callable[[np.random.RandomState], Any]
    description: str

    def __call__(self, rng: np.random.RandomState) -> Any:
        return self.draw(rng)


def log_uniform(lo: float, hi: float) -> Sampler:
    """10 ** U(lo, hi)."""
    return Sampler(lambda r: float(10 ** r.uniform(lo, hi)), f"10^U({lo:g}, {hi:g})")


def uniform(lo: float, hi: float) -> Sampler:
    """U(lo, hi)."""
    return Sampler(lambda r: float(r.uniform(lo, hi)), f"U({lo:g}, {hi:g})")


def int_log_uniform(base: float, lo: float, hi: float) -> Sampler:
    """int(base ** U(lo, hi))."""
    return Sampler(lambda r: int(base ** r.uniform(lo, hi)), f"int({base:g}^U({lo:g}, {hi:g}))")


def int_uniform(lo: float, hi: float) -> Sampler:
    """int(U(lo, hi))."""
    return Sampler(lambda r: int(r.uniform(lo, hi)), f"int(U({lo:g}, {hi:g}))")


def choice(options: Sequence[Any]) -> Sampler:
    """One of `options`, uniformly."""
    opts = list(options)

    def draw(r: np.random.RandomState) -> Any:
        value = opts[int(r.choice(len(opts)))]
        return value.item() if isinstance(value, np.generic) else value

    return Sampler(draw, "{" + ", ".join(map(str, opts)) + "}")


def const(value: Any) -> Sampler:
    """Always `value` (the hyper-parameter is not searched)."""
    return Sampler(lambda r: value, f"{value} (fixed)")


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter: name, default value, random rule and a one-line meaning.

    `aliases`: older names still accepted in overrides (with a one-line notice); the random
    draw is seeded with `draw_name` (default: the first alias, else the name), so renaming an
    entry keeps its draws."""

    name: str
    default: Any
    sampler: Sampler
    help: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def draw_name(self) -> str:
        return self.aliases[0] if self.aliases else self.name

    def draw(self, seed: int) -> Any:
        """This entry's value for hyper-parameter seed `seed` (its own seeded RandomState)."""
        return self.sampler(np.random.RandomState(seed_hash(seed, self.draw_name)))


def alias_map(space: Sequence[HParam]) -> dict[str, str]:
    """{old name: current name} of a space."""
    return {old: h.name for h in space for old in h.aliases}


def base_hparam_space(dataset: str) -> list[HParam]:
    """Entries every algorithm has (DomainBed's unconditional and dataset-level ones)."""
    small = dataset in SMALL_IMAGES
    space = [
        HParam("data_augmentation", True, const(True), "image augmentation on training envs"),
        HParam("resnet18", False, const(False), "ResNet-18 instead of ResNet-50 (DomainBed)"),
        HParam("resnet_dropout", 0.0, choice([0.0, 0.1, 0.5]), "dropout before the head"),
        HParam("class_balanced", False, const(False), "class-balanced sampling"),
        HParam("nonlinear_classifier", False, const(False), "MLP head instead of linear"),
        HParam(
            "backbone",
            "mnist_cnn" if small else "resnet50",
            const("mnist_cnn" if small else "resnet50"),
            "featurizer: mnist_cnn, mlp, resnet18, resnet50 or vit_s16",
        ),
        HParam(
            "pretrained",
            not small,
            const(not small),
            "ImageNet weights for resnet18/50 and vit_s16 (false: random init)",
        ),
        HParam("freeze_bn", True, const(True), "ResNet BatchNorm kept in eval mode (DomainBed)"),
        HParam("amp", False, const(False), "CUDA: bfloat16 autocast, channels-last featurizer"),
        HParam("mlp_width", 256, int_log_uniform(2, 6, 10), "MLP featurizer width"),
        HParam("mlp_depth", 3, choice([3, 4, 5]), "MLP featurizer depth"),
        HParam("mlp_dropout", 0.0, choice([0.0, 0.1, 0.5]), "MLP featurizer dropout"),
    ]
    if small:
        space += [
            HParam("lr", 1e-3, log_uniform(-4.5, -2.5), "Adam learning rate"),
            HParam("weight_decay", 0.0, const(0.0), "Adam weight decay"),
            HParam("batch_size", 64, int_log_uniform(2, 3, 9), "batch size per domain"),
        ]
    else:
        space += [
            HParam("lr", 5e-5, log_uniform(-5, -3.5), "Adam learning rate"),
            HParam("weight_decay", 0.0, log_uniform(-6, -2), "Adam weight decay"),
            HParam(
                "batch_size",
                32,
                int_log_uniform(2, 3, 5) if dataset == "DomainNet" else int_log_uniform(2, 3, 5.5),
                "batch size per domain",
            ),
        ]
    return space


def apply_overrides(
    hparams: dict[str, Any],
    overrides: str | dict[str, Any] | None,
    aliases: Mapping[str, str] | None = None,
    owner: str = "",
) -> dict[str, Any]:
    """Return `hparams` updated with `overrides` (a dict or a JSON object string).

    Names in `aliases` ({old: new}, e.g. an algorithm's `alias_map`) are applied under their
    new name, with a one-line notice (once per name and process). Raises ConfigError for
    malformed JSON, a non-object, an unknown name, or a value whose type does not match the
    default's (ints are accepted where floats are expected).
    """
    if overrides is None or overrides == "":
        return dict(hparams)
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"--hparams is not valid JSON ({exc.msg} at position {exc.pos}); "
                "pass an object such as '{\"lr\": 0.001}'"
            ) from None
    if not isinstance(overrides, dict):
        raise ConfigError("--hparams must be a JSON object such as '{\"lr\": 0.001}'")
    overrides = _rename(overrides, aliases or {}, owner)
    unknown = sorted(set(overrides) - set(hparams))
    if unknown:
        raise ConfigError(
            f"unknown hyper-parameter(s) {', '.join(unknown)}; "
            f"valid names: {', '.join(sorted(hparams))}"
        )
    result = dict(hparams)
    for name, value in overrides.items():
        result[name] = _coerce(name, value, hparams[name])
    return result


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"hyper-parameter {name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ConfigError(f"hyper-parameter {name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(f"hyper-parameter {name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"hyper-parameter {name} must be a string, got {value!r}")
    return value


def _rename(overrides: dict[str, Any], aliases: Mapping[str, str], owner: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        new = aliases.get(name)
        if new is None:
            out[name] = value
            continue
        if new in overrides:
            raise ConfigError(
                f"hyper-parameters {name} and {new} are the same one; give only {new}"
            )
        if (owner, name) not in _NOTICED:
            _NOTICED.add((owner, name))
            who = f" of {owner}" if owner else ""
            LOG.warning(
                "note: hyper-parameter %s%s is now called %s (the old name still works)",
                name,
                who,
                new,
            )
        out[new] = value
    return out
