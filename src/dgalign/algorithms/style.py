"""Style-agnostic networks (SagNet): a content head trained on style-randomized features, a
style head trained on content-randomized features, and a featurizer trained to defeat the style
head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dgalign.algorithms._common import concat
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, log_uniform, nonnegative
from dgalign.networks import build_classifier


def style_randomize(
    x: torch.Tensor,
    what: str = "style",
    alpha: torch.Tensor | None = None,
    perm: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """SagNet's randomization of per-sample statistics (mean and unbiased variance over the
    last axis of [n, d] features, or over the spatial positions of [n, c, h, w] maps).

    what="style": keep each sample's normalized content, give it the statistics
    alpha * own + (1 - alpha) * partner's (alpha ~ U(0, 1) per sample, partner = x[perm]);
    what="content": keep each sample's statistics, give it the partner's normalized content
    (detached)."""
    shape = x.shape
    n = shape[0]
    if alpha is None:
        alpha = torch.rand(n, 1, device=x.device, dtype=x.dtype)
    if perm is None:
        perm = torch.randperm(n, device=x.device)
    alpha = alpha.reshape(n, 1).to(x.dtype)
    if x.dim() == 4:
        x = x.reshape(n, shape[1], -1)
        alpha = alpha.unsqueeze(-1)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True)
    normalized = (x - mean) / (var + eps).sqrt()
    if what == "style":
        mean = alpha * mean + (1 - alpha) * mean[perm]
        var = alpha * var + (1 - alpha) * var[perm]
    elif what == "content":
        normalized = normalized[perm].detach()
    else:
        raise ValueError(f"what must be 'style' or 'content', got {what!r}")
    return (normalized * (var + eps).sqrt() + mean).reshape(shape)


@register
class SagNet(FeaturizerClassifier):
    """Three steps per update on the pooled batch, featurizer f, content head c, style head s:
    (1) min_{f,c} CE(c(SR(f(x))), y), SR = style randomization;
    (2) min_s CE(s(CR(f(x))), y), CR = content randomization;
    (3) min_f w_adv * -(1/C) sum_k log softmax_k(s(CR(f(x)))) (make the style head uniform).
    Predictions are c(f(x)). As DomainBed, the randomizations act on the featurizer output."""

    DESCRIPTION = "Style-agnostic networks: separate content from style with adversarial heads"
    PAPER = "Nam et al., 2021"
    HPARAMS = (
        HParam(
            "sag_w_adv", 0.1, log_uniform(-2, 1), "weight of the adversarial step", nonnegative()
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
        self.style_classifier = build_classifier(
            self.featurizer.n_outputs, num_classes, bool(self.hparams["nonlinear_classifier"])
        )
        del self.optimizer
        self.optimizer_f = self._adam(self.featurizer)
        self.optimizer_c = self._adam(self.classifier)
        self.optimizer_s = self._adam(self.style_classifier)

    def _adam(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            module.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)

        self.optimizer_f.zero_grad()
        self.optimizer_c.zero_grad()
        content_logits = self.classifier(style_randomize(self.featurizer(all_x), "style"))
        loss_c = F.cross_entropy(content_logits, all_y)
        loss_c.backward()
        self.optimizer_f.step()
        self.optimizer_c.step()

        self.optimizer_s.zero_grad()
        style_logits = self.style_classifier(style_randomize(self.featurizer(all_x), "content"))
        loss_s = F.cross_entropy(style_logits, all_y)
        loss_s.backward()
        self.optimizer_s.step()

        self.optimizer_f.zero_grad()
        style_logits = self.style_classifier(style_randomize(self.featurizer(all_x), "content"))
        loss_adv = -self.hparams["sag_w_adv"] * F.log_softmax(style_logits, dim=1).mean(1).mean()
        loss_adv.backward()
        self.optimizer_f.step()

        return {
            "loss": (loss_c + loss_s + loss_adv).detach(),
            "loss_c": loss_c.detach(),
            "loss_s": loss_s.detach(),
            "loss_adv": loss_adv.detach(),
        }
