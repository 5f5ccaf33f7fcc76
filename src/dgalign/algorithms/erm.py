"""Empirical risk minimization: the mean cross-entropy over all domains' samples."""

from __future__ import annotations

from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register


@register
class ERM(FeaturizerClassifier):
    """min_theta mean_{(x, y) in all domains} CE(f_theta(x), y)."""

    DESCRIPTION = "Empirical risk minimization over the pooled training domains"
    PAPER = "Vapnik, 1998"

    def update(self, minibatches: Minibatches) -> Logs:
        return {"loss": self.erm_step(minibatches).detach()}
