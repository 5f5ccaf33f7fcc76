"""Invariance and robustness across domains: IRM, V-REx, GroupDRO (DomainBed's versions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, autograd

from dgalign.algorithms._common import AnnealedPenalty, concat, domain_losses, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, int_log_uniform, integer, log_uniform, nonnegative, positive


def irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """IRMv1 penalty of one domain, DomainBed's unbiased form: the product of the gradients
    w.r.t. a dummy scale s (at s = 1) of the cross-entropy on the even and on the odd samples,
    d/ds CE(s * logits[::2]) * d/ds CE(s * logits[1::2])."""
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    loss_1 = F.cross_entropy(logits[::2] * scale, y[::2])
    loss_2 = F.cross_entropy(logits[1::2] * scale, y[1::2])
    grad_1 = autograd.grad(loss_1, [scale], create_graph=True)[0]
    grad_2 = autograd.grad(loss_2, [scale], create_graph=True)[0]
    return grad_1 * grad_2


def annealed_hparams(prefix: str, weight: float, what: str) -> tuple[HParam, HParam]:
    """`<prefix>_lambda` (default `weight`, weighing `what`) and `<prefix>_penalty_anneal_iters`."""
    return (
        HParam(
            f"{prefix}_lambda",
            weight,
            log_uniform(-1, 5),
            f"{what} weight after annealing",
            nonnegative(),
        ),
        HParam(
            f"{prefix}_penalty_anneal_iters",
            500,
            int_log_uniform(10, 0, 4),
            f"steps with penalty weight 1 before {prefix}_lambda (Adam is reset at the switch)",
            integer(0),
        ),
    )


class RiskPenalty(AnnealedPenalty):
    """Shared path of IRM and V-REx: min mean_e R_e + lambda_t * `penalty`, with lambda_t = 1
    before `<PREFIX>_penalty_anneal_iters` steps and `<PREFIX>_lambda` after."""

    PREFIX: ClassVar[str] = ""

    def penalty(
        self, logits: Tensor, minibatches: Minibatches, losses: Tensor, nll: Tensor
    ) -> Tensor:
        """The unweighted penalty from the pooled logits, the domain risks and their mean."""
        raise NotImplementedError

    def update(self, minibatches: Minibatches) -> dict[str, float]:
        weight = self.penalty_weight(
            self.hparams[f"{self.PREFIX}_penalty_anneal_iters"],
            self.hparams[f"{self.PREFIX}_lambda"],
            1.0,
        )
        all_x, _ = concat(minibatches)
        logits = self.network(all_x)
        losses = torch.stack(domain_losses(logits, minibatches))
        nll = losses.mean()
        penalty = self.penalty(logits, minibatches, losses, nll)
        loss = nll + weight * penalty
        self.step(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item()}


@register
class IRM(RiskPenalty):
    """min (1/E) sum_e [CE_e + lambda_t * d/ds CE_e^even(s) * d/ds CE_e^odd(s)] at s = 1, with
    lambda_t = 1 before `irm_penalty_anneal_iters` steps and `irm_lambda` after."""

    DESCRIPTION = "Invariant risk minimization (IRMv1 penalty on a dummy classifier scale)"
    PAPER = "Arjovsky et al., 2019"
    PREFIX = "irm"
    HPARAMS = annealed_hparams(PREFIX, 1e2, "IRM penalty")

    def penalty(
        self, logits: Tensor, minibatches: Minibatches, losses: Tensor, nll: Tensor
    ) -> Tensor:
        parts = logits.split(sizes(minibatches))
        return torch.stack(
            [irm_penalty(lg, y) for lg, (_, y) in zip(parts, minibatches, strict=True)]
        ).mean()


@register
class VREx(RiskPenalty):
    """min mean_e R_e + lambda_t * Var_e(R_e) (population variance of the domain risks), with
    lambda_t = 1 before `vrex_penalty_anneal_iters` steps and `vrex_lambda` after."""

    DESCRIPTION = "Risk extrapolation: penalise the variance of the domain risks"
    PAPER = "Krueger et al., 2021"
    PREFIX = "vrex"
    HPARAMS = annealed_hparams(PREFIX, 1e1, "variance penalty")

    def penalty(
        self, logits: Tensor, minibatches: Minibatches, losses: Tensor, nll: Tensor
    ) -> Tensor:
        return ((losses - nll) ** 2).mean()


@register
class GroupDRO(FeaturizerClassifier):
    """min sum_e q_e R_e, with q <- q * exp(eta * R_e) / Z updated before each step (online
    mirror ascent on the worst-domain risk). q is a buffer, so checkpoints keep it."""

    DESCRIPTION = "Group distributionally robust optimization over the training domains"
    PAPER = "Sagawa et al., 2020"
    HPARAMS = (
        HParam(
            "groupdro_eta",
            1e-2,
            log_uniform(-3, -1),
            "step size of the domain weights q",
            positive(),
        ),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.register_buffer("q", torch.ones(num_domains))

    def update(self, minibatches: Minibatches) -> dict[str, float]:
        if len(minibatches) != len(self.q):
            raise ValueError(
                f"GroupDRO was built for {len(self.q)} training domains, got {len(minibatches)}"
            )
        all_x, _ = concat(minibatches)
        logits = self.network(all_x)
        losses = torch.stack(domain_losses(logits, minibatches))
        with torch.no_grad():
            self.q.mul_(torch.exp(self.hparams["groupdro_eta"] * losses.detach()))
            self.q.div_(self.q.sum())
        loss = torch.dot(losses, self.q.to(losses.dtype))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "nll": losses.mean().item()}
