"""Methods that combine per-domain gradients by their agreement: AND-mask and SAND-mask (keep
the components whose signs agree across domains), PCGrad (project away conflicting parts)."""

from __future__ import annotations

import torch

from dgalign.algorithms._common import (
    concat,
    domain_gradients,
    domain_losses,
    set_gradients,
)
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, interval, log_uniform, positive, uniform
from dgalign.utils.tensors import flatten


def and_mask_gradient(grads: torch.Tensor, tau: float) -> torch.Tensor:
    """AND-mask of per-domain gradients `grads` [E, ...] of one parameter tensor: the mean
    gradient where |mean_e sign(g_e)| >= tau, zero elsewhere, rescaled by 1 / (kept fraction)."""
    mask = (torch.sign(grads).mean(0).abs() >= tau).to(grads.dtype)
    return mask * grads.mean(0) / (1e-10 + mask.mean())


def sand_mask(grads: torch.Tensor, tau: float, k: float) -> torch.Tensor:
    """SAND-mask in [0, 1]: max(0, tanh(k / Var_e(g) * (|mean_e sign(g_e)| - tau))), with the
    unbiased variance across domains; NaNs (one domain, 0 * inf) become 1e-17 (as DomainBed)."""
    variance = grads.var(dim=0)
    variance = torch.where(torch.isnan(variance), torch.full_like(variance, 1e-17), variance)
    agreement = torch.sign(grads).mean(0).abs()
    mask = torch.tanh(k / variance * (agreement - tau)).clamp(min=0)
    return torch.where(torch.isnan(mask), torch.full_like(mask, 1e-17), mask)


def sand_mask_gradient(grads: torch.Tensor, tau: float, k: float) -> torch.Tensor:
    """The mean gradient weighted by `sand_mask`, rescaled by 1 / mean(mask)."""
    mask = sand_mask(grads, tau, k)
    return mask * grads.mean(0) / (1e-10 + mask.mean())


class _MaskedGradient(FeaturizerClassifier):
    """Per-domain gradients of the whole network, combined per parameter tensor by `combine`."""

    def combine(self, grads: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, minibatches: Minibatches) -> Logs:
        params = list(self.network.parameters())
        all_x, _ = concat(minibatches)
        logits = self.network(all_x)
        losses = domain_losses(logits, minibatches)
        env_grads = domain_gradients(losses, params)
        self.optimizer.zero_grad()
        for i, p in enumerate(params):
            p.grad = self.combine(torch.stack([g[i] for g in env_grads])).detach()
        self.optimizer.step()
        return {"loss": torch.stack(losses).mean().detach()}


@register
class ANDMask(_MaskedGradient):
    """theta <- Adam step on m * mean_e grad R_e / mean(m), m_j = 1[|mean_e sign(grad_j R_e)|
    >= tau] per parameter tensor: only directions on which the domains agree are followed."""

    DESCRIPTION = "AND-mask: follow only gradient components with agreeing signs across domains"
    PAPER = "Parascandolo et al., 2021"
    HPARAMS = (
        HParam(
            "tau",
            1.0,
            uniform(0.5, 1.0),
            "sign-agreement threshold of the mask",
            interval(0.0, 1.0),
        ),
    )

    def combine(self, grads: torch.Tensor) -> torch.Tensor:
        return and_mask_gradient(grads, float(self.hparams["tau"]))


@register
class SANDMask(_MaskedGradient):
    """As AND-mask with a smooth mask m = max(0, tanh(k / Var_e(g) * (|mean_e sign(g)| - tau)))."""

    DESCRIPTION = "SAND-mask: smooth sign-agreement gradient mask scaled by gradient variance"
    PAPER = "Shahtalebi et al., 2021"
    HPARAMS = (
        HParam(
            "tau",
            1.0,
            uniform(0.0, 1.0),
            "sign-agreement threshold of the mask",
            interval(0.0, 1.0),
        ),
        HParam("k", 10.0, log_uniform(-3, 5), "steepness of the tanh mask", positive()),
    )

    def combine(self, grads: torch.Tensor) -> torch.Tensor:
        return sand_mask_gradient(grads, float(self.hparams["tau"]), float(self.hparams["k"]))


def project_conflicting(
    grads: torch.Tensor, orders: list[list[int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad on flat per-domain gradients `grads` [E, P]: for each domain i, for each other
    domain j in `orders[i]` (default: a random order), if g_i' . g_j < 0 then
    g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j. Returns the projected gradients and the number
    of projections made (a 0-dim tensor)."""
    n_domains = len(grads)
    projected = grads.clone()
    n_conflicts = grads.new_zeros((), dtype=torch.long)
    for i in range(n_domains):
        if orders is None:
            order = [j for j in torch.randperm(n_domains).tolist() if j != i]
        else:
            order = orders[i]
        for j in order:  # branch-free, so the host never waits for the sign of the dot
            dot = projected[i] @ grads[j]
            conflict = dot < 0
            step = torch.where(conflict, dot / (grads[j] @ grads[j]), 0.0)
            projected[i] = torch.where(conflict, projected[i] - step * grads[j], projected[i])
            n_conflicts = n_conflicts + conflict
    return projected, n_conflicts


@register
class PCGrad(FeaturizerClassifier):
    """theta <- Adam step on (1/E) sum_e g_e^PC, where g_e^PC is the gradient of R_e with its
    components conflicting with the other domains' gradients projected out (gradient surgery).

    PCGrad has no hyper-parameters of its own (DomainBed has no entry): it uses the dataset-level
    lr / batch size. Choices: the surgery acts on the whole network's flattened gradient (all
    parameters are shared by the domains); the other domains are visited in a random order per
    step (as in the paper); the projected gradients are averaged rather than summed, so the
    step matches ERM's mean loss scale."""

    DESCRIPTION = "PCGrad: project out conflicting components of the per-domain gradients"
    PAPER = "Yu et al., 2020"

    def update(self, minibatches: Minibatches) -> Logs:
        params = list(self.network.parameters())
        all_x, _ = concat(minibatches)
        logits = self.network(all_x)
        losses = domain_losses(logits, minibatches)
        env_grads = torch.stack([flatten(g) for g in domain_gradients(losses, params)])
        projected, n_conflicts = project_conflicting(env_grads)
        self.optimizer.zero_grad()
        set_gradients(params, projected.mean(0))
        self.optimizer.step()
        return {"loss": torch.stack(losses).mean().detach(), "conflicts": n_conflicts.float()}
