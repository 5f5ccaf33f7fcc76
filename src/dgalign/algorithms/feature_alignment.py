"""Feature-distribution alignment between every pair of domains: CORAL (means and
covariances) and MMD (multi-bandwidth Gaussian kernel)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dgalign.algorithms._common import concat, domain_losses, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, log_uniform, nonnegative

GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def coral_discrepancy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_j (mu_x - mu_y)_j^2 + mean_jk (C_x - C_y)_jk^2, C the unbiased covariance of the
    rows of x [n, d] and y [m, d]."""
    mean_x, mean_y = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    cent_x, cent_y = x - mean_x, y - mean_y
    cov_x = cent_x.t() @ cent_x / (len(x) - 1)
    cov_y = cent_y.t() @ cent_y / (len(y) - 1)
    return (mean_x - mean_y).pow(2).mean() + (cov_x - cov_y).pow(2).mean()


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[n, m] squared Euclidean distances, clamped below at 1e-30."""
    d = x.pow(2).sum(1, keepdim=True) - 2 * x @ y.t() + y.pow(2).sum(1).unsqueeze(0)
    return d.clamp_min(1e-30)


def gaussian_kernel(
    x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float] = GAMMAS
) -> torch.Tensor:
    """k(x, y) = sum_g exp(-g ||x - y||^2), [n, m]."""
    d = squared_distances(x, y)
    return sum(torch.exp(-g * d) for g in gammas)


def gaussian_mmd(
    x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float] = GAMMAS
) -> torch.Tensor:
    """Biased MMD^2 estimate: mean k(x, x') + mean k(y, y') - 2 mean k(x, y)."""
    return (
        gaussian_kernel(x, x, gammas).mean()
        + gaussian_kernel(y, y, gammas).mean()
        - 2 * gaussian_kernel(x, y, gammas).mean()
    )


MMD_GAMMA = HParam(
    "mmd_gamma", 1.0, log_uniform(-1, 1), "weight of the alignment penalty", nonnegative()
)


def alignment_step(
    algorithm: FeaturizerClassifier, nll: torch.Tensor, penalty: torch.Tensor
) -> Logs:
    """One optimizer step on nll + mmd_gamma * penalty; logs loss, nll and penalty."""
    loss = nll + algorithm.hparams["mmd_gamma"] * penalty
    algorithm.optimizer.zero_grad()
    loss.backward()
    algorithm.optimizer.step()
    return {"loss": loss.detach(), "nll": nll.detach(), "penalty": penalty.detach()}


class _PairwiseAlignment(FeaturizerClassifier):
    """min (1/E) sum_e CE_e + gamma * mean_{i<j} D(features_i, features_j)."""

    HPARAMS = (MMD_GAMMA,)

    @staticmethod
    def discrepancy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def feature_penalty(cls, features: list[torch.Tensor]) -> torch.Tensor:
        """mean_{i<j} D(features_i, features_j) (0 for one domain)."""
        pairs = [
            cls.discrepancy(features[i], features[j])
            for i in range(len(features))
            for j in range(i + 1, len(features))
        ]
        return torch.stack(pairs).mean() if pairs else features[0].new_zeros(())

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, _ = concat(minibatches)
        z = self.featurizer(all_x)
        features = list(z.split(sizes(minibatches)))
        logits = self.classifier(z)
        nll = torch.stack(domain_losses(logits, minibatches)).mean()
        penalty = self.feature_penalty(features)
        return alignment_step(self, nll, penalty)


@register
class CORAL(_PairwiseAlignment):
    """min (1/E) sum_e CE_e + gamma * mean_{i<j} [||mu_i - mu_j||^2 / d + ||C_i - C_j||_F^2 / d^2]
    over featurizer outputs (means and unbiased covariances)."""

    DESCRIPTION = "Deep CORAL: match feature means and covariances across domains"
    PAPER = "Sun & Saenko, 2016"

    @staticmethod
    def discrepancy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return coral_discrepancy(x, y)


@register
class MMD(_PairwiseAlignment):
    """min (1/E) sum_e CE_e + gamma * mean_{i<j} MMD^2_k(features_i, features_j), k a sum of
    Gaussian kernels with bandwidths g in {1e-3, ..., 1e3}."""

    DESCRIPTION = "MMD: match feature distributions with a multi-bandwidth Gaussian kernel"
    PAPER = "Li et al., 2018"

    @staticmethod
    def discrepancy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gaussian_mmd(x, y)
