"""CNSN (Tang et al., 2021): ERM with CrossNorm and SelfNorm after each block of the
featurizer (`dgalign.networks.crossnorm`), in the setting the FGMix paper compares against:
2-instance CrossNorm, one active CrossNorm position per step, applied with probability 0.5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, const, integer, interval
from dgalign.networks.crossnorm import CNSNFeaturizer


@register
class CNSN(FeaturizerClassifier):
    """min CE(h(f_CNSN(x)), y) over the pooled domains, f_CNSN the featurizer with CrossNorm
    (training only, one random position per step, probability `cnsn_p`) and SelfNorm after
    each block."""

    DESCRIPTION = "CrossNorm and SelfNorm: exchange and recalibrate channel statistics"
    PAPER = "Tang et al., 2021"
    HPARAMS = (
        HParam(
            "cnsn_p",
            0.5,
            const(0.5),
            "probability of CrossNorm at the active position",
            interval(0.0, 1.0),
        ),
        HParam("cnsn_active", 1, const(1), "CrossNorm positions active per step", integer(0)),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.replace_featurizer(
            CNSNFeaturizer(self.featurizer, self.hparams["cnsn_p"], self.hparams["cnsn_active"])
        )

    def update(self, minibatches: Minibatches) -> Logs:
        return {"loss": self.erm_step(minibatches).detach()}
