"""Empirical risk minimization: the mean cross-entropy over all domains' samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register


@register
class ERM(FeaturizerClassifier):
    """min_theta mean_{(x, y) in all domains} CE(f_theta(x), y)."""

    DESCRIPTION = "Empirical risk minimization over the pooled training domains"
    PAPER = "Vapnik, 1998"

    def update(self, minibatches: Minibatches) -> Logs:
        all_x = torch.cat([x for x, _ in minibatches])
        all_y = torch.cat([y for _, y in minibatches])
        loss = F.cross_entropy(self.predict(all_x), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}
