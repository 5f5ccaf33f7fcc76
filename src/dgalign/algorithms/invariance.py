"""Invariance and robustness across domains: IRM, V-REx, GroupDRO (DomainBed's versions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from dgalign.algorithms._common import AnnealedPenalty, concat, domain_losses, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.algorithms.schedule import PenaltySchedule
from dgalign.curvature._head import linear_logits
from dgalign.curvature.risk import (
    IRM_FORMS,
    VREX_FORMS,
    domain_mean_losses,
    irm_penalty,
    vrex_penalty,
)
from dgalign.errors import ConfigError
from dgalign.hparams import (
    HParam,
    const,
    int_log_uniform,
    integer,
    log_uniform,
    nonnegative,
    one_of,
    positive,
)


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
    """Shared path of IRM and V-REx: min mean_e R_e + lambda_t * penalty(logits), with
    lambda_t = 1 before `<PREFIX>_penalty_anneal_iters` steps and `<PREFIX>_lambda` after. The
    penalty needs only the logits (`logit_penalty`), so it works with any network."""

    PREFIX: ClassVar[str] = ""
    FORMS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        form = self.hparams.get("penalty_form", self.FORMS[0])
        if form not in self.FORMS:
            raise ConfigError(
                f"{type(self).__name__} penalty_form must be one of {self.FORMS}, got {form!r}"
            )

    @classmethod
    def penalty_schedule(cls, hparams: dict[str, Any]) -> PenaltySchedule:
        return PenaltySchedule(
            int(hparams[f"{cls.PREFIX}_penalty_anneal_iters"]),
            float(hparams[f"{cls.PREFIX}_lambda"]),
            before=1.0,
        )

    @classmethod
    def logit_penalty(
        cls, logits: Tensor, y: Tensor, counts: Sequence[int], hparams: dict[str, Any]
    ) -> Tensor:
        """The unweighted penalty from the logits and labels of the domains (`counts` rows)."""
        raise NotImplementedError

    @classmethod
    def head_penalties(cls, z, weight, bias, y, counts, hparams) -> tuple[Tensor, dict]:
        logits = linear_logits(z, weight, bias)
        return logits, {"penalty": cls.logit_penalty(logits, y, counts, hparams)}

    def update(self, minibatches: Minibatches) -> Logs:
        weight = self.schedule_weight()
        all_x, all_y = concat(minibatches)
        logits = self.network(all_x)
        counts = sizes(minibatches)
        nll = domain_mean_losses(logits, all_y, counts).mean()
        penalty = self.logit_penalty(logits, all_y, counts, self.hparams)
        loss = nll + weight * penalty
        self.step(loss)
        return {"loss": loss.detach(), "nll": nll.detach(), "penalty": penalty.detach()}


@register
class IRM(RiskPenalty):
    """min (1/E) sum_e [CE_e + lambda_t * pen_e] with lambda_t = 1 before
    `irm_penalty_anneal_iters` steps and `irm_lambda` after, and pen_e from the dummy-scale
    gradient g(S) = d/ds CE_S(s * logits) at s = 1 = mean_i (p_i - y_i) . l_i (closed form):
    `penalty_form` "split_product" g(even samples) g(odd samples) (DomainBed's unbiased form),
    "squared" g(all samples)^2 (the IRM paper's Colored MNIST script)."""

    DESCRIPTION = "Invariant risk minimization (IRMv1 penalty on a dummy classifier scale)"
    PAPER = "Arjovsky et al., 2019"
    PREFIX = "irm"
    FORMS = IRM_FORMS
    HPARAMS = (
        *annealed_hparams(PREFIX, 1e2, "IRM penalty"),
        HParam(
            "penalty_form",
            "split_product",
            const("split_product"),
            "split_product (DomainBed) or squared (the Colored MNIST script)",
            one_of(*IRM_FORMS),
        ),
    )

    @classmethod
    def logit_penalty(cls, logits, y, counts, hparams) -> Tensor:
        return irm_penalty(logits, y, counts, hparams.get("penalty_form", "split_product"))


@register
class VREx(RiskPenalty):
    """min mean_e R_e + lambda_t * pen, with lambda_t = 1 before `vrex_penalty_anneal_iters`
    steps and `vrex_lambda` after: `penalty_form` "variance" Var_e(R_e) (population variance,
    DomainBed), "squared_difference" (R_0 - R_1)^2 for two domains (Fishr's Colored MNIST
    script)."""

    DESCRIPTION = "Risk extrapolation: penalise the variance of the domain risks"
    PAPER = "Krueger et al., 2021"
    PREFIX = "vrex"
    FORMS = VREX_FORMS
    HPARAMS = (
        *annealed_hparams(PREFIX, 1e1, "variance penalty"),
        HParam(
            "penalty_form",
            "variance",
            const("variance"),
            "variance (DomainBed) or squared_difference of 2 domains (Colored MNIST script)",
            one_of(*VREX_FORMS),
        ),
    )

    @classmethod
    def logit_penalty(cls, logits, y, counts, hparams) -> Tensor:
        losses = domain_mean_losses(logits, y, counts)
        return vrex_penalty(losses, hparams.get("penalty_form", "variance"))


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

    def update(self, minibatches: Minibatches) -> Logs:
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
        return {"loss": loss.detach(), "nll": losses.mean().detach()}
