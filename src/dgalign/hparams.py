"""Hyper-parameter declarations: `HParam`, the random rules, the dataset-level entries every
algorithm shares, and applying `--hparams` overrides.

DomainBed's semantics: every hyper-parameter is drawn from its own `RandomState` seeded by
`seed_hash(seed, name)` (`HParam.draw_name`: a renamed entry keeps its old name's draws), so
adding a hyper-parameter never shifts the draws of the others, and hyper-parameters shared with
DomainBed get the same draws as DomainBed for the same seed. Algorithms declare their own
entries in `HPARAMS`; resolving an algorithm's space by name is `dgalign.algorithms.spaces`
(this module sits below the algorithms and never imports them).

Every hyper-parameter has a `Domain`: the values that can work (`positive()`, `unit_open()` =
(0, 1), `integer(1)` = integers >= 1, ...; every number finite). `resolve_hparams` checks the
resolved configuration against it (`check_hparams`), so a bad `--hparams` value is one
ConfigError before a run (or any job of a sweep) starts.
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
from dgalign.networks.featurizers import BACKBONES
from dgalign.utils.seeding import seed_hash

LOG = logging.getLogger("dgalign.hparams")
_NOTICED: set[tuple[str, str]] = set()

SMALL_IMAGES = ("Debug28", "RotatedMNIST", "ColoredMNIST", "Spurious28")


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


def zero_or(p_zero: float, sampler: Sampler) -> Sampler:
    """0.0 with probability `p_zero` (the term switched off), else a draw of `sampler`."""

    def draw(r: np.random.RandomState) -> Any:
        return 0.0 if r.uniform() < p_zero else sampler(r)

    return Sampler(draw, f"0 w.p. {p_zero:g}, else {sampler.description}")


def const(value: Any) -> Sampler:
    """Always `value` (the hyper-parameter is not searched)."""
    return Sampler(lambda r: value, f"{value} (fixed)")


INT_MAX = 2**31 - 1  # integers past a C int overflow the tensors and counters they size


@dataclass(frozen=True)
class Domain:
    """The values a hyper-parameter may take: `kind` bool / int / float / real (an int or a
    float, kept as given) / str; numbers finite
    and within [lo, hi] (an end excluded when `lo_open` / `hi_open`); strings among `options`
    when given. `description` reads like `> 0` or `in (0, 1)`."""

    kind: str
    description: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    options: tuple[str, ...] = ()

    def check(self, name: str, value: Any) -> Any:
        """`value` coerced to the kind (an integral float becomes an int, an int a float);
        ConfigError (one line) when it is outside the domain."""
        where = f"hyper-parameter {name} must be"
        domain = f" {self.description}" if self.description else ""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} true or false, got {_show(value)}")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{where} a string, got {_show(value)}")
            if self.options and value not in self.options:
                raise ConfigError(f"{where} one of {', '.join(self.options)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "an integer" if self.kind == "int" else "a number"
            raise ConfigError(f"{where} {what}{domain}, got {_show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} a finite number{domain}, got {value}")
        if self.kind == "int":
            if value != int(value):
                raise ConfigError(f"{where} an integer{domain}, got {value}")
            value = int(value)
        elif self.kind == "float":
            value = float(value)
        if not self._within(value):
            what = "an integer" if self.kind == "int" else "a number"
            if self.hi is not None and value > self.hi and self.kind == "int":
                domain += f" and at most {int(self.hi)}"
            raise ConfigError(f"{where} {what}{domain}, got {value}")
        return value

    def _within(self, value: float) -> bool:
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (
            self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi))
        )


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def boolean() -> Domain:
    """true or false."""
    return Domain("bool", "true or false")


def integer(minimum: int = 1, maximum: int = INT_MAX) -> Domain:
    """An integer in [minimum, maximum]."""
    return Domain("int", f">= {minimum}", lo=minimum, hi=maximum)


def positive() -> Domain:
    """A finite number > 0."""
    return Domain("float", "> 0", lo=0.0, lo_open=True)


def nonnegative() -> Domain:
    """A finite number >= 0."""
    return Domain("float", ">= 0", lo=0.0)


def unit_open() -> Domain:
    """A number in (0, 1)."""
    return Domain("float", "in (0, 1)", lo=0.0, hi=1.0, lo_open=True, hi_open=True)


def interval(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Domain:
    """A number in the interval from `lo` to `hi` (ends excluded as asked)."""
    text = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return Domain("float", text, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def number_at_least(minimum: float) -> Domain:
    """A finite number >= `minimum`, kept int or float as given: for entries whose default is
    an int and whose random draws are floats (DomainBed's EQRM burn-in)."""
    return Domain("real", f">= {minimum:g}", lo=minimum)


def finite() -> Domain:
    """Any finite number."""
    return Domain("float", "(finite)")


def one_of(*options: str) -> Domain:
    """One of the strings `options`."""
    return Domain("str", "one of " + ", ".join(options), options=tuple(options))


def any_string() -> Domain:
    """Any string."""
    return Domain("str", "a string")


def inferred_domain(default: Any) -> Domain:
    """The loosest domain of `default`'s type, for an entry declared without one."""
    if isinstance(default, bool):
        return boolean()
    if isinstance(default, int):
        return integer(0)
    if isinstance(default, float):
        return finite()
    return any_string()


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter: name, default value, random rule, a one-line meaning and the
    domain of values that can work (inferred from the default's type when not given).

    `aliases`: older names still accepted in overrides (with a one-line notice); the random
    draw is seeded with `draw_name` (default: the first alias, else the name), so renaming an
    entry keeps its draws."""

    name: str
    default: Any
    sampler: Sampler
    help: str = ""
    domain: Domain | None = None

    @property
    def allowed(self) -> Domain:
        """The declared domain, else the one inferred from the default."""
        return self.domain if self.domain is not None else inferred_domain(self.default)

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


B = boolean()
DROP = interval(0.0, 1.0, hi_open=True)  # a dropout probability
BATCH = integer(1)
LEARNING_RATE = nonnegative()  # 0 freezes the weights (a run that keeps its initialisation)


def base_hparam_space(dataset: str) -> list[HParam]:
    """Entries every algorithm has (DomainBed's unconditional and dataset-level ones)."""
    small = dataset in SMALL_IMAGES
    space = [
        HParam("data_augmentation", True, const(True), "image augmentation on training envs", B),
        HParam("resnet18", False, const(False), "ResNet-18 instead of ResNet-50 (DomainBed)", B),
        HParam("resnet_dropout", 0.0, choice([0.0, 0.1, 0.5]), "dropout before the head", DROP),
        HParam("class_balanced", False, const(False), "class-balanced sampling", B),
        HParam("nonlinear_classifier", False, const(False), "MLP head instead of linear", B),
        HParam(
            "backbone",
            "mnist_cnn" if small else "resnet50",
            const("mnist_cnn" if small else "resnet50"),
            "featurizer: " + ", ".join(BACKBONES.names()),
            one_of(*BACKBONES.names()),
        ),
        HParam(
            "pretrained",
            not small,
            const(not small),
            "ImageNet weights for resnet18/50 and vit_s16 (false: random init)",
            B,
        ),
        HParam("freeze_bn", True, const(True), "ResNet BatchNorm kept in eval mode (DomainBed)", B),
        HParam(
            "vit_dropout", 0.0, choice([0.0, 0.1, 0.5]), "dropout on DINOv2 / CLIP features", DROP
        ),
        HParam(
            "vit_attn_tune", False, const(False), "DINOv2 / CLIP: train attention weights only", B
        ),
        HParam("amp", False, const(False), "CUDA: bfloat16 autocast, channels-last featurizer", B),
        HParam("mlp_width", 256, int_log_uniform(2, 6, 10), "MLP featurizer width", integer(1)),
        HParam("mlp_depth", 3, choice([3, 4, 5]), "MLP featurizer depth", integer(2)),
        HParam("mlp_dropout", 0.0, choice([0.0, 0.1, 0.5]), "MLP featurizer dropout", DROP),
    ]
    if small:
        space += [
            HParam("lr", 1e-3, log_uniform(-4.5, -2.5), "Adam learning rate", LEARNING_RATE),
            HParam("weight_decay", 0.0, const(0.0), "Adam weight decay", nonnegative()),
            HParam("batch_size", 64, int_log_uniform(2, 3, 9), "batch size per domain", BATCH),
        ]
    else:
        space += [
            HParam("lr", 5e-5, log_uniform(-5, -3.5), "Adam learning rate", LEARNING_RATE),
            HParam("weight_decay", 0.0, log_uniform(-6, -2), "Adam weight decay", nonnegative()),
            HParam(
                "batch_size",
                32,
                int_log_uniform(2, 3, 5) if dataset == "DomainNet" else int_log_uniform(2, 3, 5.5),
                "batch size per domain",
                BATCH,
            ),
        ]
    return space


def check_hparams(hparams: dict[str, Any], space: list[HParam]) -> dict[str, Any]:
    """`hparams` with every value checked against (and coerced to) its entry's domain;
    ConfigError (one line) for the first value outside it. Names without an entry pass."""
    domains = {h.name: h.allowed for h in space}
    return {
        name: domains[name].check(name, value) if name in domains else value
        for name, value in hparams.items()
    }


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
    default's (ints are accepted where floats are expected; numbers must be finite). Ranges
    are checked by `check_hparams`.
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
        except RecursionError:
            raise ConfigError("--hparams is nested too deeply to be hyper-parameters") from None
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
    """`value` checked against the type of `default` (numbers finite; ranges are the
    domains' business, see `check_hparams`)."""
    if isinstance(default, bool):
        return Domain("bool", "true or false").check(name, value)
    if isinstance(default, int):
        return Domain("int", "").check(name, value)
    if isinstance(default, float):
        return Domain("float", "").check(name, value)
    if isinstance(default, str):
        return Domain("str", "a string").check(name, value)
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
