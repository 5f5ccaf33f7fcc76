"""IRM, V-REx and GroupDRO: their penalties and weights against hand computations (float64)."""

import copy

import torch
import torch.nn.functional as F

from dgalign.curvature.risk import irm_penalty as _irm


def irm_penalty(logits, y):
    """IRM's DomainBed form on one domain."""
    return _irm(logits, y, [len(y)])


def _scale_gradient(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/ds CE(s z, y) at s = 1, by hand: mean_i (p_i . z_i - z_{i, y_i})."""
    p = torch.softmax(z, dim=1)
    return ((p * z).sum(1) - z.gather(1, y[:, None]).squeeze(1)).mean()


def _logits(n=10, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) + 2.0 * F.one_hot(y, c)
    y[:2] = (y[:2] + 1) % c  # a few mistakes, so the optimal scale is finite
    y[6:8] = (y[6:8] + 1) % c
    return z, y


def test_irm_penalty_matches_hand_computation():
    z, y = _logits()
    expected = _scale_gradient(z[::2], y[::2]) * _scale_gradient(z[1::2], y[1::2])
    assert abs(expected.item()) > 1e-3
    torch.testing.assert_close(irm_penalty(z, y), expected, rtol=1e-12, atol=1e-14)


def _optimal_scale(z: torch.Tensor, y: torch.Tensor) -> float:
    """argmin_t CE(t z, y), by bisection on d/dt CE(t z, y) = mean(softmax(t z) . z - z_y),
    which increases with t (the loss is convex in t)."""

    def derivative(t: float) -> float:
        p = torch.softmax(t * z, dim=1)
        return ((p * z).sum(1) - z.gather(1, y[:, None]).squeeze(1)).mean().item()

    lo, hi = -50.0, 50.0
    assert derivative(lo) < 0 < derivative(hi)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if derivative(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def test_irm_penalty_vanishes_at_the_optimal_scale():
    z, y = _logits()
    logits = z.clone()
    # Each half scaled to its own optimum: the dummy-scale gradient is zero at s = 1.
    logits[::2] = _optimal_scale(z[::2], y[::2]) * z[::2]
    logits[1::2] = _optimal_scale(z[1::2], y[1::2]) * z[1::2]
    assert abs(irm_penalty(z, y).item()) > 1e-3
    assert abs(irm_penalty(logits, y).item()) < 1e-12


def test_irm_update_weights_and_anneals(tiny, tiny_data):
    algorithm = tiny("IRM", irm_lambda=100.0, irm_penalty_anneal_iters=1)
    data = tiny_data()
    reference = copy.deepcopy(algorithm.network)
    logits = [reference(x) for x, _ in data]
    nll = sum(F.cross_entropy(lg, y) for lg, (_, y) in zip(logits, data, strict=True)) / 2
    penalty = sum(irm_penalty(lg, y) for lg, (_, y) in zip(logits, data, strict=True)) / 2
    first_optimizer = algorithm.optimizer
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["nll"]), nll.item())
    torch.testing.assert_close(float(logs["penalty"]), penalty.item())
    # weight 1 before annealing
    torch.testing.assert_close(float(logs["loss"]), (nll + penalty).item())
    assert algorithm.optimizer is first_optimizer
    logs = algorithm.update(data)
    assert algorithm.optimizer is not first_optimizer  # Adam re-created at the switch
    torch.testing.assert_close(logs["loss"], logs["nll"] + 100.0 * logs["penalty"])
    assert int(algorithm.update_count) == 2


def test_script_forms_of_irm_and_vrex(tiny, tiny_data):
    """penalty_form squared: (1/E) sum_e g_e^2; squared_difference: (R_0 - R_1)^2."""
    data = tiny_data()
    algorithm = tiny("IRM", irm_penalty_anneal_iters=0, irm_lambda=3.0, penalty_form="squared")
    logits = [copy.deepcopy(algorithm.network)(x) for x, _ in data]
    grads = [_irm(lg, y, [len(y)], "squared") for lg, (_, y) in zip(logits, data, strict=True)]
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["penalty"]), (sum(grads) / 2).item())
    algorithm = tiny("VREx", vrex_penalty_anneal_iters=0, penalty_form="squared_difference")
    risks = [F.cross_entropy(algorithm.predict(x), y) for x, y in data]
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["penalty"]), (risks[0] - risks[1]).square().item())


def test_bad_penalty_forms_are_config_errors(tiny):
    from dgalign.errors import ConfigError

    for name in ("IRM", "VREx", "Fishr"):
        try:
            tiny(name, penalty_form="cubed")
        except ConfigError as exc:
            assert "penalty_form" in str(exc)
        else:
            raise AssertionError(name)


def test_vrex_penalty_is_the_variance_of_domain_risks(tiny, tiny_data):
    data = tiny_data(num_domains=3)
    algorithm = tiny("VREx", num_domains=3, vrex_penalty_anneal_iters=0, vrex_lambda=7.0)
    risks = torch.stack([F.cross_entropy(algorithm.predict(x), y) for x, y in data]).detach()
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["penalty"]), risks.var(unbiased=False).item())
    torch.testing.assert_close(float(logs["nll"]), risks.mean().item())
    torch.testing.assert_close(float(logs["loss"]), (risks.mean() + 7.0 * risks.var(False)).item())


def test_groupdro_weights_stay_a_distribution_and_favour_the_worst_domain(tiny, tiny_data):
    algorithm = tiny("GroupDRO", num_domains=3, groupdro_eta=0.5)
    data = tiny_data(num_domains=3)
    x, y = data[1]
    data[1] = (x * 5.0, (y + 1) % 3)  # a harder domain
    risks = torch.stack([F.cross_entropy(algorithm.predict(x), y) for x, y in data]).detach()
    worst = int(risks.argmax())
    logs = algorithm.update(data)
    expected_q = torch.softmax(0.5 * risks, 0)  # q starts uniform: q ∝ exp(eta * risk)
    torch.testing.assert_close(algorithm.q, expected_q)
    torch.testing.assert_close(float(logs["loss"]), (expected_q * risks).sum().item())
    assert algorithm.q[worst] > 1 / 3
    for _ in range(5):
        before = algorithm.q[worst].item()
        algorithm.update(data)
        assert torch.all(algorithm.q > 0)
        torch.testing.assert_close(algorithm.q.sum().item(), 1.0)
        assert algorithm.q[worst].item() > before
