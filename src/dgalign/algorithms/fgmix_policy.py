"""The pieces of FGMix's weight-generation policy as small pure functions and modules.

Notation: K source domains, M mixes per step, a mix m takes one example of class y_m from each
domain k that has one (mask[m, k]); z_mk its latent code, g_mk its per-example gradient w.r.t.
the classifier, P the size of the inputs of the score network.

    score      s_mk  = sum_{j != k, mask[m, j]} f([x_mk, x_mj])        (x = g, or z for variant F)
    softmax    l_mk  = exp(s_mk) / sum_{j: mask[m, j]} exp(s_mj)
    scale/shift l'_mk = tau l_mk - (tau - 1) / K_m,  K_m = sum_k mask[m, k]
    mixed code z~_m  = sum_k l'_mk z_mk

sum_k l'_mk = tau - (tau - 1) = 1 for any tau; tau = 1 leaves the softmax (an interpolation,
all l' >= 0); tau > 1 moves the weights away from uniform, and a weight becomes negative
(extrapolation) when l_mk < (tau - 1) / (tau K_m).

    flatness   F(theta) = mean_u [L(theta + rho u) - L(theta)],  u uniform on the unit sphere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HIDDEN = 64


@dataclass
class MixPlan:
    """Which examples a step mixes: `index[m, k]` (position in domain k's minibatch, 0 where
    absent), `mask[m, k]` (domain k takes part in mix m) and the class `y[m]` of each mix."""

    index: Tensor
    mask: Tensor
    y: Tensor


def plan_mixes(
    labels: list[Tensor], n_mix: int, missing: str = "available", num_classes: int | None = None
) -> MixPlan | None:
    """Class-aware choice of `n_mix` same-class tuples, one example per domain, from the
    domains' minibatch labels.

    A mix draws an anchor uniformly among the pooled examples of an eligible class (so classes
    come in proportion to the batch), then one example of that class uniformly from each
    domain's minibatch that holds one. `missing` says what happens to a class a domain's batch
    lacks: "available" mixes the domains that have it (at least two), "skip" only mixes classes
    present in every domain. None when there is one domain or no example. Every draw happens
    on the labels' device and nothing is read back to the host (give `num_classes`; without
    it the largest label is read): when no class is eligible the anchors are drawn among all
    examples, and a mix then holds the one domain that has its class (a copy of an example)."""
    k = len(labels)
    if k < 2 or n_mix < 1:
        return None
    if missing not in ("available", "skip"):
        raise ValueError(f"missing must be 'available' or 'skip', got {missing!r}")
    if all(len(y) == 0 for y in labels):
        return None
    if num_classes is None:
        num_classes = int(max(int(y.max()) for y in labels if len(y))) + 1
    pooled = torch.cat(labels)
    present = torch.zeros(k, num_classes, dtype=torch.bool, device=pooled.device)
    for row, y in zip(present, labels, strict=True):
        row.index_fill_(0, y, True)
    eligible = present.sum(0) >= (k if missing == "skip" else 2)
    allowed = eligible[pooled]
    allowed = allowed | ~allowed.any()  # no eligible class: any anchor
    anchor = torch.rand(n_mix, len(pooled), device=pooled.device).masked_fill(~allowed, -1.0)
    y = pooled[anchor.argmax(1)]
    index, mask = [], []
    for labels_k in labels:
        match = labels_k[None, :] == y[:, None]  # [M, n_k]
        draw = torch.rand(match.shape, device=match.device).masked_fill(~match, -1.0)
        index.append(draw.argmax(1))
        mask.append(match.any(1))
    return MixPlan(torch.stack(index, 1), torch.stack(mask, 1), y)


def gather(per_domain: list[Tensor], plan: MixPlan) -> Tensor:
    """Rows of each domain's tensor picked by the plan: [M, K, *feature shape] (keeps graph)."""
    return torch.stack([t[plan.index[:, k]] for k, t in enumerate(per_domain)], 1)


def scale_shift(lam: Tensor, tau: Tensor | float, mask: Tensor) -> Tensor:
    """l' = tau l - (tau - 1) / K_m on the domains of each mix, 0 elsewhere; rows sum to 1
    whenever the rows of `lam` do."""
    k_m = mask.sum(1, keepdim=True).to(lam.dtype)
    return torch.where(mask, tau * lam - (tau - 1) / k_m, torch.zeros_like(lam))


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """softmax over the domains of each mix; absent domains get weight 0."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1).masked_fill(~mask, 0.0)


def pair_mask(mask: Tensor) -> Tensor:
    """[M, K, K]: both domains take part and j != k."""
    k = mask.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=mask.device)
    return mask[:, :, None] & mask[:, None, :] & ~eye


def cosine_scores(x: Tensor, mask: Tensor) -> Tensor:
    """s_mk = sum_{j != k} cos(x_mk, x_mj) (variants B and C), x: [M, K, P]."""
    unit = F.normalize(x.flatten(2), dim=2)
    cos = unit @ unit.transpose(1, 2)
    return (cos * pair_mask(mask)).sum(2)


def dirichlet_weights(mask: Tensor, alpha: float) -> Tensor:
    """Random interpolation weights ~ Dirichlet(alpha, ..., alpha) over each mix's domains
    (variant A), drawn from the torch generator as normalised Gamma(alpha, 1) variables."""
    conc = torch.full(mask.shape, float(alpha), dtype=torch.float64)
    gam = torch.distributions.Gamma(conc, torch.ones_like(conc)).sample()
    gam = gam.masked_fill(~mask.cpu(), 0.0)
    return (gam / gam.sum(1, keepdim=True)).to(mask.device)


def mlp(n_in: int, hidden: int = HIDDEN) -> nn.Sequential:
    """n_in -> hidden -> ReLU -> hidden -> ReLU -> 1 (our reading of the paper's "2-layer MLP
    with hidden sizes 64 for both layers": two hidden layers of 64, then a scalar output)."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
    )


class CompatibilityScore(nn.Module):
    """The asymmetric pair score f([x_k, x_j]) and the learnable scale tau.

    The first layer acts on the ordered concatenation [x_k, x_j]; it is split into the halves
    acting on x_k and on x_j (W [x_k, x_j] = W_a x_k + W_b x_j), so all K^2 pairs of a mix
    cost two matrix products instead of K^2 concatenations."""

    def __init__(self, n_in: int, tau_init: float, normalize: bool, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.first = nn.Linear(2 * n_in, hidden)
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        self.normalize = normalize
        self.n_in = n_in

    def pair_scores(self, x: Tensor) -> Tensor:
        """f([x_mk, x_mj]) for every ordered pair: [M, K, K]."""
        x = x.flatten(2)
        if self.normalize:
            x = F.normalize(x, dim=2)
        w_a, w_b = self.first.weight[:, : self.n_in], self.first.weight[:, self.n_in :]
        hidden = (x @ w_a.T)[:, :, None, :] + (x @ w_b.T)[:, None, :, :] + self.first.bias
        return self.rest(hidden).squeeze(-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Scores s_mk = sum_{j != k} f([x_mk, x_mj]) over the domains present: [M, K]."""
        return (self.pair_scores(x) * pair_mask(mask)).sum(2)


class Discriminator(nn.Module):
    """D(z): the logit that a latent code was drawn from the prior N(mu, diag sigma^2)."""

    def __init__(self, n_in: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.net = mlp(n_in, hidden)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


def random_unit_directions(params: dict[str, Tensor], n_directions: int) -> dict[str, Tensor]:
    """`n_directions` directions, Gaussian then normalised to unit norm over all of `params`
    jointly (uniform on the unit sphere of the flattened parameter vector)."""
    dirs = {
        k: torch.randn(n_directions, *p.shape, dtype=p.dtype, device=p.device)
        for k, p in params.items()
    }
    norm = torch.sqrt(sum(d.flatten(1).pow(2).sum(1) for d in dirs.values()))
    return {k: d / norm.view(-1, *([1] * (d.dim() - 1))) for k, d in dirs.items()}


def flatness_gap(
    loss_fn: Callable[[dict[str, Tensor]], Tensor],
    params: dict[str, Tensor],
    rho: float,
    n_directions: int,
) -> Tensor:
    """Monte-Carlo flatness, mean_u [L(theta + rho u) - L(theta)] over `n_directions` random
    unit directions u (the paper's flatness-aware loss, eq. 6). `loss_fn(params)` must be a
    scalar function of a parameter dict; it is evaluated for all directions at once through
    torch.func.vmap. Zero for a constant loss; rho^2 for L = ||theta||^2 at theta = 0."""
    dirs = random_unit_directions(params, n_directions)

    def perturbed(d: dict[str, Tensor]) -> Tensor:
        return loss_fn({k: p + rho * d[k] for k, p in params.items()})

    return torch.func.vmap(perturbed)(dirs).mean() - loss_fn(params)


def discriminator_loss(d_prior: Tensor, d_mixed: Tensor) -> Tensor:
    """BCE(D(prior), 1) + BCE(D(mixed), 0) from the discriminator's logits: the discriminator
    learns to tell prior samples ("real") from mixed codes ("fake")."""
    return F.binary_cross_entropy_with_logits(
        d_prior, torch.ones_like(d_prior)
    ) + F.binary_cross_entropy_with_logits(d_mixed, torch.zeros_like(d_mixed))


def fooling_loss(d_mixed: Tensor, form: str = "nonsaturating") -> Tensor:
    """The policy's adversarial loss: -log D(mixed) ("nonsaturating", the usual GAN practice)
    or log(1 - D(mixed)) ("minimax", the literal saddle-point objective)."""
    if form == "nonsaturating":
        return F.binary_cross_entropy_with_logits(d_mixed, torch.ones_like(d_mixed))
    if form == "minimax":
        return -F.binary_cross_entropy_with_logits(d_mixed, torch.zeros_like(d_mixed))
    raise ValueError(f"adversarial form must be nonsaturating or minimax, got {form!r}")
