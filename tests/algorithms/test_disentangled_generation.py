"""DDG: generator pre-training first, then primal-dual ERM under the invariance constraint."""

import torch


def test_stage_one_is_erm_next_to_generator_pretraining(tiny, tiny_data):
    data = tiny_data()
    algorithm = tiny("DDG", ddg_pretrain_steps=2)
    for _ in range(2):
        logs = algorithm.update(data)
        assert logs["stage"] == 1.0 and logs["loss"] == logs["nll"] and logs["dual"] == 0.0
    assert algorithm.update(data)["stage"] == 2.0


def test_dual_ascent_on_the_constraint_violation(tiny, tiny_data):
    """mu <- max(0, mu + eta (L_inv - gamma)); the primal loss is CE + mu L_inv. Mutation
    caught: the dual moving against the violation."""
    data = tiny_data()
    algorithm = tiny("DDG", ddg_pretrain_steps=0, ddg_gamma=0.0, ddg_dual_lr=0.5)
    algorithm.dual.fill_(0.25)
    logs = algorithm.update(data)
    torch.testing.assert_close(logs["loss"], logs["nll"] + 0.25 * logs["invariance"])
    torch.testing.assert_close(logs["dual"], 0.25 + 0.5 * logs["invariance"])
    satisfied = tiny("DDG", ddg_pretrain_steps=0, ddg_gamma=10.0, ddg_dual_lr=0.5)
    satisfied.dual.fill_(0.25)
    assert satisfied.update(data)["dual"] == 0.0  # far inside the margin: the dual drops to 0


def test_generator_learns_to_reconstruct(tiny, tiny_data):
    data = tiny_data(n=16)
    algorithm = tiny("DDG", ddg_lr_g=1e-2)
    x = torch.cat([x for x, _ in data])
    first = algorithm.generator_step(x)["recon"]
    for _ in range(40):
        last = algorithm.generator_step(x)["recon"]
    assert last < 0.7 * first
