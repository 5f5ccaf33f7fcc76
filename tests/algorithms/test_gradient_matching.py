"""IGA, Fish and Fishr against hand computations on tiny float64 models."""

import copy

import torch
import torch.nn.functional as F
from torch import autograd
from torch.func import functional_call

from dgalign.algorithms.gradient_matching import flat_per_sample_grads as per_sample_grads
from dgalign.curvature.penalties import fishr_penalty as _fishr


def fishr_penalty(v: torch.Tensor, form: str = "mean") -> torch.Tensor:
    """Fishr's penalty of flat [E, P] variances."""
    return _fishr(v[:, None, :], form)


def _grads(network, x, y):
    params = list(network.parameters())
    return autograd.grad(F.cross_entropy(network(x), y), params)


def test_iga_penalty_is_zero_for_equal_domain_gradients(tiny, tiny_data):
    algorithm = tiny("IGA")
    x, y = tiny_data()[0]
    logs = algorithm.update([(x, y), (x.clone(), y.clone())])
    assert logs["penalty"] < 1e-20
    torch.testing.assert_close(logs["loss"], logs["nll"])


def test_iga_penalty_is_the_spread_of_domain_gradients(tiny, tiny_data):
    algorithm = tiny("IGA", penalty=10.0)
    data = tiny_data()
    reference = copy.deepcopy(algorithm.network)
    g0, g1 = (_grads(reference, x, y) for x, y in data)
    # Two domains: ||g0 - gbar||^2 + ||g1 - gbar||^2 = ||g0 - g1||^2 / 2.
    expected = sum((a - b).pow(2).sum() for a, b in zip(g0, g1, strict=True)) / 2
    logs = algorithm.update(data)
    assert expected.item() > 1e-6
    torch.testing.assert_close(float(logs["penalty"]), expected.item())
    torch.testing.assert_close(logs["loss"], logs["nll"] + 10.0 * logs["penalty"])


def _adam_direction(grads, m, v, step, b1=0.9, b2=0.999, eps=1e-8):
    """Hand-written Adam (no weight decay): new moments and the step direction."""
    m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads, strict=True)]
    v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads, strict=True)]
    direction = [
        (mi / (1 - b1**step)) / ((vi / (1 - b2**step)).sqrt() + eps)
        for mi, vi in zip(m, v, strict=True)
    ]
    return m, v, direction


def test_fish_update_is_the_first_order_formula(tiny, tiny_data):
    lr, meta_lr = 0.01, 0.1
    algorithm = tiny("Fish", lr=lr, meta_lr=meta_lr)
    data = tiny_data()
    names = [n for n, _ in algorithm.network.named_parameters()]
    theta = {n: p.detach().clone() for n, p in algorithm.network.named_parameters()}

    def grads_at(params, x, y):
        params = {n: p.clone().requires_grad_() for n, p in params.items()}
        loss = F.cross_entropy(functional_call(algorithm.network, params, (x,)), y)
        return autograd.grad(loss, [params[n] for n in names])

    # Inner loop on a copy: one Adam step per domain, in order, from a fresh Adam state.
    inner = dict(theta)
    m = [torch.zeros_like(theta[n]) for n in names]
    v = [torch.zeros_like(theta[n]) for n in names]
    for step, (x, y) in enumerate(data, start=1):
        m, v, direction = _adam_direction(grads_at(inner, x, y), m, v, step)
        inner = {n: inner[n] - lr * d for n, d in zip(names, direction, strict=True)}
    expected = {n: theta[n] + meta_lr * (inner[n] - theta[n]) for n in names}

    algorithm.update(data)
    for n, p in algorithm.network.named_parameters():
        assert not torch.allclose(p, theta[n])
        torch.testing.assert_close(p.detach(), expected[n])
    # The inner Adam state carries over to the next update (two steps taken so far).
    assert all(int(s["step"]) == 2 for s in algorithm.inner_optimizer_state["state"].values())


def test_per_sample_grads_equal_a_loop_over_samples():
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 3).double()
    z = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    batched = per_sample_grads(head, z, y)
    assert batched.shape == (6, 3 * 5 + 3)
    for i in range(6):
        loss = F.cross_entropy(head(z[i : i + 1]), y[i : i + 1])
        single = torch.cat([g.reshape(-1) for g in autograd.grad(loss, list(head.parameters()))])
        torch.testing.assert_close(batched[i], single)
    # Closed form for a linear head: (p - onehot(y)) z^T and p - onehot(y).
    residual = torch.softmax(head(z), 1) - F.one_hot(y, 3)
    closed = torch.cat([torch.einsum("nc,nd->ncd", residual, z).flatten(1), residual], 1)
    torch.testing.assert_close(batched, closed.detach())


def test_per_sample_grads_keep_the_graph_to_the_features():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 2).double()
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    per_sample_grads(head, z, torch.randint(0, 2, (5,))).pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_fishr_penalty_is_zero_for_identical_domains(tiny, tiny_data):
    algorithm = tiny("Fishr", penalty_anneal_iters=0)
    x, y = tiny_data()[0]
    for _ in range(2):
        logs = algorithm.update([(x, y), (x.clone(), y.clone())])
        assert abs(logs["penalty"]) < 1e-24


def test_fishr_penalty_ema_and_annealing(tiny, tiny_data):
    ema, weight = 0.9, 50.0
    algorithm = tiny("Fishr", ema=ema, penalty_anneal_iters=1, **{"lambda": weight})
    data = tiny_data()

    def variances():
        grads = [
            per_sample_grads(algorithm.classifier, algorithm.featurizer(x), y) for x, y in data
        ]
        return torch.stack([g.var(0, unbiased=False) for g in grads]).detach()

    v1 = variances()
    first_optimizer = algorithm.optimizer
    logs = algorithm.update(data)
    # Step 0: the EMA starts from zero and is bias-corrected by 1 / (1 - ema): v itself.
    torch.testing.assert_close(float(logs["penalty"]), fishr_penalty(v1).item())
    assert logs["penalty"] > 0
    torch.testing.assert_close(logs["loss"], logs["nll"])  # weight 0 before annealing
    torch.testing.assert_close(algorithm.variance_ema, (1 - ema) * v1)

    v2 = variances()
    logs = algorithm.update(data)
    moving = ema * (1 - ema) * v1 + (1 - ema) * v2
    torch.testing.assert_close(algorithm.variance_ema, moving)
    torch.testing.assert_close(float(logs["penalty"]), fishr_penalty(moving / (1 - ema)).item())
    torch.testing.assert_close(logs["loss"], logs["nll"] + weight * logs["penalty"])
    assert algorithm.optimizer is not first_optimizer  # Adam re-created at the switch


def test_fishr_penalty_formula():
    v = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 2.0]], dtype=torch.float64)
    # vbar = [2, 2, 1]; each domain's mean squared deviation is (1 + 0 + 1) / 3.
    torch.testing.assert_close(fishr_penalty(v).item(), 2 / 3)
    torch.testing.assert_close(fishr_penalty(v, "sum").item(), 4.0)  # the script's sums


def test_fishr_closed_form_and_nonlinear_head_agree(tiny, tiny_data):
    """The linear-head closed form of the variances equals per-sample autograd, in the
    moving-average buffer's (weight, bias) order."""
    algorithm = tiny("Fishr")
    data = tiny_data()
    z = algorithm.featurizer(torch.cat([x for x, _ in data]))
    y = torch.cat([t for _, t in data])
    _, fast = algorithm.domain_variances(z, y, [8, 8])
    grads = per_sample_grads(algorithm.classifier, z, y).split([8, 8])
    slow = torch.stack([g.var(0, unbiased=False) for g in grads])
    torch.testing.assert_close(fast, slow)
