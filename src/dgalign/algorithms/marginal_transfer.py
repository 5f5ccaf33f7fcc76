"""Marginal transfer learning (MTL): the classifier also sees an embedding of the input's
domain, the mean feature of its marginal distribution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import HParam, choice, interval
from dgalign.networks import build_classifier


@register
class MTL(FeaturizerClassifier):
    """min sum_e CE(h([f(x), mu_e]), y) over domains e, mu_e = a * mean_{x in batch_e} f(x) +
    (1 - a) * mu_e(previous step) (a = `mtl_ema`, DomainBed's convention: a weighs the current
    batch), kept per training domain in the `embeddings` buffer; at test time mu = the mean
    feature of the test batch.

    Deviation from DomainBed: DomainBed overwrites the embedding with standard normal noise
    (`.normal_()` after computing it, DomainBed issue #159), so its classifier never sees the
    domain embedding; here the embedding is used as the MTL paper intends."""

    DESCRIPTION = "Marginal transfer learning: condition the classifier on a domain embedding"
    PAPER = "Blanchard et al., 2021"
    HPARAMS = (
        HParam(
            "mtl_ema",
            0.99,
            choice([0.5, 0.9, 0.99, 1.0]),
            "weight of the current batch in the domain-embedding moving average",
            interval(0.0, 1.0),
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
        n_features = self.featurizer.n_outputs
        self.classifier = build_classifier(
            2 * n_features, num_classes, bool(self.hparams["nonlinear_classifier"])
        )
        del self.network  # the classifier's input is [features, embedding], not a chain
        self.register_buffer("embeddings", torch.zeros(num_domains, n_features))
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            [*self.featurizer.parameters(), *self.classifier.parameters()],
            lr=self.hparams["lr"],
            weight_decay=self.hparams["weight_decay"],
        )

    def embedding(self, features: torch.Tensor, env: int | None = None) -> torch.Tensor:
        """The domain embedding for `features` of one batch; updates domain `env`'s average."""
        embedding = features.mean(0)
        if env is not None:
            ema = float(self.hparams["mtl_ema"])
            embedding = ema * embedding + (1 - ema) * self.embeddings[env]
            self.embeddings[env] = embedding.detach()
        return embedding

    def prediction_head(self) -> None:
        """None: the head reads [f(x), embedding], not f(x)."""
        return None

    def predict(self, x: torch.Tensor, env: int | None = None) -> torch.Tensor:
        features = self.featurizer(x)
        embedding = self.embedding(features, env).expand_as(features)
        return self.classifier(torch.cat([features, embedding], dim=1))

    def update(self, minibatches: Minibatches) -> Logs:
        loss = sum(
            F.cross_entropy(self.predict(x, env), y) for env, (x, y) in enumerate(minibatches)
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}
