"""Regularizers of the representation or the logits: RSC (self-challenging feature muting),
SelfReg (self-supervised contrastive regularization), SD (spectral decoupling)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import autograd, nn

from dgalign.algorithms._common import concat, sample_beta
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, interval, log_uniform, nonnegative, uniform

FRACTION = interval(0.0, 1.0)  # a share of features or samples


def keep_below_quantile(
    values: torch.Tensor, drop_fraction: float, dim: int | None
) -> torch.Tensor:
    """1.0 where `values` is below their (1 - drop_fraction) quantile along `dim` (all values
    when None; linear interpolation as NumPy's percentile), 0.0 elsewhere: drops about
    `drop_fraction` of the largest values."""
    q = torch.quantile(values.detach().double(), 1.0 - float(drop_fraction), dim=dim, keepdim=True)
    return values.detach().lt(q.to(values.dtype)).to(values.dtype)


@register
class RSC(FeaturizerClassifier):
    """min CE(h(f(x) * m), y): m mutes the features with the largest gradient of the true-class
    logit (top `rsc_f_drop_factor` per sample), but only for the samples whose true-class
    probability drops the most when muted (top `rsc_b_drop_factor` of the batch); the other
    samples keep all features."""

    DESCRIPTION = "Representation self-challenging: mute the most predictive features"
    PAPER = "Huang et al., 2020"
    HPARAMS = (
        HParam("rsc_f_drop_factor", 1 / 3, uniform(0, 0.5), "fraction of features muted", FRACTION),
        HParam(
            "rsc_b_drop_factor",
            1 / 3,
            uniform(0, 0.5),
            "fraction of samples challenged",
            FRACTION,
        ),
    )

    def feature_mask(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The {0, 1} mask on the features `z` [n, d] (built from `z`'s own graph)."""
        logits = self.classifier(z)
        one_hot = F.one_hot(y, self.num_classes).to(z.dtype)
        grads = autograd.grad((logits * one_hot).sum(), z, retain_graph=True)[0]
        mask_f = keep_below_quantile(grads, self.hparams["rsc_f_drop_factor"], dim=1)
        with torch.no_grad():
            muted = self.classifier(z * mask_f)
            change = (F.softmax(logits, 1) * one_hot).sum(1) - (F.softmax(muted, 1) * one_hot).sum(
                1
            )
        mask_b = keep_below_quantile(change, self.hparams["rsc_b_drop_factor"], dim=None)
        return torch.maximum(mask_f, mask_b.view(-1, 1))

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        mask = self.feature_mask(z, all_y)
        loss = F.cross_entropy(self.classifier(z * mask), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "muted_fraction": 1.0 - mask.mean().detach()}


def same_class_permutation(y: torch.Tensor) -> torch.Tensor:
    """Indices idx with y[idx] == y: a random permutation within each class."""
    idx = torch.arange(len(y), device=y.device)
    for c in torch.unique(y):
        members = (y == c).nonzero().view(-1)
        idx[members] = members[torch.randperm(len(members), device=y.device)]
    return idx


def selfreg_penalty(
    logits: torch.Tensor,
    features: torch.Tensor,
    projected: torch.Tensor,
    idx_a: torch.Tensor,
    idx_b: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """lam * (MSE(o, o[a]) + 0.3 MSE(z, p[a])) + (1 - lam) * (MSE(o, o~) + 0.3 MSE(z, p~)), with
    o logits, z features, p projected features, a and b same-class partners, and the mixed
    partners o~ = lam o[a] + (1 - lam) o[b], p~ = lam p[a] + (1 - lam) p[b]."""
    logits_mix = lam * logits[idx_a] + (1 - lam) * logits[idx_b]
    proj_mix = lam * projected[idx_a] + (1 - lam) * projected[idx_b]
    individual = F.mse_loss(logits, logits[idx_a]) + 0.3 * F.mse_loss(features, projected[idx_a])
    mixed = F.mse_loss(logits, logits_mix) + 0.3 * F.mse_loss(features, proj_mix)
    return lam * individual + (1 - lam) * mixed


@register
class SelfReg(FeaturizerClassifier):
    """min CE + min(CE, 1) * selfreg_penalty: pull each sample's logits and projected features
    toward those of random same-class samples and their mixup (lam ~ Beta(0.5, 0.5)).

    Deviation from DomainBed: the projection MLP is trained (DomainBed leaves it out of the
    optimizer, DomainBed issue #62; the SelfReg authors' own code trains it)."""

    DESCRIPTION = "Self-supervised contrastive regularization between same-class samples"
    PAPER = "Kim et al., 2021"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        d = self.featurizer.n_outputs
        hidden = d if d == 2048 else 2 * d
        self.projection = nn.Sequential(
            nn.Linear(d, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, d),
            nn.BatchNorm1d(d),
        )
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.network.parameters())
        if "projection" in self._modules:
            params += list(self.projection.parameters())
        return torch.optim.Adam(
            params, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        lam = sample_beta(0.5)
        idx_a, idx_b = same_class_permutation(all_y), same_class_permutation(all_y)
        features = self.featurizer(all_x)
        logits = self.classifier(features)
        penalty = selfreg_penalty(logits, features, self.projection(features), idx_a, idx_b, lam)
        nll = F.cross_entropy(logits, all_y)
        loss = nll + nll.detach().clamp(max=1.0) * penalty
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "nll": nll.detach(), "penalty": penalty.detach()}


@register
class SD(FeaturizerClassifier):
    """min CE + sd_reg * mean(logits^2) (spectral decoupling: an L2 penalty on the logits)."""

    DESCRIPTION = "Spectral decoupling: penalise the squared logits"
    PAPER = "Pezeshki et al., 2021"
    HPARAMS = (
        HParam(
            "sd_reg", 0.1, log_uniform(-5, -1), "weight of the squared-logit penalty", nonnegative()
        ),
    )

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        logits = self.predict(all_x)
        nll = F.cross_entropy(logits, all_y)
        penalty = logits.pow(2).mean()
        loss = nll + self.hparams["sd_reg"] * penalty
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "nll": nll.detach(), "penalty": penalty.detach()}
