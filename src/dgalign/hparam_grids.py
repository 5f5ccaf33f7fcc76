"""Fixed hyper-parameter grids that replace the random search of a sweep protocol, the
DomainBed version whose defaults a run follows, and the hyper-parameters a run uses.

Defaults (`--defaults`): `domainbed-2020` (ours by default) follows DomainBed as published with
its paper (Gulrajani & Lopez-Paz, 2020): torchvision's ResNet-50 ImageNet weights, BatchNorm
frozen. `domainbed-main` follows DomainBed's main branch after its ERM++ pull request (#152),
as read from public copies of its `hparams_registry.py` and `networks.py` (the commit could not
be pinned here): timm's AugMix ResNet-50 (`resnet50_augmix`) on image datasets and `freeze_bn`
false. Everything else is the same in both.

`swad` is the grid of Cha et al. (SWAD), which the FGMix paper's protocol follows: batch 32 per
domain, `resnet_dropout` in {0, 0.1, 0.5}, `lr` in {1e-5, 3e-5, 5e-5}, `weight_decay` in
{1e-4, 1e-6}; 18 points. A run of a grid has `hparams_grid` set and `hparams_seed` k in
1..len(grid) naming point k: its hyper-parameters are the defaults (no random draw) updated with
the point, then with `--hparams`. Distinct `hparams_seed`s keep the points apart for model
selection, ours and DomainBed's `collect_results`, which group runs by that seed.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Protocol

from dgalign.algorithms.spaces import hparam_space, override, resolve_hparams
from dgalign.errors import ConfigError
from dgalign.hparams import apply_overrides, check_hparams


class RunSettings(Protocol):
    """What `run_hparams` reads of a run's configuration (`dgalign.train.RunConfig`)."""

    algorithm: str
    dataset: str
    hparams_seed: int
    trial_seed: int
    hparams_grid: str | None
    defaults: str
    hparams: str | None


DEFAULTS = ("domainbed-2020", "domainbed-main")


def profile_changes(profile: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """What `profile` changes in DomainBed-2020 defaults `hparams` (module docstring)."""
    if profile not in DEFAULTS:
        raise ConfigError(f"--defaults must be one of {', '.join(DEFAULTS)}, got {profile!r}")
    if profile == "domainbed-2020":
        return {}
    changes: dict[str, Any] = {"freeze_bn": False}
    if hparams.get("backbone") == "resnet50" and not hparams.get("resnet18", False):
        changes["backbone"] = "resnet50_augmix"
    return changes


GRIDS: dict[str, list[dict[str, Any]]] = {
    "swad": [
        {"batch_size": 32, "lr": lr, "resnet_dropout": dropout, "weight_decay": wd}
        for lr, dropout, wd in itertools.product((1e-5, 3e-5, 5e-5), (0.0, 0.1, 0.5), (1e-4, 1e-6))
    ],
}


def grid_point(grid: str, index: int) -> dict[str, Any]:
    """Point `index` (1-based, the run's hparams seed) of grid `grid`."""
    if grid not in GRIDS:
        raise ConfigError(f"unknown hyper-parameter grid {grid!r}; valid: {', '.join(GRIDS)}")
    points = GRIDS[grid]
    if not 1 <= index <= len(points):
        raise ConfigError(
            f"grid {grid} has points 1..{len(points)} (the hparams seed); got {index}"
        )
    return dict(points[index - 1])


def run_hparams(config: RunSettings) -> dict[str, Any]:
    """The hyper-parameters of a run: DomainBed's default or random draw (for a grid run the
    default and the grid point), changed by the `--defaults` profile, then `--hparams`; every
    value checked against its domain (one ConfigError for the first outside it)."""
    if not config.hparams_grid:
        hparams = resolve_hparams(
            config.algorithm, config.dataset, config.hparams_seed, config.trial_seed
        )
    else:
        point = grid_point(config.hparams_grid, config.hparams_seed)
        hparams = apply_overrides(resolve_hparams(config.algorithm, config.dataset, 0, 0), point)
    hparams.update(profile_changes(config.defaults, hparams))
    resolved = override(config.algorithm, config.dataset, hparams, config.hparams)
    return check_hparams(resolved, hparam_space(config.algorithm, config.dataset))


def grid_overrides_json(grid: str, index: int) -> str:
    """The point as the JSON a user would pass to `--hparams` (for logs)."""
    return json.dumps(grid_point(grid, index), sort_keys=True)
