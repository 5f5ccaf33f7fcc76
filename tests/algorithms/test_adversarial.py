"""DANN / CDANN: the discriminator schedule and the reversed gradient reaching the featurizer."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import autograd


def _domains(data):
    return torch.cat([torch.full((len(y),), i) for i, (_, y) in enumerate(data)])


@pytest.mark.parametrize("name", ["DANN", "CDANN"])
def test_generator_step_reverses_the_discriminator_gradient(name, tiny, tiny_data):
    algorithm = tiny(name, d_steps_per_g_step=1, grad_penalty=0.5, **{"lambda": 2.0})
    with torch.no_grad():  # a zero head: the classification loss sends no gradient to f
        for p in algorithm.classifier.parameters():
            p.zero_()
    data = tiny_data()
    x = torch.cat([x for x, _ in data])
    y = torch.cat([y for _, y in data])
    reference = copy.deepcopy(algorithm)
    disc_loss, _ = reference.discriminator_loss(reference.featurizer(x), y, _domains(data))
    params = list(reference.featurizer.parameters())
    disc_grads = autograd.grad(disc_loss, params)

    logs = algorithm.update(data)  # update 1 with one D step per G step: a generator step
    assert "gen_loss" in logs
    for p, g in zip(algorithm.featurizer.parameters(), disc_grads, strict=True):
        assert g.abs().sum() > 0
        torch.testing.assert_close(p.grad, -2.0 * g)  # reversed and scaled by lambda
    torch.testing.assert_close(float(logs["disc_loss"]), disc_loss.item())


def test_discriminator_step_does_not_move_the_featurizer(tiny, tiny_data):
    algorithm = tiny("DANN", d_steps_per_g_step=2, grad_penalty=0.0)
    data = tiny_data()
    x = torch.cat([x for x, _ in data])
    features_before = [p.detach().clone() for p in algorithm.featurizer.parameters()]
    disc_before = [p.detach().clone() for p in algorithm.discriminator.parameters()]
    reference = copy.deepcopy(algorithm)
    z = reference.featurizer(x).detach()
    expected = F.cross_entropy(reference.discriminator(z), _domains(data))
    grads = autograd.grad(expected, list(reference.discriminator.parameters()))

    logs = algorithm.update(data)  # update 1 with two D steps per G step: a D step
    assert "gen_loss" not in logs
    torch.testing.assert_close(float(logs["disc_loss"]), expected.item())
    for p, g in zip(algorithm.discriminator.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g)  # the discriminator descends its own loss
    for before, p in zip(disc_before, algorithm.discriminator.parameters(), strict=True):
        assert not torch.equal(before, p)
    for before, p in zip(features_before, algorithm.featurizer.parameters(), strict=True):
        assert torch.equal(before, p)


def test_schedule_alternates_d_and_g_steps(tiny, tiny_data):
    algorithm = tiny("DANN", d_steps_per_g_step=3)
    kinds = ["G" if "gen_loss" in algorithm.update(tiny_data()) else "D" for _ in range(8)]
    # Step t (from 1) is a D step when t mod 4 < 3: as DomainBed, the first cycle is short.
    assert kinds == ["D", "D", "G", "D", "D", "D", "G", "D"]
    assert int(algorithm.update_count) == 8


def test_cdann_domain_loss_is_class_balanced_and_conditional(tiny, tiny_data):
    algorithm = tiny("CDANN", grad_penalty=0.0)
    data = tiny_data()
    x = torch.cat([x for x, _ in data])
    y = torch.cat([y for _, y in data])
    y[:10] = 0  # unbalanced classes
    z = algorithm.featurizer(x)
    loss, _ = algorithm.discriminator_loss(z, y, _domains(data))
    per_sample = F.cross_entropy(
        algorithm.discriminator(z + algorithm.class_embeddings(y)), _domains(data), reduction="none"
    )
    counts = torch.bincount(y).double()
    classes = (counts > 0).sum()
    weights = 1.0 / (counts[y] * classes)
    torch.testing.assert_close(weights.sum().item(), 1.0)
    torch.testing.assert_close(loss, (weights * per_sample).sum())
    assert not torch.allclose(loss, F.cross_entropy(algorithm.discriminator(z), _domains(data)))
