"""MetaMixup: lambda moves against the second-order meta-gradient of the held-out domain's loss."""

import torch
import torch.nn.functional as F
from torch.func import functional_call

from dgalign.algorithms._common import random_pairs
from dgalign.algorithms.meta_mixup import mixup_loss


def _meta_loss(algorithm, data, omega, seed):
    """The meta-test loss at theta' as a function of omega, with the same random draws."""
    torch.manual_seed(seed)
    test = int(torch.randint(len(data), ()))
    rest = [mb for i, mb in enumerate(data) if i != test]
    pairs = random_pairs(rest)
    net = algorithm.network
    params = dict(net.named_parameters())
    inner = mixup_loss(net, pairs, 0.5 * (1 + torch.sigmoid(omega)))
    grads = torch.autograd.grad(inner, list(params.values()))
    lr = algorithm.hparams["metamixup_inner_lr"]
    virtual = {n: p - lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
    x, y = data[test]
    return F.cross_entropy(functional_call(net, virtual, (x,)), y).item()


def test_lambda_follows_the_meta_gradient(tiny, tiny_data):
    """Mutation caught: a first-order step (lambda detached in the inner loss) leaves omega
    without gradient; a sign error moves it uphill."""
    data = tiny_data(num_domains=3)
    algorithm = tiny("MetaMixup", num_domains=3, metamixup_inner_lr=1.0, metamixup_lambda_lr=1e-3)
    omega = algorithm.omega.detach().clone()
    h = 1e-5
    slope = (
        _meta_loss(algorithm, data, omega + h, 7) - _meta_loss(algorithm, data, omega - h, 7)
    ) / (2 * h)
    assert abs(slope) > 1e-6
    torch.manual_seed(7)
    algorithm.meta_step(data)
    step = (algorithm.omega.detach() - omega).item()
    assert step * slope < 0 and abs(step) <= 1.01e-3


def test_update_logs_lambda_and_trains_with_it(tiny, tiny_data):
    algorithm = tiny("MetaMixup", num_domains=2, metamixup_init=0.7)
    logs = algorithm.update(tiny_data())
    assert abs(logs["lambda"] - 0.7) < 0.05 and "meta_loss" in logs
