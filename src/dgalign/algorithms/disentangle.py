"""ADRMX, additive disentanglement of domain features with a remix loss (Demirel et al., 2023),
as in DomainBed.

Two featurizers give label features z_l and domain features z_d; the domain-invariant part is
their difference z_inv = z_l - z_d. A domain discriminator (an MLP on z_inv) and the rest are
trained in turns: `d_steps_per_g_step` discriminator steps on CE(disc(z_inv), domain), then one
step of everything else on

    CE(h1(z_l), y) + CE(h2(z_inv), y) + dclf * CE(g(z_d), domain) + rmxd * L_remix
    + cnt * (SupCon(z_l) + SupCon(z_inv)) - disc * CE(disc(z_inv), domain),

with h1, h2, g non-linear heads and SupCon the supervised contrastive loss whose positives
from the anchor's own domain weigh lambda = 0.5 and those from other domains 1 - lambda (as
the negatives), temperature 0.07. The remix loss: for every class with two samples in the batch,
two of them (i, j) drawn at random, CE(h1(z_inv_i + z_d_j), y_i), averaged over the classes.
DomainBed draws i and j among the first samples of the whole batch rather than among the
class's samples (an indexing slip); here they are drawn from the class, as the paper intends.
Predictions: h1(z_l).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgalign.algorithms._common import concat, sizes
from dgalign.algorithms.base import Algorithm, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import (
    LEARNING_RATE,
    SMALL_IMAGES,
    HParam,
    choice,
    integer,
    interval,
    nonnegative,
)
from dgalign.networks import MLP, build_classifier, build_featurizer

SUPCON_TEMPERATURE = 0.07
SUPCON_LAMBDA = 0.5


def supcon_lambda(
    features: Tensor,
    labels: Tensor,
    domains: Tensor,
    lam: float = SUPCON_LAMBDA,
    temperature: float = SUPCON_TEMPERATURE,
) -> Tensor:
    """Supervised contrastive loss with domain weights (module docstring):

        -(1 / (n - m + 1)) sum_i (1 / P_i) sum_{j in pos(i)} log(w_ij e^{s_ij} / den_i + 1e-5),

    s = cos similarity / T, w_ij = lam (same domain) or 1 - lam, den_i = sum_{j != i} w_ij e^{s_ij}
    + 1e-5, P_i = |pos(i)|; anchors without positives (m of them) are left out."""
    z = F.normalize(features, p=2, dim=1)
    s = z @ z.t() / temperature
    n = len(z)
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    same_y = labels[:, None] == labels[None, :]
    same_d = domains[:, None] == domains[None, :]
    weights = torch.where(same_d, lam, 1.0 - lam).to(s.dtype)
    terms = weights * torch.exp(s) * not_self
    denominator = terms.sum(1, keepdim=True) + 1e-5
    positive = same_y & not_self
    counts = positive.sum(1)
    log_fraction = torch.log(terms / denominator + 1e-5)
    per_anchor = (log_fraction * positive).sum(1) / counts.clamp_min(1)
    has_positive = counts > 0
    missing = (~has_positive).sum()
    return -(per_anchor * has_positive).sum() / (n - missing + 1)


@register
class ADRMX(Algorithm):
    """Label and domain featurizers, z_inv = z_l - z_d, adversarial domain discriminator on
    z_inv, contrastive and remix losses (module docstring)."""

    DESCRIPTION = "Additive disentanglement of domain features with a remix loss"
    PAPER = "Demirel et al., 2023"

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        small = dataset in SMALL_IMAGES
        lr = (
            HParam(
                "lr", 3e-3, choice([5e-4, 1e-3, 2e-3, 3e-3]), "Adam learning rate", LEARNING_RATE
            )
            if small
            else HParam(
                "lr", 3e-5, choice([2e-5, 3e-5, 4e-5, 5e-5]), "Adam learning rate", LEARNING_RATE
            )
        )
        return [
            HParam(
                "cnt_lambda", 1.0, choice([1.0]), "weight of the contrastive losses", nonnegative()
            ),
            HParam(
                "dclf_lambda",
                1.0,
                choice([1.0]),
                "weight of the domain classifier loss",
                nonnegative(),
            ),
            HParam(
                "disc_lambda", 0.75, choice([0.75]), "weight of the adversarial loss", nonnegative()
            ),
            HParam("rmxd_lambda", 1.0, choice([1.0]), "weight of the remix loss", nonnegative()),
            HParam(
                "d_steps_per_g_step",
                2,
                choice([2]),
                "discriminator steps per other step",
                integer(1),
            ),
            HParam(
                "beta1",
                0.5,
                choice([0.5]),
                "Adam beta1 of both optimizers",
                interval(0.0, 1.0, hi_open=True),
            ),
            HParam("mlp_width", 256, choice([256]), "discriminator width", integer(1)),
            HParam("mlp_depth", 9, choice([8, 9, 10]), "discriminator depth", integer(2)),
            HParam(
                "mlp_dropout",
                0.0,
                choice([0.0]),
                "discriminator dropout",
                interval(0.0, 1.0, hi_open=True),
            ),
            lr,
        ]

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer_label = build_featurizer(input_shape, self.hparams)
        self.featurizer_domain = build_featurizer(input_shape, self.hparams)
        d = self.featurizer_label.n_outputs
        self.discriminator = MLP(d, num_domains, self.hparams)
        self.classifier_label_1 = build_classifier(d, num_classes, nonlinear=True)
        self.classifier_label_2 = build_classifier(d, num_classes, nonlinear=True)
        self.classifier_domain = build_classifier(d, num_domains, nonlinear=True)
        self.network = nn.Sequential(self.featurizer_label, self.classifier_label_1)
        betas = (float(self.hparams["beta1"]), 0.9)
        self.disc_opt = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.hparams["lr"], betas=betas
        )
        rest = [
            self.featurizer_label,
            self.featurizer_domain,
            self.classifier_label_1,
            self.classifier_label_2,
            self.classifier_domain,
        ]
        self.opt = torch.optim.Adam(
            [p for m in rest for p in m.parameters()], lr=self.hparams["lr"], betas=betas
        )
        self.count_updates()

    def remix_loss(self, z_inv: Tensor, z_dom: Tensor, y: Tensor) -> Tensor:
        """mean over classes with >= 2 samples of CE(h1(z_inv_i + z_d_j), y_i), i, j drawn
        from the class."""
        total = z_inv.new_zeros(())
        for c in range(self.num_classes):
            members = torch.where(y == c)[0]
            if len(members) < 2:
                continue
            i, j = members[torch.randperm(len(members), device=members.device)[:2]]
            total = total + F.cross_entropy(
                self.classifier_label_1((z_inv[i] + z_dom[j])[None]), y[i][None]
            )
        return total / self.num_classes

    def update(self, minibatches: Minibatches) -> Logs:
        self.counted()
        all_x, all_y = concat(minibatches)
        domains = torch.cat(
            [torch.full((n,), i, device=all_y.device) for i, n in enumerate(sizes(minibatches))]
        )
        z_l = self.featurizer_label(all_x)
        z_d = self.featurizer_domain(all_x)
        z_inv = z_l - z_d
        disc_loss = F.cross_entropy(self.discriminator(z_inv), domains)
        d_steps = int(self.hparams["d_steps_per_g_step"])
        if self.updates % (1 + d_steps) < d_steps:
            self.disc_opt.zero_grad()
            disc_loss.backward()
            self.disc_opt.step()
            return {"loss": disc_loss.detach(), "loss_disc": disc_loss.detach()}
        domain_clf = F.cross_entropy(self.classifier_domain(z_d), domains)
        clf_int = F.cross_entropy(self.classifier_label_1(z_l), all_y)
        clf_final = F.cross_entropy(self.classifier_label_2(z_inv), all_y)
        cnt_int = supcon_lambda(z_l, all_y, domains)
        cnt_final = supcon_lambda(z_inv, all_y, domains)
        remix = self.remix_loss(z_inv, z_d, all_y)
        h = self.hparams
        gen_loss = (
            clf_int
            + clf_final
            + h["dclf_lambda"] * domain_clf
            + h["rmxd_lambda"] * remix
            + h["cnt_lambda"] * (cnt_int + cnt_final)
            - h["disc_lambda"] * disc_loss
        )
        self.disc_opt.zero_grad()
        self.opt.zero_grad()
        gen_loss.backward()
        self.opt.step()
        return {
            "loss": gen_loss.detach(),
            "loss_clf_int": clf_int.detach(),
            "loss_clf_fin": clf_final.detach(),
            "loss_dmn": domain_clf.detach(),
            "loss_remix": remix.detach(),
            "loss_cnt": (cnt_int + cnt_final).detach(),
            "loss_disc": disc_loss.detach(),
        }

    def predict(self, x: Tensor) -> Tensor:
        return self.network(x)
