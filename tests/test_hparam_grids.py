"""The SWAD grid: 18 fixed points replacing the random draw, DomainBed defaults elsewhere."""

import json

import pytest

from dgalign.errors import ConfigError
from dgalign.hparam_grids import GRIDS, grid_point, run_hparams
from dgalign.hparams import default_hparams
from dgalign.train import RunConfig


def test_swad_grid_is_cha_et_als():
    points = GRIDS["swad"]
    assert len(points) == 18
    assert {p["lr"] for p in points} == {1e-5, 3e-5, 5e-5}
    assert {p["resnet_dropout"] for p in points} == {0.0, 0.1, 0.5}
    assert {p["weight_decay"] for p in points} == {1e-4, 1e-6}
    assert {p["batch_size"] for p in points} == {32}
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 18


def test_a_grid_run_uses_defaults_plus_its_point_plus_overrides():
    config = RunConfig(
        dataset="PACS",
        algorithm="Mixup",
        output_dir="x",
        hparams_seed=5,
        trial_seed=2,
        hparams_grid="swad",
        hparams='{"mixup_alpha": 0.4}',
    )
    hparams = run_hparams(config)
    expected = {**default_hparams("Mixup", "PACS"), **grid_point("swad", 5), "mixup_alpha": 0.4}
    assert hparams == expected


def test_grid_points_are_checked():
    with pytest.raises(ConfigError, match=r"points 1\.\.18"):
        grid_point("swad", 0)
    with pytest.raises(ConfigError, match="unknown hyper-parameter grid"):
        grid_point("nope", 1)
