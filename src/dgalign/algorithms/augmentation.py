"""Augmentation by interpolation between domains: Mixup of inputs (DomainBed's inter-domain
version), ManifoldMixup of representations, and MixStyle of feature statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dgalign.algorithms._common import random_pairs, sample_beta
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, choice, interval, log_uniform, positive
from dgalign.networks.mixstyle import MixStyle as MixStyleLayer
from dgalign.networks.mixstyle import MixStyleFeaturizer


def mixed_targets(
    y_i: torch.Tensor, y_j: torch.Tensor, lam: float, num_classes: int, dtype: torch.dtype
) -> torch.Tensor:
    """Soft targets lam * onehot(y_i) + (1 - lam) * onehot(y_j); each row sums to 1."""
    one_i = F.one_hot(y_i, num_classes).to(dtype)
    one_j = F.one_hot(y_j, num_classes).to(dtype)
    return lam * one_i + (1 - lam) * one_j


class _PairMixup(FeaturizerClassifier):
    """Shared loop: for each random pair of domains (i, j), lam ~ Beta(alpha, alpha), loss
    CE(logits of the mix, lam * y_i + (1 - lam) * y_j); the sum over pairs divided by E."""

    HPARAMS = (
        HParam("mixup_alpha", 0.2, log_uniform(-1, 1), "Beta(alpha, alpha) of lambda", positive()),
    )

    def mixed_logits(self, x_i: torch.Tensor, x_j: torch.Tensor, lam: float) -> torch.Tensor:
        raise NotImplementedError

    def update(self, minibatches: Minibatches) -> Logs:
        objective = 0.0
        for (x_i, y_i), (x_j, y_j) in random_pairs(minibatches):
            lam = sample_beta(self.hparams["mixup_alpha"])
            logits = self.mixed_logits(x_i, x_j, lam)
            targets = mixed_targets(y_i, y_j, lam, self.num_classes, logits.dtype)
            objective = objective + F.cross_entropy(logits, targets)
        objective = objective / len(minibatches)
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": objective.detach()}


@register
class Mixup(_PairMixup):
    """min (1/E) sum_(i, j) [lam CE(f(x~), y_i) + (1 - lam) CE(f(x~), y_j)], x~ = lam x_i +
    (1 - lam) x_j, for random pairs of domains (i, j) and lam ~ Beta(alpha, alpha)."""

    DESCRIPTION = "Inter-domain mixup of inputs and labels"
    PAPER = "Yan et al., 2020"

    def mixed_logits(self, x_i: torch.Tensor, x_j: torch.Tensor, lam: float) -> torch.Tensor:
        return self.network(lam * x_i + (1 - lam) * x_j)


@register
class ManifoldMixup(_PairMixup):
    """As Mixup, mixing representations instead of inputs: h(lam f(x_i) + (1 - lam) f(x_j)).

    Choice: the mixing layer is the featurizer output (the representation the classifier
    reads), for every backbone, rather than a random hidden layer per step as in the paper;
    pairs are across domains as in DomainBed's Mixup, and `mixup_alpha` uses Mixup's range."""

    DESCRIPTION = "Inter-domain mixup of featurizer representations and labels"
    PAPER = "Verma et al., 2019"

    def mixed_logits(self, x_i: torch.Tensor, x_j: torch.Tensor, lam: float) -> torch.Tensor:
        z = self.featurizer(torch.cat([x_i, x_j]))
        z_i, z_j = z.split([len(x_i), len(x_j)])
        return self.classifier(lam * z_i + (1 - lam) * z_j)


@register
class MixStyle(FeaturizerClassifier):
    """ERM, min CE(h(f_MS(x)), y), where f_MS mixes per-channel feature statistics of random
    pairs of samples in the pooled batch after the featurizer's first two blocks (MNIST CNN:
    after the conv1 and conv2 blocks), mu~ = lam mu + (1 - lam) mu', sigma~ likewise, lam ~
    Beta(alpha, alpha), with probability p per layer and step; the identity at evaluation."""

    DESCRIPTION = "MixStyle: mix instance feature statistics across samples in early layers"
    PAPER = "Zhou et al., 2021"
    HPARAMS = (
        HParam(
            "mixstyle_p",
            0.5,
            choice([0.3, 0.5, 0.7]),
            "probability of mixing per layer",
            interval(0.0, 1.0),
        ),
        HParam(
            "mixstyle_alpha",
            0.1,
            choice([0.1, 0.2, 0.3, 0.4]),
            "Beta(alpha, alpha) of lambda",
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
        mix = MixStyleLayer(self.hparams["mixstyle_p"], self.hparams["mixstyle_alpha"])
        self.replace_featurizer(MixStyleFeaturizer(self.featurizer, mix))

    def update(self, minibatches: Minibatches) -> Logs:
        return {"loss": self.erm_step(minibatches).detach()}
