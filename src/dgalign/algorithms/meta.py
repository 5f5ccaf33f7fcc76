"""Meta-learning: MLDG (first-order meta-train / meta-test split of the domains) and ARM
(adaptive risk minimization with a context network)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from itertools import cycle
from typing import Any

import torch
import torch.nn.functional as F
from torch import autograd

from dgalign.algorithms._common import Pair, concat, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import SMALL_IMAGES, HParam, choice, const, integer, log_uniform, nonnegative
from dgalign.networks.context import ContextNet


@register
class MLDG(FeaturizerClassifier):
    """theta <- Adam step on (1/E) sum_(i, j) [grad L_i(theta) + beta * grad L_j(theta')],
    theta' = one Adam step of L_i from theta (first-order: no second derivatives), over pairs of
    a meta-train domain i and a meta-test domain j.

    Deviation from DomainBed: with E domains at most E - 1 are meta-test, so at least one is
    meta-train (DomainBed's default `n_meta_test` = 2 with 2 training domains makes no pair and
    no update)."""

    DESCRIPTION = "Meta-learning domain generalization (first-order MAML over domain splits)"
    PAPER = "Li et al., 2018"
    HPARAMS = (
        HParam("mldg_beta", 1.0, log_uniform(-1, 1), "weight of the meta-test loss", nonnegative()),
        HParam(
            "n_meta_test", 2, choice([1, 2]), "number of meta-test domains per step", integer(1)
        ),
    )

    def meta_pairs(self, minibatches: Minibatches) -> list[Pair]:
        """Random (meta-train, meta-test) domain pairs, batches cut to the shorter length."""
        n = len(minibatches)
        n_test = max(1, min(int(self.hparams["n_meta_test"]), n - 1))
        perm = torch.randperm(n).tolist()
        pairs = []
        for i, j in zip(perm[: n - n_test], cycle(perm[n - n_test :])):
            (xi, yi), (xj, yj) = minibatches[i], minibatches[j]
            m = min(len(yi), len(yj))
            pairs.append(((xi[:m], yi[:m]), (xj[:m], yj[:m])))
        return pairs

    def meta_gradient(
        self, pairs: list[Pair], num_domains: int
    ) -> tuple[list[torch.Tensor], dict[str, float]]:
        """The first-order meta-gradient (one tensor per network parameter) and the losses."""
        params = list(self.network.parameters())
        total = [torch.zeros_like(p) for p in params]
        beta = float(self.hparams["mldg_beta"])
        train_loss = test_loss = 0.0
        for (xi, yi), (xj, yj) in pairs:
            inner = copy.deepcopy(self.network)
            inner_params = list(inner.parameters())
            inner_opt = torch.optim.Adam(
                inner_params, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
            )
            loss_i = F.cross_entropy(inner(xi), yi)
            inner_opt.zero_grad()
            loss_i.backward()
            for t, p in zip(total, inner_params, strict=True):
                if p.grad is not None:
                    t.add_(p.grad / num_domains)
            inner_opt.step()
            loss_j = F.cross_entropy(inner(xj), yj)
            grads_j = autograd.grad(loss_j, inner_params, allow_unused=True)
            for t, g in zip(total, grads_j, strict=True):
                if g is not None:
                    t.add_(beta * g / num_domains)
            train_loss = train_loss + loss_i.detach()
            test_loss = test_loss + loss_j.detach()
        stats = {
            "loss": (train_loss + beta * test_loss) / num_domains,
            "meta_train_loss": train_loss / max(len(pairs), 1),
            "meta_test_loss": test_loss / max(len(pairs), 1),
        }
        return total, stats

    def update(self, minibatches: Minibatches) -> Logs:
        grads, stats = self.meta_gradient(self.meta_pairs(minibatches), len(minibatches))
        self.optimizer.zero_grad()
        for p, g in zip(self.network.parameters(), grads, strict=True):
            p.grad = g
        self.optimizer.step()
        return stats


@register
class ARM(FeaturizerClassifier):
    """min CE(f([x, c(S)]), y), c(S) = mean over the support batch S of ContextNet(x') (one
    context channel), S = the sample's own domain minibatch; at test time, consecutive chunks of
    `batch_size` inputs (or the whole batch when it does not divide) form the support sets.

    Deviation from DomainBed: the context network is trained with the rest (DomainBed builds its
    optimizer before the context network, which then keeps its random initial weights; the
    ARM paper trains both)."""

    DESCRIPTION = "Adaptive risk minimization: a context network adapts the model per batch"
    PAPER = "Zhang et al., 2021"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            ContextNet(shape)  # raises the one-line ConfigError
        super().__init__((shape[0] + 1, *shape[1:]), num_classes, num_domains, hparams)
        self.input_shape = shape
        self.context_net = ContextNet(shape)
        self.support_size = int(self.hparams["batch_size"])
        self.optimizer = self.make_optimizer()

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        if dataset in SMALL_IMAGES:
            return []
        return [
            HParam(
                "batch_size",
                8,
                const(8),
                "batch size per domain (= support set size)",
                integer(1),
            )
        ]

    def make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.network.parameters())
        if "context_net" in self._modules:
            params += list(self.context_net.parameters())
        return torch.optim.Adam(
            params, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )

    def adapt(self, x: torch.Tensor, support_sizes: Sequence[int]) -> torch.Tensor:
        """Logits of `x`, whose rows form consecutive support sets of the given sizes."""
        context = self.context_net(x).split(list(support_sizes))
        context = torch.cat([c.mean(0, keepdim=True).expand_as(c) for c in context])
        return self.network(torch.cat([x, context], dim=1))

    def prediction_head(self) -> None:
        """None: the featurizer reads [x, context], not x."""
        return None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if n % self.support_size == 0:
            return self.adapt(x, [self.support_size] * (n // self.support_size))
        return self.adapt(x, [n])

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        loss = F.cross_entropy(self.adapt(all_x, sizes(minibatches)), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}
