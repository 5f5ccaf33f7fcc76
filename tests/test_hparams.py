"""The hyper-parameter registry: defaults, seeded random draws, overrides."""

import re

import numpy as np
import pytest

from dgalign.algorithms.spaces import default_hparams, hparam_space, random_hparams, resolve_hparams
from dgalign.errors import ConfigError
from dgalign.hparams import apply_overrides
from dgalign.utils.seeding import seed_hash


def test_defaults_match_domainbed_for_small_images():
    hp = default_hparams("ERM", "ColoredMNIST")
    assert hp["lr"] == 1e-3
    assert hp["batch_size"] == 64
    assert hp["weight_decay"] == 0.0
    assert hp["backbone"] == "mnist_cnn"


def test_random_draw_uses_one_rng_per_name():
    hp = random_hparams("ERM", "ColoredMNIST", seed=7)
    # Each value is drawn from RandomState(seed_hash(seed, name)), as DomainBed does.
    lr_rng = np.random.RandomState(seed_hash(7, "lr"))
    assert hp["lr"] == pytest.approx(10 ** lr_rng.uniform(-4.5, -2.5))
    bs_rng = np.random.RandomState(seed_hash(7, "batch_size"))
    assert hp["batch_size"] == int(2 ** bs_rng.uniform(3, 9))
    assert 10**-4.5 <= hp["lr"] <= 10**-2.5


def test_random_draws_are_deterministic_and_vary_with_seed():
    assert random_hparams("ERM", "RotatedMNIST", 3) == random_hparams("ERM", "RotatedMNIST", 3)
    lrs = {random_hparams("ERM", "RotatedMNIST", s)["lr"] for s in range(1, 6)}
    assert len(lrs) == 5


def test_hparams_seed_zero_means_defaults():
    assert resolve_hparams("ERM", "Spurious28", 0, 5) == default_hparams("ERM", "Spurious28")
    drawn = resolve_hparams("ERM", "Spurious28", 2, 5)
    assert drawn == random_hparams("ERM", "Spurious28", seed_hash(2, 5))


def test_large_image_datasets_use_their_own_ranges():
    assert default_hparams("ERM", "PACS")["lr"] == 5e-5
    assert default_hparams("ERM", "PACS")["batch_size"] == 32


def test_overrides_apply_and_coerce():
    hp = apply_overrides(default_hparams("ERM", "Spurious28"), '{"lr": 0.01, "batch_size": 8}')
    assert hp["lr"] == 0.01 and hp["batch_size"] == 8
    assert apply_overrides(hp, '{"lr": 1}')["lr"] == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ('{"lr": 0.1', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"learning_rate": 0.1}', "unknown hyper-parameter"),
        ('{"batch_size": 2.5}', "integer"),
        ('{"lr": "fast"}', "number"),
        ('{"nonlinear_classifier": 1}', "true or false"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        apply_overrides(default_hparams("ERM", "Spurious28"), overrides)
    assert "\n" not in str(info.value)


def test_every_entry_has_a_description_and_a_valid_default():
    for h in hparam_space("ERM", "ColoredMNIST"):
        assert h.sampler.description
        h.sampler(np.random.RandomState(0))


DATASETS = ("Spurious28", "Debug224", "ColoredMNIST", "PACS", "DomainNet")


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_hparam_of_every_algorithm_declares_a_domain_its_values_fit(dataset):
    """Each entry names its domain (positive, (0, 1), integer >= 1, ...); the default and 30
    random draws of every entry lie in it and keep their type."""
    from dgalign import algorithms

    undeclared = []
    for name in algorithms.names():
        for h in hparam_space(name, dataset):
            if h.domain is None:
                undeclared.append(f"{name}.{h.name}")
                continue
            assert h.domain.check(h.name, h.default) == h.default, (name, h.name)
            assert type(h.domain.check(h.name, h.default)) is type(h.default), (name, h.name)
            for seed in range(30):
                value = h.sampler(np.random.RandomState(seed))
                assert h.domain.check(h.name, value) == value, (name, h.name, value)
    assert not undeclared, f"declare a domain (dgalign.hparams) for: {', '.join(undeclared)}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ('{"lr": -1e-9}', "lr must be a number >= 0, got -1e-09"),
        ('{"lr": Infinity}', "lr must be a finite number, got inf"),
        ('{"weight_decay": -1e-9}', "weight_decay must be a number >= 0"),
        ('{"batch_size": 3000000000}', "batch_size must be an integer >= 1 and at most 2147483647"),
        ('{"resnet_dropout": 1}', "resnet_dropout must be a number in [0, 1), got 1.0"),
        ('{"backbone": "vgg"}', "backbone must be one of mnist_cnn, mlp, resnet18"),
        ('{"mlp_depth": 1}', "mlp_depth must be an integer >= 2, got 1"),
    ],
)
def test_resolved_hparams_outside_their_domain_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        resolve_hparams("ERM", "Debug28", 0, 0, overrides)
    assert "\n" not in str(info.value)


def test_domains_of_algorithm_entries_are_checked_too():
    with pytest.raises(ConfigError, match=r"irm_lambda must be a number >= 0, got -1\.0"):
        resolve_hparams("IRM", "ColoredMNIST", 0, 0, '{"irm_lambda": -1}')
    with pytest.raises(ConfigError, match="hessian_mode must be one of full, gram, diag"):
        resolve_hparams("CMA", "PACS", 0, 0, '{"hessian_mode": "exact"}')
    hp = resolve_hparams("Fish", "Debug28", 0, 0, '{"meta_lr": 1}')
    assert hp["meta_lr"] == 1.0 and isinstance(hp["meta_lr"], float)


def test_deeply_nested_hparams_json_is_one_line():
    with pytest.raises(ConfigError, match="nested too deeply"):
        resolve_hparams("ERM", "Debug28", 0, 0, "[" * 100_000 + "]" * 100_000)


def test_positive_domains_refuse_zero():
    with pytest.raises(ConfigError, match=r"mixup_alpha must be a number > 0, got 0\.0"):
        resolve_hparams("Mixup", "Debug28", 0, 0, '{"mixup_alpha": 0}')
    assert resolve_hparams("ERM", "Debug28", 0, 0, '{"lr": 0}')["lr"] == 0.0  # frozen weights
