"""Domain-adversarial feature alignment: DANN and conditional DANN (CDANN), DomainBed's
alternating schedule with separate generator and discriminator optimizers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import autograd, nn

from dgalign.algorithms._common import concat
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import (
    LEARNING_RATE,
    SMALL_IMAGES,
    HParam,
    choice,
    const,
    int_log_uniform,
    integer,
    interval,
    log_uniform,
    nonnegative,
)
from dgalign.networks import MLP


class _AdversarialBase(FeaturizerClassifier):
    """Featurizer f, classifier h, domain discriminator d (an MLP with the mlp_* sizes).

    Step t (counted from 1) is a discriminator step when t mod (1 + k) < k, k =
    `d_steps_per_g_step`, else a generator step:
      D: min_d  L_d = CE(d(u), domain) + grad_penalty * mean ||grad_u sum CE(d(u), domain)||^2
      G: min_{f,h} CE(h(f(x)), y) - lambda * L_d
    with u = f(x), plus a learned class embedding e(y) for the conditional variant (whose
    domain loss is also class-balanced)."""

    CONDITIONAL = False
    HPARAMS = (
        HParam("lambda", 1.0, log_uniform(-2, 2), "weight of the adversarial term", nonnegative()),
        HParam(
            "weight_decay_d", 0.0, log_uniform(-6, -2), "discriminator weight decay", nonnegative()
        ),
        HParam(
            "d_steps_per_g_step",
            1,
            int_log_uniform(2, 0, 3),
            "discriminator steps per generator step",
            integer(1),
        ),
        HParam(
            "grad_penalty",
            0.0,
            log_uniform(-2, 1),
            "discriminator input-gradient penalty",
            nonnegative(),
        ),
        HParam(
            "beta1",
            0.5,
            choice([0.0, 0.5]),
            "Adam beta1 of both optimizers",
            interval(0.0, 1.0, hi_open=True),
        ),
    )

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        if dataset in SMALL_IMAGES:
            lr_range, lr, wd = log_uniform(-4.5, -2.5), 1e-3, const(0.0)
        else:
            lr_range, lr, wd = log_uniform(-5, -3.5), 5e-5, log_uniform(-6, -2)
        return [
            *cls.HPARAMS,
            HParam(
                "lr_g",
                lr,
                lr_range,
                "generator (featurizer + classifier) learning rate",
                LEARNING_RATE,
            ),
            HParam("lr_d", lr, lr_range, "discriminator learning rate", LEARNING_RATE),
            HParam("weight_decay_g", 0.0, wd, "generator weight decay", nonnegative()),
        ]

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        hp = self.hparams
        del self.optimizer  # replaced by the generator and discriminator optimizers
        self.count_updates()
        n_features = self.featurizer.n_outputs
        self.discriminator = MLP(n_features, num_domains, hp)
        self.class_embeddings = nn.Embedding(num_classes, n_features)
        betas = (float(hp["beta1"]), 0.9)
        self.disc_opt = torch.optim.Adam(
            [*self.discriminator.parameters(), *self.class_embeddings.parameters()],
            lr=hp["lr_d"],
            weight_decay=hp["weight_decay_d"],
            betas=betas,
        )
        self.gen_opt = torch.optim.Adam(
            [*self.featurizer.parameters(), *self.classifier.parameters()],
            lr=hp["lr_g"],
            weight_decay=hp["weight_decay_g"],
            betas=betas,
        )

    def discriminator_loss(
        self, z: torch.Tensor, y: torch.Tensor, domains: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(domain loss including the gradient penalty, the gradient penalty alone)."""
        disc_input = z + self.class_embeddings(y) if self.CONDITIONAL else z
        disc_out = self.discriminator(disc_input)
        if self.CONDITIONAL:
            counts = F.one_hot(y, self.num_classes).sum(0).to(z.dtype)  # no sync, unlike bincount
            n_present = (counts > 0).sum().to(z.dtype)
            weights = 1.0 / (counts[y] * n_present)
            loss = (weights * F.cross_entropy(disc_out, domains, reduction="none")).sum()
        else:
            loss = F.cross_entropy(disc_out, domains)
        input_grad = autograd.grad(
            F.cross_entropy(disc_out, domains, reduction="sum"), [disc_input], create_graph=True
        )[0]
        grad_penalty = input_grad.pow(2).sum(dim=1).mean()
        return loss + self.hparams["grad_penalty"] * grad_penalty, grad_penalty

    def update(self, minibatches: Minibatches) -> Logs:
        self.counted()
        all_x, all_y = concat(minibatches)
        domains = torch.cat(
            [
                torch.full((len(y),), i, dtype=torch.long, device=y.device)
                for i, (_, y) in enumerate(minibatches)
            ]
        )
        d_steps = int(self.hparams["d_steps_per_g_step"])
        if self.updates % (1 + d_steps) < d_steps:
            with torch.no_grad():  # a discriminator step needs no featurizer gradient
                z = self.featurizer(all_x)
            disc_loss, grad_penalty = self.discriminator_loss(z.requires_grad_(), all_y, domains)
            self.disc_opt.zero_grad()
            disc_loss.backward()
            self.disc_opt.step()
            return {
                "loss": disc_loss.detach(),
                "disc_loss": disc_loss.detach(),
                "grad_penalty": grad_penalty.detach(),
            }
        z = self.featurizer(all_x)
        disc_loss, grad_penalty = self.discriminator_loss(z, all_y, domains)
        nll = F.cross_entropy(self.classifier(z), all_y)
        gen_loss = nll - self.hparams["lambda"] * disc_loss
        self.disc_opt.zero_grad()
        self.gen_opt.zero_grad()
        gen_loss.backward()
        self.gen_opt.step()
        return {
            "loss": gen_loss.detach(),
            "gen_loss": gen_loss.detach(),
            "nll": nll.detach(),
            "disc_loss": disc_loss.detach(),
            "grad_penalty": grad_penalty.detach(),
        }


@register
class DANN(_AdversarialBase):
    __doc__ = _AdversarialBase.__doc__
    DESCRIPTION = "Domain-adversarial neural networks (features that fool a domain classifier)"
    PAPER = "Ganin et al., 2016"


@register
class CDANN(_AdversarialBase):
    __doc__ = _AdversarialBase.__doc__
    CONDITIONAL = True
    DESCRIPTION = "Conditional DANN: class-conditional, class-balanced domain adversary"
    PAPER = "Li et al., 2018"
