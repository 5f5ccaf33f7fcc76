"""MLDG's first-order meta-gradient and ARM's context adaptation."""

import torch
import torch.nn.functional as F
from torch import autograd
from torch.func import functional_call

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams


def test_mldg_meta_gradient_matches_the_formula(tiny, tiny_data):
    lr, beta = 0.05, 0.7
    algorithm = tiny("MLDG", lr=lr, mldg_beta=beta)
    (xi, yi), (xj, yj) = tiny_data()
    names = [n for n, _ in algorithm.network.named_parameters()]
    theta = {
        n: p.detach().clone().requires_grad_() for n, p in algorithm.network.named_parameters()
    }

    def loss(params, x, y):
        return F.cross_entropy(functional_call(algorithm.network, params, (x,)), y)

    g_i = autograd.grad(loss(theta, xi, yi), [theta[n] for n in names])
    # One fresh Adam step: the first step moves by lr * g / (|g| + eps).
    theta_i = {
        n: (theta[n] - lr * g / (g.abs() + 1e-8)).detach().requires_grad_()
        for n, g in zip(names, g_i, strict=True)
    }
    g_j = autograd.grad(loss(theta_i, xj, yj), [theta_i[n] for n in names])
    expected = [(a + beta * b) / 2 for a, b in zip(g_i, g_j, strict=True)]

    grads, stats = algorithm.meta_gradient([((xi, yi), (xj, yj))], num_domains=2)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
    li, lj = loss(theta, xi, yi).item(), loss(theta_i, xj, yj).item()
    torch.testing.assert_close(float(stats["loss"]), (li + beta * lj) / 2)


def test_mldg_keeps_one_meta_train_domain(tiny, tiny_data):
    # DomainBed's default n_meta_test = 2 with 2 domains would leave no meta-train domain.
    algorithm = tiny("MLDG", n_meta_test=2)
    assert len(algorithm.meta_pairs(tiny_data())) == 1
    three = tiny_data(num_domains=3)
    assert len(algorithm.meta_pairs(three)) == 1
    algorithm.hparams["n_meta_test"] = 1
    pairs = algorithm.meta_pairs(three)
    assert len(pairs) == 2
    assert torch.equal(pairs[0][1][0], pairs[1][1][0])  # one meta-test domain, two meta-train


def test_mldg_update_steps_with_the_meta_gradient(tiny, tiny_data):
    algorithm = tiny("MLDG", lr=0.05)
    data = tiny_data()
    torch.manual_seed(3)
    expected, _ = algorithm.meta_gradient(algorithm.meta_pairs(data), 2)
    torch.manual_seed(3)
    algorithm.update(data)
    for p, g in zip(algorithm.network.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def _arm(**overrides):
    hparams = default_hparams("ARM", "Spurious28")
    hparams.update(backbone="mlp", mlp_width=16, batch_size=4, **overrides)
    torch.manual_seed(0)
    return algorithms.get("ARM")((2, 6, 6), 3, 2, hparams)


def test_arm_context_changes_predictions():
    arm = _arm().eval()
    x = torch.randn(8, 2, 6, 6)
    other = torch.cat([x[:1], torch.randn(3, 2, 6, 6) * 3 + 1])
    with torch.no_grad():
        alone = arm.adapt(x[:4], [4])[0]
        same = arm.adapt(x[:4].clone(), [4])[0]
        changed = arm.adapt(other, [4])[0]
    torch.testing.assert_close(alone, same)
    assert not torch.allclose(alone, changed, atol=1e-4)  # same input, other support set
    # predict() uses consecutive chunks of batch_size (4) as support sets.
    with torch.no_grad():
        torch.testing.assert_close(
            arm.predict(x), torch.cat([arm.predict(x[:4]), arm.predict(x[4:])])
        )
        torch.testing.assert_close(arm.predict(x[:3]), arm.adapt(x[:3], [3]))


def test_arm_trains_the_context_network():
    arm = _arm(lr=0.01)
    before = [p.detach().clone() for p in arm.context_net.parameters()]
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 2, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g))] * 2
    arm.update(batches)
    changed = [
        not torch.equal(b, p) for b, p in zip(before, arm.context_net.parameters(), strict=True)
    ]
    assert all(changed)
    assert arm.input_shape == (2, 6, 6)
