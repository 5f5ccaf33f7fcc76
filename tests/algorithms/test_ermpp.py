"""ERM++: head-only warm-up, the simple moving average of the weights, LARS."""

import torch

from dgalign.algorithms.optimizers import LARS


def _flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_linear_phase_trains_the_head_only(tiny, tiny_data):
    """Mutation caught: full training from the first step, or one warm-up step too few."""
    algorithm = tiny("ERMPlusPlus", linear_steps=1, linear_lr=1e-2, lr=1e-2, sma_start=100)
    featurizer = _flat(algorithm.featurizer)
    data = tiny_data()
    for _ in range(2):  # updates 0 and 1: linear_steps + 1 of them
        logs = algorithm.update(data)
        assert logs["linear_phase"] == 1.0
        assert torch.equal(_flat(algorithm.featurizer), featurizer)
    assert algorithm.update(data)["linear_phase"] == 0.0
    assert not torch.equal(_flat(algorithm.featurizer), featurizer)


def test_sma_is_the_running_mean_of_the_snapshots(tiny, tiny_data):
    """Mutation caught: an exponential moving average, or averaging from the first update."""
    algorithm = tiny("ERMPlusPlus", linear_steps=0, lr=1e-2, sma_start=3)
    data = tiny_data()
    snapshots = []
    for _ in range(5):
        algorithm.update(data)
        snapshots.append(_flat(algorithm.network))
        if len(snapshots) < 3:
            torch.testing.assert_close(_flat(algorithm.network_sma), snapshots[-1])
    torch.testing.assert_close(_flat(algorithm.network_sma), torch.stack(snapshots[1:]).mean(0))
    x = data[0][0]
    torch.testing.assert_close(algorithm.predict(x), algorithm.network_sma(x))


def test_lars_step_follows_its_formula():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.5, -0.5], dtype=torch.float64, requires_grad=True)
    opt = LARS([w, b], lr=0.1, weight_decay=0.01, momentum=0.9, trust_coefficient=0.001)
    w.grad = torch.tensor([[0.1, -0.2], [0.3, 0.0]], dtype=torch.float64)
    b.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt.step()
    d = w.grad + 0.01 * w0
    d = d * (0.001 * w0.norm() / d.norm())
    torch.testing.assert_close(w.detach(), w0 - 0.1 * d)
    torch.testing.assert_close(b.detach(), b0 - 0.1 * b.grad)  # no trust ratio for biases
