"""Information bottlenecks on the representation: IB-ERM and IB-IRM (Ahuja et al., 2021) and
the contrastive domain bottlenecks CAD and CondCAD (Ruan et al., 2022), as in DomainBed.

IB penalty of one domain: the mean over feature dimensions of the (unbiased) per-dimension
variance of the domain's features, `mean_j Var_i(z_ij)`.

CAD's bottleneck (SupCon-style, Khosla et al.): with `s_ij = z_i . z_j / T` (z optionally
L2-normalised) over all i != j of the pooled batch, and D_i the samples of i's domain,

- CAD (minimises I(D; Z)): `-(T / 0.07) log sum_{j not in D_i} softmax_j(s_i.)` averaged over
  anchors that have a same-label partner (the "flipped" form, DomainBed's default; the plain
  form minimises `(T / 0.07) log sum_{j in D_i} softmax_j(s_i.)`);
- CondCAD (minimises I(D; Z | Y)): the same with the softmax over the anchor's same-label
  samples only and j ranging over same-label samples of other domains (flipped) or of the same
  domain (plain).

Non-finite anchor terms (an anchor with no sample of the required kind) are left out of the
mean, as DomainBed does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgalign.algorithms._common import AnnealedPenalty, concat, domain_losses, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.invariance import annealed_hparams
from dgalign.algorithms.registry import register
from dgalign.curvature.risk import irm_penalty
from dgalign.hparams import HParam, boolean, choice, const, nonnegative, positive

BASE_TEMPERATURE = 0.07


def ib_penalty(features: Sequence[Tensor]) -> Tensor:
    """(1/E) sum_e mean_j Var_i(z^e_ij): the mean per-dimension feature variance per domain."""
    return torch.stack([z.var(dim=0).mean() for z in features]).mean()


class _Bottleneck(AnnealedPenalty):
    """Shared path of IB-ERM and IB-IRM: mean domain cross-entropy + the IB penalty weighted 0
    before `ib_penalty_anneal_iters` steps and `ib_lambda` after (+ IB-IRM's IRM term)."""

    USE_IRM = False

    def update(self, minibatches: Minibatches) -> Logs:
        step = self.updates
        ib_iters = int(self.hparams["ib_penalty_anneal_iters"])
        ib_weight = float(self.hparams["ib_lambda"]) if step >= ib_iters else 0.0
        switches = [ib_iters]
        irm_weight = 0.0
        if self.USE_IRM:
            irm_iters = int(self.hparams["irm_penalty_anneal_iters"])
            irm_weight = float(self.hparams["irm_lambda"]) if step >= irm_iters else 1.0
            switches.append(irm_iters)
        if step in switches:  # DomainBed resets Adam at either switch (even at step 0)
            self.optimizer = self.make_optimizer()
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        logits = self.classifier(z)
        nll = torch.stack(domain_losses(logits, minibatches)).mean()
        ib = ib_penalty(z.split(sizes(minibatches)))
        loss = nll + ib_weight * ib
        logs = {"nll": nll.detach(), "IB_penalty": ib.detach()}
        if self.USE_IRM:
            irm = irm_penalty(logits, all_y, sizes(minibatches))
            loss = loss + irm_weight * irm
            logs["IRM_penalty"] = irm.detach()
        self.step(loss)
        return {"loss": loss.detach(), **logs}


def _ib_hparams() -> tuple[HParam, HParam]:
    lam, iters = annealed_hparams("ib", 1e2, "information-bottleneck penalty")
    iters = HParam(
        iters.name,
        iters.default,
        iters.sampler,
        "steps with IB weight 0 before ib_lambda (Adam is reset at the switch)",
        iters.domain,
    )
    return lam, iters


@register
class IB_ERM(_Bottleneck):
    """min (1/E) sum_e CE_e + lambda_t (1/E) sum_e mean_j Var(z^e_j), lambda_t = 0 before
    `ib_penalty_anneal_iters` steps and `ib_lambda` after."""

    DESCRIPTION = "ERM with an information bottleneck (feature variance) penalty"
    PAPER = "Ahuja et al., 2021"
    HPARAMS = _ib_hparams()


@register
class IB_IRM(_Bottleneck):
    """IB-ERM's objective + IRM's penalty (weight 1 before `irm_penalty_anneal_iters` steps and
    `irm_lambda` after); Adam is reset at either switch."""

    DESCRIPTION = "IRM with an information bottleneck (feature variance) penalty"
    PAPER = "Ahuja et al., 2021"
    USE_IRM = True
    HPARAMS = (*annealed_hparams("irm", 1e2, "IRM penalty"), *_ib_hparams())


def _masked_logsumexp(values: Tensor, mask: Tensor) -> Tensor:
    """log sum_j exp(values_ij) over the j where mask_ij, per row (-inf for an empty row)."""
    return torch.logsumexp(values.masked_fill(~mask, float("-inf")), dim=1)


def _finite_mean(values: Tensor) -> Tensor:
    """Mean of the finite entries; 0 when there is none."""
    finite = torch.isfinite(values)
    total = torch.where(finite, values, torch.zeros_like(values)).sum()
    return total / finite.sum().clamp_min(1)


def cad_bottleneck(
    z: Tensor,
    y: Tensor,
    domains: Tensor,
    temperature: float,
    conditional: bool,
    flipped: bool = True,
    normalize: bool = False,
) -> Tensor:
    """CAD / CondCAD bottleneck loss of features `z` [n, d] (see the module docstring)."""
    n = len(z)
    if normalize:
        z = F.normalize(z, dim=1)
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    same_y = (y[:, None] == y[None, :]) & not_self
    same_d = domains[:, None] == domains[None, :]
    logits = (z @ z.t()) / temperature
    logits = logits - logits.masked_fill(~not_self, float("-inf")).max(1, keepdim=True)[0].detach()
    scale = temperature / BASE_TEMPERATURE
    if not conditional:
        log_prob = logits - _masked_logsumexp(logits, not_self)[:, None]
        valid = same_y.any(1)
        log_prob, rows_d, rows_self = log_prob[valid], same_d[valid], not_self[valid]
        if flipped:
            loss = -scale * _masked_logsumexp(log_prob, ~rows_d & rows_self)
        else:
            loss = scale * _masked_logsumexp(log_prob, rows_d & rows_self)
        return _finite_mean(loss)
    other_d = same_y & ~same_d
    own_d = same_y & same_d
    valid = (other_d if flipped else own_d).any(1)
    logits, rows_y = logits[valid], same_y[valid]
    log_prob_y = logits - _masked_logsumexp(logits, rows_y)[:, None]
    if flipped:
        loss = -scale * _masked_logsumexp(log_prob_y, other_d[valid])
    else:
        loss = scale * _masked_logsumexp(log_prob_y, own_d[valid])
    return _finite_mean(loss)


class _ContrastiveBottleneck(FeaturizerClassifier):
    """min CE + lmbda * bottleneck(z, y, domain) over featurizer, head (and projection)."""

    CONDITIONAL = False
    HPARAMS = (
        HParam(
            "lmbda",
            1e-1,
            choice([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2]),
            "weight of the bottleneck loss",
            nonnegative(),
        ),
        HParam(
            "temperature", 0.1, choice([0.05, 0.1]), "temperature T of the similarities", positive()
        ),
        HParam(
            "is_normalized", False, const(False), "L2-normalise the features in the loss", boolean()
        ),
        HParam(
            "is_project",
            False,
            const(False),
            "projection head d -> d -> 128 in the loss",
            boolean(),
        ),
        HParam("is_flipped", True, const(True), "maximise -log(1 - p) (flipped) form", boolean()),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        if self.hparams["is_project"]:
            d = self.featurizer.n_outputs
            self.project = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 128))
            self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.network.parameters())
        if hasattr(self, "project"):
            params += list(self.project.parameters())
        return torch.optim.Adam(
            params, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        domains = torch.cat(
            [torch.full((n,), i, device=all_y.device) for i, n in enumerate(sizes(minibatches))]
        )
        z = self.featurizer(all_x)
        clf_loss = F.cross_entropy(self.classifier(z), all_y)
        zb = self.project(z) if hasattr(self, "project") else z
        bn_loss = cad_bottleneck(
            zb,
            all_y,
            domains,
            float(self.hparams["temperature"]),
            self.CONDITIONAL,
            bool(self.hparams["is_flipped"]),
            bool(self.hparams["is_normalized"]),
        )
        loss = clf_loss + self.hparams["lmbda"] * bn_loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "clf_loss": clf_loss.detach(), "bn_loss": bn_loss.detach()}


@register
class CAD(_ContrastiveBottleneck):
    """min CE + lmbda * L_CAD: a contrastive bound on I(D; Z) pushing each sample's similarity
    mass towards samples of other domains (module docstring)."""

    DESCRIPTION = "Contrastive adversarial domain bottleneck, minimising I(domain; Z)"
    PAPER = "Ruan et al., 2022"


@register
class CondCAD(_ContrastiveBottleneck):
    """min CE + lmbda * L_CondCAD: CAD's bound on I(D; Z | Y), contrasting only same-label
    samples (module docstring)."""

    DESCRIPTION = "Conditional contrastive domain bottleneck, minimising I(domain; Z | Y)"
    PAPER = "Ruan et al., 2022"
    CONDITIONAL = True
