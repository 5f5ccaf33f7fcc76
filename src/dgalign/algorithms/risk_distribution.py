"""Objectives on the distribution of risks across domains: EQRM (Eastwood et al., 2022) and
RDM (Nguyen et al., 2024), as in DomainBed.

EQRM minimises the alpha-quantile of the domain risks R_1..R_E: after a burn-in of mean-risk
steps, the loss is the q with F(q) = alpha, F the CDF of a Gaussian kernel density estimate of
the risks with Silverman's "Gauss-optimal" bandwidth h = 1.06 std(R) E^(-1/5). q is found by 32
bisection steps between the alpha-quantiles of N(R_min, h) and N(R_max, h); as in DomainBed the
gradient reaches the risks through those two end points and h (q = a lo + (1 - a) hi with the
bisection's a treated as a constant).

RDM matches the distribution of per-sample losses of the worst domain (largest mean risk) to
that of all domains with an MMD (kernel sum_g exp(-g d^2), g in 1e-4 .. 1e3), plus the
variances of both sets of losses, after `rdm_penalty_anneal_iters` steps of ERM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dgalign.algorithms._common import AnnealedPenalty, concat, domain_losses, sizes
from dgalign.algorithms.base import Logs, Minibatches
from dgalign.algorithms.feature_alignment import gaussian_mmd
from dgalign.algorithms.registry import register
from dgalign.hparams import (
    LEARNING_RATE,
    SMALL_IMAGES,
    HParam,
    choice,
    int_uniform,
    integer,
    log_uniform,
    nonnegative,
    number_at_least,
    uniform,
    unit_open,
)

BISECTION_STEPS = 32
RDM_GAMMAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def kde_bandwidth(x: Tensor) -> Tensor:
    """Gauss-optimal bandwidth 1.06 * std(x) * n^(-1/5) (unbiased std)."""
    return 1.06 * x.std() * len(x) ** (-0.2)


def kde_cdf(q: Tensor, data: Tensor, bandwidth: Tensor) -> Tensor:
    """CDF at q of the Gaussian KDE of `data`: mean_i Phi((q - x_i) / h)."""
    return torch.distributions.Normal(data, bandwidth.expand_as(data)).cdf(q).mean()


def kde_quantile(risks: Tensor, alpha: float, steps: int = BISECTION_STEPS) -> Tensor:
    """The alpha-quantile of the KDE of `risks` by bisection (module docstring)."""
    data, _ = torch.sort(risks)
    h = kde_bandwidth(data)
    lo = torch.distributions.Normal(data[0], h).icdf(torch.tensor(alpha, dtype=data.dtype))
    hi = torch.distributions.Normal(data[-1], h).icdf(torch.tensor(alpha, dtype=data.dtype))
    a_lo, a_hi = 1.0, 0.0  # q = a * lo + (1 - a) * hi for each end of the bracket
    a = 0.5
    with torch.no_grad():
        for _ in range(steps):
            q = a * lo + (1 - a) * hi
            if kde_cdf(q, data, h) > alpha:
                a_hi = a
            else:
                a_lo = a
            new_a = 0.5 * (a_lo + a_hi)
            if new_a == a:
                break
            a = new_a
    return a * lo + (1 - a) * hi


@register
class EQRM(AnnealedPenalty):
    """min_theta Q_alpha(R_1(theta), ..., R_E(theta)), the alpha-quantile of the KDE of the
    domain risks, after `eqrm_burnin_iters` steps of min mean_e R_e; Adam is re-created with
    `eqrm_lr` at the switch."""

    DESCRIPTION = "Empirical quantile risk minimization over the domain risks"
    PAPER = "Eastwood et al., 2022"
    HPARAMS = (
        HParam(
            "eqrm_quantile",
            0.75,
            uniform(0.5, 0.99),
            "quantile alpha of the domain risks",
            unit_open(),
        ),
        HParam(
            "eqrm_burnin_iters",
            2500,
            log_uniform(2.5, 3.5),
            "steps of mean-risk ERM before the quantile objective",
            number_at_least(0),
        ),
        HParam(
            "eqrm_lr",
            1e-6,
            log_uniform(-7, -5),
            "Adam learning rate after the burn-in",
            LEARNING_RATE,
        ),
    )

    def update(self, minibatches: Minibatches) -> Logs:
        step = self.updates
        burnin = self.hparams["eqrm_burnin_iters"]
        all_x, _ = concat(minibatches)
        risks = torch.stack(domain_losses(self.network(all_x), minibatches))
        if step < burnin:
            loss = risks.mean()
        else:
            loss = kde_quantile(risks, float(self.hparams["eqrm_quantile"]))
        if step == burnin:
            self.optimizer = torch.optim.Adam(
                self.network.parameters(),
                lr=self.hparams["eqrm_lr"],
                weight_decay=self.hparams["weight_decay"],
            )
        self.step(loss)
        return {"loss": loss.detach(), "mean_risk": risks.mean().detach()}


def _rdm_batch_size(dataset: str) -> HParam:
    if dataset in ("DomainNet", "TerraIncognita"):
        return HParam("batch_size", 40, int_uniform(30, 60), "batch size per domain", integer(1))
    return HParam("batch_size", 88, int_uniform(70, 100), "batch size per domain", integer(1))


@register
class RDM(AnnealedPenalty):
    """min mean_e R_e + lambda_t MMD(l_worst, l_all) + w_t (Var(l_all) + Var(l_worst)), with
    l the per-sample losses, `worst` the domain of largest mean risk, and (lambda_t, w_t) =
    (0, 0) before `rdm_penalty_anneal_iters` steps, (`rdm_lambda`, `variance_weight`) after;
    Adam is re-created with `rdm_lr` at the switch."""

    DESCRIPTION = "Risk distribution matching: the worst domain's losses against all domains'"
    PAPER = "Nguyen et al., 2024"

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        if dataset == "DomainNet":
            lam = HParam(
                "rdm_lambda",
                0.5,
                uniform(0.1, 1.0),
                "weight of the MMD of the risks",
                nonnegative(),
            )
            iters = HParam(
                "rdm_penalty_anneal_iters",
                2400,
                int_uniform(1500, 3000),
                "ERM steps first",
                integer(0),
            )
        else:
            lo = 1.0 if dataset in ("PACS", "TerraIncognita") else 0.1
            lam = HParam(
                "rdm_lambda",
                5.0,
                uniform(lo, 10.0),
                "weight of the MMD of the risks",
                nonnegative(),
            )
            iters = HParam(
                "rdm_penalty_anneal_iters",
                1500,
                int_uniform(800, 2700),
                "ERM steps first",
                integer(0),
            )
        if dataset in ("TerraIncognita", "OfficeHome", "DomainNet"):
            var = HParam(
                "variance_weight", 0.0, choice([0.0]), "weight of the loss variances", nonnegative()
            )
        else:
            var = HParam(
                "variance_weight",
                0.004,
                uniform(0.001, 0.007),
                "weight of the loss variances",
                nonnegative(),
            )
        space = [
            lam,
            iters,
            var,
            HParam(
                "rdm_lr",
                1.5e-5,
                uniform(8e-6, 2e-5),
                "Adam learning rate after the switch",
                LEARNING_RATE,
            ),
        ]
        if dataset not in SMALL_IMAGES:
            space.append(_rdm_batch_size(dataset))
        return space

    def update(self, minibatches: Minibatches) -> Logs:
        step = self.updates
        iters = int(self.hparams["rdm_penalty_anneal_iters"])
        on = step >= iters
        if step == iters:
            self.optimizer = torch.optim.Adam(
                self.network.parameters(),
                lr=self.hparams["rdm_lr"],
                weight_decay=self.hparams["weight_decay"],
            )
        all_x, all_y = concat(minibatches)
        per_sample = F.cross_entropy(self.network(all_x), all_y, reduction="none")
        per_domain = per_sample.split(sizes(minibatches))
        risks = torch.stack([lo.mean() for lo in per_domain])
        erm = risks.mean()
        worst_index = torch.argmax(risks.detach())
        if len({len(lo) for lo in per_domain}) == 1:  # equal batches: picked on the device
            worst = torch.stack(per_domain)[worst_index.view(1)][0]
        else:
            worst = per_domain[int(worst_index)]
        matching = gaussian_mmd(worst[:, None], per_sample[:, None], RDM_GAMMAS)
        variance = per_sample.var() + worst.var()
        weight = float(self.hparams["rdm_lambda"]) if on else 0.0
        var_weight = float(self.hparams["variance_weight"]) if on else 0.0
        loss = erm + weight * matching + var_weight * variance
        self.step(loss)
        return {
            "loss": loss.detach(),
            "erm_loss": erm.detach(),
            "matching_penalty": matching.detach(),
            "variance_penalty": variance.detach(),
        }
