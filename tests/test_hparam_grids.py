"""The SWAD grid: 18 fixed points replacing the random draw, DomainBed defaults elsewhere."""

import json

import pytest

from dgalign.algorithms.spaces import default_hparams
from dgalign.errors import ConfigError
from dgalign.hparam_grids import GRIDS, grid_point, run_hparams
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


def _run(dataset, defaults, hparams=None, **kw):
    return run_hparams(
        RunConfig(dataset=dataset, algorithm="ERM", output_dir="x", defaults=defaults,
                  hparams=hparams, **kw)
    )  # fmt: skip


def test_domainbed_main_defaults_differ_only_in_backbone_weights_and_batchnorm():
    old, new = _run("PACS", "domainbed-2020"), _run("PACS", "domainbed-main")
    assert (old["backbone"], old["freeze_bn"]) == ("resnet50", True)
    assert (new["backbone"], new["freeze_bn"]) == ("resnet50_augmix", False)
    assert {k for k in old if old[k] != new[k]} == {"backbone", "freeze_bn"}
    # as DomainBed main, where resnet50_augmix wins over resnet18; `backbone` picks another
    assert _run("PACS", "domainbed-main", '{"resnet18": true}')["backbone"] == "resnet50_augmix"
    assert _run("PACS", "domainbed-main", '{"backbone": "resnet18"}')["backbone"] == "resnet18"
    assert _run("PACS", "domainbed-main", '{"freeze_bn": true}')["freeze_bn"] is True
    small = _run("ColoredMNIST", "domainbed-main")
    assert small["backbone"] == "mnist_cnn" and small["freeze_bn"] is False
    with pytest.raises(ConfigError, match="--defaults"):
        _run("PACS", "domainbed-2021")


def test_default_profile_is_not_part_of_old_identities():
    config = RunConfig(dataset="PACS", algorithm="ERM", output_dir="x")
    assert "defaults" not in config.identity() and "defaults" not in config.as_args()
    main = RunConfig(dataset="PACS", algorithm="ERM", output_dir="x", defaults="domainbed-main")
    assert main.identity()["defaults"] == "domainbed-main"
