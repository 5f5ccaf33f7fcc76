"""Causality-inspired invariant representations: CausIRL-CORAL and CausIRL-MMD
(Chevalley et al., 2022), as in DomainBed.

Instead of aligning the feature distributions of every pair of domains (CORAL, MMD), CausIRL
aligns two random mixtures of the domains: each domain's minibatch is cut at a uniformly drawn
index s_e in [0, n_e); the heads z^e[:s_e] of all domains form one set, the tails z^e[s_e:] the
other, and the penalty is the discrepancy between the two sets (0 unless both hold at least two
samples; NaN is mapped to 0, as DomainBed). Objective: mean domain CE + mmd_gamma * penalty.
"""

from __future__ import annotations

import torch

from dgalign.algorithms._common import concat, domain_losses, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.feature_alignment import (
    MMD_GAMMA,
    alignment_step,
    coral_discrepancy,
    gaussian_mmd,
)
from dgalign.algorithms.registry import register


def split_mixtures(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two mixtures: cat_e z^e[:s_e] and cat_e z^e[s_e:], s_e ~ U{0, ..., n_e - 1}."""
    firsts, seconds = [], []
    for z in features:
        cut = int(torch.randint(0, len(z), ()))
        firsts.append(z[:cut])
        seconds.append(z[cut:])
    return torch.cat(firsts), torch.cat(seconds)


class _CausIRL(FeaturizerClassifier):
    """min (1/E) sum_e CE_e + mmd_gamma * D(mixture_1, mixture_2) (module docstring)."""

    HPARAMS = (MMD_GAMMA,)

    @staticmethod
    def discrepancy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, _ = concat(minibatches)
        z = self.featurizer(all_x)
        nll = torch.stack(domain_losses(self.classifier(z), minibatches)).mean()
        first, second = split_mixtures(list(z.split(sizes(minibatches))))
        if len(first) > 1 and len(second) > 1:
            penalty = torch.nan_to_num(self.discrepancy(first, second))
        else:
            penalty = nll.new_zeros(())
        return alignment_step(self, nll, penalty)


@register
class CausIRL_CORAL(_CausIRL):
    """min CE + mmd_gamma * CORAL(mixture_1, mixture_2) of two random domain mixtures."""

    DESCRIPTION = "Causal invariant representations: CORAL between two random domain mixtures"
    PAPER = "Chevalley et al., 2022"
    discrepancy = staticmethod(coral_discrepancy)


@register
class CausIRL_MMD(_CausIRL):
    """min CE + mmd_gamma * MMD(mixture_1, mixture_2) of two random domain mixtures."""

    DESCRIPTION = "Causal invariant representations: MMD between two random domain mixtures"
    PAPER = "Chevalley et al., 2022"
    discrepancy = staticmethod(gaussian_mmd)
