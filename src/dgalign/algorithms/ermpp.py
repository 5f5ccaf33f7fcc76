"""ERM++ (Teterwak et al., 2023) as in DomainBed: ERM with a linear-probing warm-up, an
optional LARS optimizer and a simple moving average (SMA) of the weights that makes the
predictions.

- The first `linear_steps` + 1 updates train the head only (`linear_lr`); afterwards the whole
  network trains (`lr`). Both optimizers are Adam, or LARS when `lars`.
- After every update the SMA network follows the trained one until `sma_start` updates have
  been made; from then on it is the running mean of the snapshots taken since (every entry of
  the state dict, BatchNorm statistics included, except the batch counters).
- When BatchNorm is not frozen (`freeze_bn` false), the SMA network's BatchNorm statistics are
  also updated on each training batch.
- `predict` uses the SMA network in eval mode.

DomainBed's ERM++ also lowers the learning rate on plateaus of the training-domain validation
loss (after `linear_steps`) with its separate `train_autolr.py` script, then retrains on the
full training data; that is a training mode, `dgalign train --autolr` (`dgalign.train.autolr`),
not part of this class.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dgalign.algorithms._common import concat
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.optimizers import LARS
from dgalign.algorithms.registry import register
from dgalign.hparams import LEARNING_RATE, HParam, boolean, const, integer, log_uniform

SMA_START = 600


@register
class ERMPlusPlus(FeaturizerClassifier):
    """min CE over the pooled domains: head only for `linear_steps` + 1 updates, then all
    weights; predictions from the running mean of the weights after `sma_start` updates."""

    DESCRIPTION = "ERM++: linear probing warm-up, optional LARS, moving-average predictions"
    PAPER = "Teterwak et al., 2023"
    HPARAMS = (
        HParam(
            "linear_lr",
            5e-5,
            log_uniform(-5, -3.5),
            "learning rate of the head warm-up",
            LEARNING_RATE,
        ),
        HParam(
            "linear_steps",
            500,
            const(500),
            "updates of the head alone before full training",
            integer(0),
        ),
        HParam("lars", False, const(False), "LARS instead of Adam", boolean()),
        HParam(
            "sma_start",
            SMA_START,
            const(SMA_START),
            "update from which the SMA averages",
            integer(0),
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
        self.linear_optimizer = self._optimizer(self.classifier.parameters(), "linear_lr")
        self.network_sma = copy.deepcopy(self.network)
        self.network_sma.requires_grad_(False)
        self.count_updates()
        self.register_buffer("sma_count", torch.tensor(0, dtype=torch.long))

    def _optimizer(self, params, lr_key: str) -> torch.optim.Optimizer:  # type: ignore[no-untyped-def]
        lr, wd = self.hparams[lr_key], self.hparams["weight_decay"]
        if self.hparams["lars"]:
            return LARS(params, lr=lr, weight_decay=wd)
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)

    def make_optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer(self.network.parameters(), "lr")

    @torch.no_grad()
    def update_sma(self) -> None:
        """Follow the network until `sma_start` updates, then average (module docstring)."""
        self.counted()
        averaging = self.updates >= int(self.hparams["sma_start"])
        if averaging:
            self.sma_count += 1
        n = self.sma_count.to(torch.get_default_dtype())
        source = self.network.state_dict()
        for name, target in self.network_sma.state_dict().items():
            if "num_batches_tracked" in name:
                continue
            value = source[name].detach()
            if averaging and target.is_floating_point():
                target.copy_((target * n + value) / (1.0 + n))
            else:
                target.copy_(value)

    def update(self, minibatches: Minibatches) -> Logs:
        linear = self.updates <= int(self.hparams["linear_steps"])
        optimizer = self.linear_optimizer if linear else self.optimizer
        all_x, all_y = concat(minibatches)
        loss = F.cross_entropy(self.network(all_x), all_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        self.update_sma()
        if not self.hparams["freeze_bn"]:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                self.network_sma.train()
                self.network_sma(all_x)
        self.network_sma.eval()
        return {"loss": loss.detach(), "linear_phase": float(linear)}

    def prediction_head(self) -> tuple[nn.Module, nn.Linear] | None:
        """The moving average's featurizer and head: `predict` goes through them."""
        featurizer, classifier = self.network_sma
        return (featurizer, classifier) if isinstance(classifier, nn.Linear) else None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.network_sma.eval()
        return self.network_sma(x)
