"""The hyper-parameter registry: defaults, seeded random draws, overrides."""

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
    assert resolve_hparams("ERM", "Debug28", 0, 5) == default_hparams("ERM", "Debug28")
    drawn = resolve_hparams("ERM", "Debug28", 2, 5)
    assert drawn == random_hparams("ERM", "Debug28", seed_hash(2, 5))


def test_large_image_datasets_use_their_own_ranges():
    assert default_hparams("ERM", "PACS")["lr"] == 5e-5
    assert default_hparams("ERM", "PACS")["batch_size"] == 32


def test_overrides_apply_and_coerce():
    hp = apply_overrides(default_hparams("ERM", "Debug28"), '{"lr": 0.01, "batch_size": 8}')
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
        apply_overrides(default_hparams("ERM", "Debug28"), overrides)
    assert "\n" not in str(info.value)


def test_every_entry_has_a_description_and_a_valid_default():
    for h in hparam_space("ERM", "ColoredMNIST"):
        assert h.sampler.description
        h.sampler(np.random.RandomState(0))
