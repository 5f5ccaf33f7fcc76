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
    "ERMPlusPlus": {"linear_lr": 5e-5, "linear_steps": 500, "lars": False},
    "TRM": {"cos_lambda": 1e-4, "iters": 200, "groupdro_eta": 1e-2},
    "IB_ERM": {"ib_lambda": 1e2, "ib_penalty_anneal_iters": 500},
    "IB_IRM": {
        "irm_lambda": 1e2,
        "irm_penalty_anneal_iters": 500,
        "ib_lambda": 1e2,
        "ib_penalty_anneal_iters": 500,
    },
    "CAD": {"lmbda": 1e-1, "temperature": 0.1, "is_normalized": False, "is_flipped": True},
    "CondCAD": {"lmbda": 1e-1, "temperature": 0.1, "is_project": False},
    "Transfer": {"t_lambda": 1.0, "delta": 2.0, "d_steps_per_g": 10, "gda": False, "lr_d": 1e-3},
    "CausIRL_CORAL": {"mmd_gamma": 1.0},
    "CausIRL_MMD": {"mmd_gamma": 1.0},
    "EQRM": {"eqrm_quantile": 0.75, "eqrm_burnin_iters": 2500, "eqrm_lr": 1e-6},
    "RDM": {"rdm_lambda": 5.0, "rdm_penalty_anneal_iters": 1500, "variance_weight": 0.004},
    "ADRMX": {"disc_lambda": 0.75, "d_steps_per_g_step": 2, "mlp_depth": 9, "lr": 3e-3},
    "URM": {"urm_adv_lambda": 0.1, "urm_generator_output": "tanh", "urm_discriminator_lr": 1e-3},
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
        ("TRM", "iters", lambda r: int(10 ** r.uniform(0, 4))),
        ("CAD", "lmbda", lambda r: [1e-4, 1e-3, 1e-2, 1e-1, 1, 1e1, 1e2][r.choice(7)]),
        ("Transfer", "delta", lambda r: r.uniform(0.1, 3.0)),
        ("EQRM", "eqrm_burnin_iters", lambda r: 10 ** r.uniform(2.5, 3.5)),
        ("RDM", "rdm_penalty_anneal_iters", lambda r: int(r.uniform(800, 2700))),
        ("ADRMX", "mlp_depth", lambda r: [8, 9, 10][r.choice(3)]),
        ("URM", "urm_discriminator_hidden_layers", lambda r: [1, 2, 3][r.choice(3)]),
        ("ERMPlusPlus", "linear_lr", lambda r: 10 ** r.uniform(-5, -3.5)),
    ],
)
def test_random_draws_follow_domainbed(name, key, draw):
    for seed in (1, 2, 3):
        expected = draw(np.random.RandomState(seed_hash(seed, key)))
        assert random_hparams(name, "ColoredMNIST", seed)[key] == pytest.approx(expected)


def test_dataset_dependent_entries_of_the_newer_algorithms():
    assert default_hparams("RDM", "PACS")["batch_size"] == 88
    assert default_hparams("RDM", "DomainNet")["batch_size"] == 40
    assert default_hparams("RDM", "DomainNet")["rdm_lambda"] == 0.5
    assert default_hparams("RDM", "OfficeHome")["variance_weight"] == 0.0
    assert default_hparams("RDM", "ColoredMNIST")["batch_size"] == 64
    assert default_hparams("ADRMX", "PACS")["lr"] == 3e-5
    assert default_hparams("URM", "PACS")["urm_discriminator_lr"] == 5e-5
    for seed in (1, 2, 3):
        assert 1.0 <= random_hparams("RDM", "PACS", seed)["rdm_lambda"] <= 10.0
        assert 70 <= random_hparams("RDM", "VLCS", seed)["batch_size"] < 100


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
