"""Stochastic dominance between empirical distributions, the math behind GLSD (DomainBed's
GLSD_SSD / GLSD_FSD): pure functions, no training state.

Utilities u = -loss are to be made large. For rows x_i (n, b) with per-sample weights w_ij,
on the pooled sorted values eta_1 <= ... <= eta_nb of all rows:

- soft CDF   F1_i(eta_k) = sum_j w_ij sigmoid((eta_k - x_ij) / tau)   (tau = 0.01),
- second order F2_i(eta_k) = sum_{m <= k} (eta_m - eta_{m-1}) F1_i(eta_{m-1}), F2_i(eta_1) = 0,
  the left Riemann sum of int F1_i, i.e. E_i[(eta_k - X)_+] for a step CDF.

X dominates Y at order k when Fk_X <= Fk_Y everywhere. The losses below push a distribution x
to dominate a reference y at the point where the violation delta = Fk_x - Fk_y is largest,
found by a soft argmax mu = softmax((delta - max delta) / (rel_tau (max - min))) that is held
fixed (Danskin's theorem: the gradient of max_k delta_k is that of delta at the maximiser).

An affine combination of n domains has weights lambda summing to 1, each at least
lambda_min < 0 (so at most lambda_max = 1 - (n - 1) lambda_min): a domain's samples carry
weight lambda_e / (n b) in the mixture, a signed measure of total mass (sum lambda_e) / n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CDF_TAU = 1e-2  # temperature of the sigmoid step in the soft CDFs
REL_TAU = 0.3  # soft-argmax temperature relative to the range of the violations
FSD_BETA = 20.0  # sharpness of the softplus in the first-order surrogate
FSD_MARGIN = 0.01  # margin of the first-order surrogate


def pooled(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pooled sorted values eta (nb,) of the rows of x (n, b), the row each came from (nb,
    long) and the permutation that sorts x.reshape(-1)."""
    n, b = x.shape
    eta, order = torch.sort(x.reshape(-1))
    rows = torch.arange(n, device=x.device).repeat_interleave(b)[order]
    return eta, rows, order


def soft_cdfs(
    x: Tensor, weights: Tensor | None = None, tau: float = CDF_TAU
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(eta, rows, F1, F2) of the rows of x (n, b) with per-sample weights (n, b) (default
    1/b): F1, F2 (n, nb) at the pooled sorted values eta (module docstring)."""
    b = x.shape[1]
    if weights is None:
        weights = torch.full_like(x, 1.0 / b)
    eta, rows, _ = pooled(x)
    steps = torch.sigmoid((eta[None, :, None] - x[:, None, :]) / tau)  # (n, nb, b)
    f1 = (steps * weights[:, None, :]).sum(-1)
    return eta, rows, f1, second_order(eta, f1)


def second_order(eta: Tensor, f1: Tensor) -> Tensor:
    """F2 (..., nb) from F1 (..., nb) at sorted points eta (nb,): cumulative sum of
    (eta_k - eta_{k-1}) F1(eta_{k-1}), zero at the first point."""
    increments = (eta[1:] - eta[:-1]) * f1[..., :-1]
    return torch.cat([torch.zeros_like(f1[..., :1]), increments.cumsum(-1)], dim=-1)


def soft_argmax(delta: Tensor, rel_tau: float = REL_TAU) -> Tensor:
    """Weights (detached) concentrated on the largest entries of delta: exp((delta - max) /
    t) normalised, t = rel_tau (max - min) (equal entries: uniform weights)."""
    delta = delta.detach()
    top = delta.max()
    t = ((top - delta.min()) * rel_tau).clamp_min(torch.finfo(delta.dtype).tiny)
    mu = torch.exp((delta - top) / t)
    return mu / (mu.sum() + torch.finfo(delta.dtype).eps)


def ssd_loss(x: Tensor, ref: Tensor, wx: Tensor, wref: Tensor, margin: Tensor | float) -> Tensor:
    """Second-order dominance loss of x over the reference ref (both (m,), weights (m,)):
    sum_k mu_k (F2_x(eta_k) - F2_ref(eta_k) + margin) on the 2m pooled points, mu the soft
    argmax of the violation. F2_ref is detached, and so is F2_x's dependence on its own
    evaluation points that are samples of x (Danskin: the maximising point is held fixed; its
    value is unchanged, its gradient F1_x(eta_k) d eta_k removed)."""
    eta, rows, f1, f2 = soft_cdfs(torch.stack([x, ref]), torch.stack([wx, wref]))
    from_x = (rows == 0).to(eta.dtype)
    f2x = f2[0] + from_x * f1[0] * (eta.detach() - eta)
    delta = f2x - f2[1].detach()
    mu = soft_argmax(delta)
    return (delta * mu + margin).sum()


def fsd_loss(x: Tensor, ref: Tensor, wx: Tensor, wref: Tensor) -> Tensor:
    """First-order dominance surrogate of x over ref: at the soft argmax mu of F1_x - F1_ref
    on the pooled points (held fixed), the smooth expected shortfall of x below each point,
    sum_k mu_k mean_j softplus_beta(eta_k - x_j - margin) (beta = 20, margin = 0.01); it
    pushes the samples of x above the point where x's CDF most exceeds the reference's."""
    with torch.no_grad():
        eta, _, f1, _ = soft_cdfs(torch.stack([x, ref]), torch.stack([wx, wref]))
        mu = soft_argmax(f1[0] - f1[1])
        points = eta + torch.finfo(eta.dtype).eps
    shortfall = F.softplus(points[:, None] - x[None, :] - FSD_MARGIN, beta=FSD_BETA).mean(1)
    return (shortfall * mu).sum()


def worst_domain_weights(u: Tensor, order: int, dominating: bool, tau: float = 1.0) -> Tensor:
    """pi (n,), a softmax over the domains (rows of utilities u (n, b)) of the scores
    s_i = sum_{j, k} clamp(Fk_i(eta_k) - Fk_j(eta_k)) with clamp = min(., 0) (`dominating`)
    or max(., 0); either way the mass goes to the domain whose CDF lies above the others',
    the dominated (worst) one."""
    with torch.no_grad():
        _, _, f1, f2 = soft_cdfs(u)
        fk = f1 if order == 1 else f2
        diffs = fk[:, None, :] - fk[None, :, :]
        diffs = diffs.clamp(max=0.0) if dominating else diffs.clamp(min=0.0)
        return torch.softmax(diffs.sum((1, 2)) / tau, dim=0)


def affine_upper(n: int, lambda_min: float) -> float:
    """The largest weight of an affine combination of n domains with all weights >=
    lambda_min: 1 - (n - 1) lambda_min."""
    return 1.0 - (n - 1) * lambda_min


def extreme_lambda(pi: Tensor, lambda_min: float) -> Tensor:
    """Affine weights pi lambda_max + (1 - pi) lambda_min (they sum to 1 when pi does)."""
    return pi * affine_upper(len(pi), lambda_min) + (1 - pi) * lambda_min


def affine_hull_samples(count: int, n: int, lambda_min: float, device: torch.device) -> Tensor:
    """(n, count) random affine weights: n - 1 of them U(lambda_min, lambda_max), the last
    1 - their sum, the n placed in a random order per column."""
    hi = affine_upper(n, lambda_min)
    free = lambda_min + (hi - lambda_min) * torch.rand(n - 1, count, device=device)
    weights = torch.cat([free, 1 - free.sum(0, keepdim=True)])
    order = torch.rand(n, count, device=device).argsort(dim=0)
    return weights.gather(0, order)


def mixture_cdfs(eta: Tensor, rows: Tensor, lambdas: Tensor, tau: float = CDF_TAU) -> Tensor:
    """F1 and F2 (2, K, m) of the K mixtures (lambdas (n, K)) of the pooled sorted samples
    eta (m,) from domains `rows`, each sample weighted lambda_row / m, at the points eta."""
    weights = lambdas[rows].T / len(eta)  # (K, m)
    steps = torch.sigmoid((eta[:, None] - eta[None, :]) / tau)  # (point, sample)
    f1 = weights @ steps.T
    return torch.stack([f1, second_order(eta, f1)])


def pairwise_gap(fk: Tensor) -> Tensor:
    """Mean over the nonzero entries of |Fk_a(eta) - Fk_b(eta)| for all pairs (a, b) of the K
    rows of fk (K, m) (zero when all rows are equal)."""
    gaps = (fk[:, None, :] - fk[None, :, :]).abs()
    return gaps.sum() / (gaps > 0).sum().clamp_min(1)


def utility(x: Tensor, kind: int, tau: float) -> Tensor:
    """Per-sample utilities (n, b) of values x (n, b): -1 x; 0 -(x - m_i)^2; 1 -|x - m_i|
    (smoothed, sqrt(. + 1e-6)); 2 log(1 + e^(x - tau)); 3 sigmoid(x - tau); 4 1 - e^(-tau x);
    5 (x - m_i) / (std(x) + 1e-8), with m_i the mean of row i and std over all entries."""
    centred = x - x.mean(1, keepdim=True)
    if kind == -1:
        return x
    if kind == 0:
        return -centred.square()
    if kind == 1:
        return -(centred.square() + 1e-6).sqrt()
    if kind == 2:
        return torch.log1p(torch.exp(x - tau))
    if kind == 3:
        return torch.sigmoid(x - tau)
    if kind == 4:
        return 1 - torch.exp(-x * tau)
    if kind == 5:
        return centred / (x.std() + 1e-8)
    raise ValueError(f"unknown utility type {kind}")
