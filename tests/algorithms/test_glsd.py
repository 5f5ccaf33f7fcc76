"""GLSD_SSD / GLSD_FSD (`dgalign.algorithms.dominance`, `dgalign.algorithms.glsd`): the
dominance quantities against brute-force float64 loops, the choice of the worst domain, the
Danskin surrogates' gradients, the mixtures' weights and the margin schedule. Each docstring
names a mutation the test catches (each was checked to fail under it)."""

import math

import torch

from dgalign import algorithms
from dgalign.algorithms import dominance as D
from dgalign.algorithms.spaces import default_hparams

U = torch.tensor([[0.1, -0.4, 0.7], [-1.3, -0.2, -0.9], [0.5, 1.1, -0.6]], dtype=torch.float64)
W = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [-0.2, 0.7, 0.5]], dtype=torch.float64)


def _step(z: float, tau: float = D.CDF_TAU) -> float:
    """sigmoid(z / tau) in float64."""
    return 1.0 / (1.0 + math.exp(-z / tau))


def _brute_cdfs(x, w):
    """F1, F2 at the pooled sorted points by explicit loops over the definitions."""
    points = sorted(float(v) for v in x.reshape(-1))
    n, b = x.shape
    f1 = [[0.0] * len(points) for _ in range(n)]
    f2 = [[0.0] * len(points) for _ in range(n)]
    for i in range(n):
        for k, p in enumerate(points):
            f1[i][k] = sum(float(w[i, j]) * _step(p - float(x[i, j])) for j in range(b))
        for k in range(1, len(points)):
            f2[i][k] = f2[i][k - 1] + (points[k] - points[k - 1]) * f1[i][k - 1]
    return (
        torch.tensor(points, dtype=torch.float64),
        torch.tensor(f1, dtype=torch.float64),
        torch.tensor(f2, dtype=torch.float64),
    )


def test_soft_cdfs_match_the_brute_force_definitions():
    """F1 and F2 (weighted, float64) equal the loops over their definitions, and a shift by +1
    dominates at both orders. Mutation caught: F2 by the right Riemann rule (F1(eta_k) in place
    of F1(eta_(k-1)) in `second_order`)."""
    eta, rows, f1, f2 = D.soft_cdfs(U, W)
    points, b1, b2 = _brute_cdfs(U, W)
    torch.testing.assert_close(eta, points)
    torch.testing.assert_close(f1, b1)
    torch.testing.assert_close(f2, b2)
    assert torch.equal(U.reshape(-1)[D.pooled(U)[2]], eta) and rows.tolist().count(1) == 3
    y = U[1]
    _, _, g1, g2 = D.soft_cdfs(torch.stack([y + 1.0, y]))
    assert (g1[0] <= g1[1] + 1e-12).all() and (g2[0] <= g2[1] + 1e-12).all()


def test_worst_domain_weights_pick_the_dominated_domain():
    """The soft argmax over domains puts most mass on the domain of lowest utilities (domain 1
    of U is shifted down), at both orders and both clamps. Mutation caught: the pairwise
    difference reversed (F_j - F_i), which picks the best domain."""
    u = U.clone()
    u[1] -= 3.0
    for order in (1, 2):
        for dominating in (True, False):
            pi = D.worst_domain_weights(u, order, dominating)
            assert int(pi.argmax()) == 1 and abs(float(pi.sum()) - 1) < 1e-12


def _ssd_surrogate(x, ref, wx, wref, mu):
    """sum_k mu_k (F2_x - F2_ref) with mu fixed and x's own evaluation points held fixed."""
    _, rows, f1, f2 = D.soft_cdfs(torch.stack([x, ref]), torch.stack([wx, wref]))
    eta = D.pooled(torch.stack([x, ref]))[0]
    f2x = f2[0] + (rows == 0).double() * f1[0] * (eta.detach() - eta)
    return (mu * (f2x - f2[1].detach())).sum()


def test_ssd_loss_gradient_is_the_gradient_at_the_fixed_maximiser():
    """Danskin: grad of the SSD loss equals grad of sum_k mu_k delta_k with mu computed apart
    and frozen, and the evaluation-point correction leaves its value unchanged. Mutation
    caught: mu not detached in `soft_argmax`."""
    x = U.reshape(-1).clone().requires_grad_()
    ref = torch.linspace(-1.0, 1.0, 9, dtype=torch.float64)
    wx, wref = W.reshape(-1).abs() / 9, torch.full((9,), 1 / 9, dtype=torch.float64)
    loss = D.ssd_loss(x, ref, wx, wref, margin=0.05)
    (grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        _, _, _, f2 = D.soft_cdfs(torch.stack([x, ref]), torch.stack([wx, wref]))
        mu = D.soft_argmax(f2[0] - f2[1])
        torch.testing.assert_close(loss, ((f2[0] - f2[1]) * mu + 0.05).sum())
    (expected,) = torch.autograd.grad(_ssd_surrogate(x, ref, wx, wref, mu), x)
    torch.testing.assert_close(grad, expected)
    assert int(mu.argmax()) == int((f2[0] - f2[1]).argmax())


def test_fsd_loss_is_the_shortfall_at_the_largest_cdf_violation():
    """The FSD surrogate equals a float64 brute force (soft argmax of F1_x - F1_ref, softplus
    shortfall of x below the pooled points) and raising x lowers it. Mutation caught: the
    soft argmax taken over F2 instead of F1."""
    x = (U.reshape(-1) - 1.0).requires_grad_()
    ref = torch.linspace(-1.0, 1.0, 9, dtype=torch.float64)
    wx = wref = torch.full((9,), 1 / 9, dtype=torch.float64)
    loss = D.fsd_loss(x, ref, wx, wref)
    points, b1, _ = _brute_cdfs(torch.stack([x.detach(), ref]), torch.stack([wx, wref]))
    mu = D.soft_argmax(b1[0] - b1[1])
    eps = torch.finfo(torch.float64).eps
    short = []
    for p in points.tolist():
        z = [20.0 * (p + eps - float(v) - 0.01) for v in x.detach()]
        short.append(sum(math.log1p(math.exp(zi)) / 20.0 for zi in z) / 9)
    torch.testing.assert_close(loss.detach(), (mu * torch.tensor(short, dtype=torch.float64)).sum())
    (grad,) = torch.autograd.grad(loss, x)
    assert (grad <= 0).all() and (grad < 0).any()


def test_mixture_of_one_domain_is_that_domains_cdf_over_n():
    """With lambda = e_i the mixture's F1 / F2 are domain i's own (weights 1/b) divided by n,
    and affine weights sum to 1. Mutation caught: the samples' weights taken by position in
    the sorted order instead of by their domain (`lambdas[rows]` -> `lambdas[arange % n]`)."""
    eta, rows, _ = D.pooled(U)
    mix = D.mixture_cdfs(eta, rows, torch.eye(3, dtype=torch.float64))
    for i in range(3):
        steps = torch.sigmoid((eta[:, None] - U[i][None, :]) / D.CDF_TAU).mean(1)
        torch.testing.assert_close(mix[0, i], steps / 3)
        torch.testing.assert_close(mix[1, i], D.second_order(eta, steps) / 3)
    lam = D.affine_hull_samples(5, 3, -0.5, torch.device("cpu"))
    torch.testing.assert_close(lam.sum(0), torch.ones(5))
    ext = D.extreme_lambda(torch.tensor([0.0, 1.0, 0.0]), -0.5)
    torch.testing.assert_close(ext, torch.tensor([-0.5, 2.0, -0.5]))


def test_margin_schedule_compounds_and_reaches_zero():
    """The SSD margin follows m_t = m_(t-1) (1 - min(t / T, 1)) from 0.2 and stays 0 after T
    steps; the replay buffer fills by one step's nb utilities per update. Mutation caught: the
    margin recomputed from 0.2 each step (the linear schedule 0.2 (1 - t / T))."""
    hparams = default_hparams("GLSD_SSD", "Debug28") | {
        "backbone": "mlp",
        "mlp_width": 8,
        "batch_size": 4,
        "glsd_margin_steps": 4,
    }
    torch.manual_seed(0)
    model = algorithms.get("GLSD_SSD")((3, 28, 28), 2, 2, hparams)
    batches = [(torch.randn(4, 3, 28, 28), torch.randint(0, 2, (4,))) for _ in range(2)]
    expected, seen = 0.2, []
    for t in range(6):
        expected *= 1 - min(t / 4, 1.0)
        seen.append((float(model.update(batches)["margin"]), expected))
    assert all(abs(a - b) < 1e-7 for a, b in seen) and seen[-1][0] == 0.0
    assert model.ref_size == min(7 * 8, 40)
