"""The baseline zoo's hyper-parameters: DomainBed's defaults and random ranges."""

import numpy as np
import pytest

from dgalign.algorithms.spaces import default_hparams, random_hparams
from dgalign.utils.seeding import seed_hash

# DomainBed's hparams_registry defaults (each algorithm's own entries).
DEFAULTS = {
    "IRM": {"irm_lambda": 1e2, "irm_penalty_anneal_iters": 500},
    "VREx": {"vrex_lambda": 1e1, "vrex_penalty_anneal_iters": 500},
    "GroupDRO": {"groupdro_eta": 1e-2},
    "IGA": {"penalty": 1000},
    "Fish": {"meta_lr": 0.5},
    "Fishr": {"lambda": 1000.0, "penalty_anneal_iters": 1500, "ema": 0.95},
    "ANDMask": {"tau": 1},
    "SANDMask": {"tau": 1.0, "k": 10.0},
    "MLDG": {"mldg_beta": 1.0, "n_meta_test": 2},
    "CORAL": {"mmd_gamma": 1.0},
    "MMD": {"mmd_gamma": 1.0},
    "DANN": {
        "lambda": 1.0,
        "weight_decay_d": 0.0,
        "d_steps_per_g_step": 1,
        "grad_penalty": 0.0,
        "beta1": 0.5,
        "lr_g": 1e-3,
        "lr_d": 1e-3,
        "weight_decay_g": 0.0,
    },
    "MTL": {"mtl_ema": 0.99},
    "SagNet": {"sag_w_adv": 0.1},
    "RSC": {"rsc_f_drop_factor": 1 / 3, "rsc_b_drop_factor": 1 / 3},
    "SD": {"sd_reg": 0.1},
    "Mixup": {"mixup_alpha": 0.2},
    "MixStyle": {"mixstyle_p": 0.5, "mixstyle_alpha": 0.1},
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_match_domainbed(name):
    hparams = default_hparams(name, "ColoredMNIST")
    for key, value in DEFAULTS[name].items():
        assert hparams[key] == value, key


@pytest.mark.parametrize(
    ("name", "key", "draw"),
    [
        ("IRM", "irm_lambda", lambda r: 10 ** r.uniform(-1, 5)),
        ("IRM", "irm_penalty_anneal_iters", lambda r: int(10 ** r.uniform(0, 4))),
        ("Fishr", "penalty_anneal_iters", lambda r: int(r.uniform(0.0, 5000.0))),
        ("Fishr", "ema", lambda r: r.uniform(0.90, 0.99)),
        ("SANDMask", "k", lambda r: 10 ** r.uniform(-3, 5)),
        ("DANN", "d_steps_per_g_step", lambda r: int(2 ** r.uniform(0, 3))),
        ("DANN", "beta1", lambda r: [0.0, 0.5][r.choice(2)]),
        ("MTL", "mtl_ema", lambda r: [0.5, 0.9, 0.99, 1.0][r.choice(4)]),
        ("MLDG", "n_meta_test", lambda r: [1, 2][r.choice(2)]),
        ("RSC", "rsc_f_drop_factor", lambda r: r.uniform(0, 0.5)),
    ],
)
def test_random_draws_follow_domainbed(name, key, draw):
    for seed in (1, 2, 3):
        expected = draw(np.random.RandomState(seed_hash(seed, key)))
        assert random_hparams(name, "ColoredMNIST", seed)[key] == pytest.approx(expected)


def test_dataset_dependent_entries():
    assert default_hparams("ARM", "PACS")["batch_size"] == 8
    assert random_hparams("ARM", "PACS", 5)["batch_size"] == 8
    assert default_hparams("ARM", "ColoredMNIST")["batch_size"] == 64
    pacs = default_hparams("CDANN", "PACS")
    assert pacs["lr_g"] == pacs["lr_d"] == 5e-5
    for seed in (1, 2, 3):
        drawn = random_hparams("DANN", "PACS", seed)
        assert 10**-5 <= drawn["lr_g"] <= 10**-3.5 and 10**-5 <= drawn["lr_d"] <= 10**-3.5
        assert 10**-6 <= drawn["weight_decay_g"] <= 10**-2
        assert random_hparams("DANN", "ColoredMNIST", seed)["weight_decay_g"] == 0.0
