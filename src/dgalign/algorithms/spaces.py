"""An algorithm's hyper-parameter space by name: defaults, DomainBed-style random draws and the
configuration a run uses (`--hparams` overrides, old names accepted as aliases).

The space of (algorithm, dataset) is the dataset-level entries of `dgalign.hparams` plus the
algorithm's own `hparam_space(dataset)`; the algorithm's entries override shared ones of the
same name.
"""

from __future__ import annotations

from typing import Any

from dgalign.algorithms.registry import get
from dgalign.hparams import HParam, alias_map, apply_overrides, base_hparam_space, check_hparams
from dgalign.utils.seeding import seed_hash


def hparam_space(algorithm: str, dataset: str) -> list[HParam]:
    """Every hyper-parameter of `algorithm` on `dataset`."""
    algo_space = get(algorithm).hparam_space(dataset)
    names = {h.name for h in algo_space}
    return [h for h in base_hparam_space(dataset) if h.name not in names] + list(algo_space)


def default_hparams(algorithm: str, dataset: str) -> dict[str, Any]:
    """The default configuration (DomainBed's hparams seed 0)."""
    return {h.name: h.default for h in hparam_space(algorithm, dataset)}


def random_hparams(algorithm: str, dataset: str, seed: int) -> dict[str, Any]:
    """A random configuration; each value drawn from `RandomState(seed_hash(seed, name))`
    (a renamed entry keeps the draws of its old name, see `HParam.draw_name`)."""
    return {h.name: h.draw(seed) for h in hparam_space(algorithm, dataset)}


def override(algorithm: str, dataset: str, hparams: dict[str, Any], overrides) -> dict[str, Any]:
    """`apply_overrides` with `algorithm`'s old names accepted (one-line notice each)."""
    aliases = alias_map(hparam_space(algorithm, dataset))
    return apply_overrides(hparams, overrides, aliases, owner=algorithm)


def resolve_hparams(
    algorithm: str,
    dataset: str,
    hparams_seed: int = 0,
    trial_seed: int = 0,
    overrides: str | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration a run uses: defaults when `hparams_seed == 0`, else a random draw
    seeded by `seed_hash(hparams_seed, trial_seed)` (as DomainBed), then JSON overrides, each
    value checked against its entry's domain."""
    if hparams_seed == 0:
        hparams = default_hparams(algorithm, dataset)
    else:
        hparams = random_hparams(algorithm, dataset, seed_hash(hparams_seed, trial_seed))
    resolved = override(algorithm, dataset, hparams, overrides)
    return check_hparams(resolved, hparam_space(algorithm, dataset))
