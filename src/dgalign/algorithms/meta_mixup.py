"""MetaMixup (Mai et al., 2021): mixup whose interpolation ratio is meta-learned, here across
training domains (our reading for domain generalization; each choice is a hyper-parameter).

lambda = (1 + sigmoid(omega)) / 2 in (0.5, 1) is one learned scalar, the weight of the dominant
sample: over DomainBed's pairs, which hold both orders of a domain pair, mixup is symmetric
under lambda <-> 1 - lambda (lambda = 0.5 is then a stationary point of any objective in
lambda), so only the distance of lambda from 0.5 can be learned. Every update:

1. one training domain is drawn as meta-test domain; the others form random cross-domain
   pairs (as DomainBed's Mixup; with a single other domain, it is paired with a shuffle of
   itself), and L_mix(theta, lambda) = mean over pairs of lambda CE(f(x~), y_i) +
   (1 - lambda) CE(f(x~), y_j), x~ = lambda x_i + (1 - lambda) x_j;
2. a virtual SGD step theta' = theta - `metamixup_inner_lr` * grad_theta L_mix, kept
   differentiable in lambda;
3. omega takes an Adam step (`metamixup_lambda_lr`) on the meta-test domain's cross-entropy at
   theta' (a second-order gradient through step 2);
4. theta takes the algorithm's Adam step on L_mix over pairs of all domains with the new
   lambda.

With one training domain, step 3 is skipped (there is no held-out domain).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, autograd, nn
from torch.func import functional_call

from dgalign.algorithms._common import random_pairs
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import LEARNING_RATE, HParam, choice, interval, log_uniform, positive, uniform


def mixup_loss(network: nn.Module, pairs: list, lam: Tensor, params: dict | None = None) -> Tensor:
    """mean over pairs of lam CE(f(x~), y_i) + (1 - lam) CE(f(x~), y_j)."""
    total = lam.new_zeros(())
    for (xi, yi), (xj, yj) in pairs:
        x = lam * xi + (1 - lam) * xj
        out = network(x) if params is None else functional_call(network, params, (x,))
        total = total + lam * F.cross_entropy(out, yi) + (1 - lam) * F.cross_entropy(out, yj)
    return total / len(pairs)


def _self_pairs(minibatch: tuple[Tensor, Tensor]) -> list:
    x, y = minibatch
    perm = torch.randperm(len(y), device=y.device)
    return [((x, y), (x[perm], y[perm]))]


@register
class MetaMixup(FeaturizerClassifier):
    """min_theta L_mix(theta, lambda), lambda = (1 + sigmoid(omega)) / 2 meta-learned on a
    held-out training domain after a virtual step (module docstring)."""

    DESCRIPTION = "MetaMixup: mixup with a meta-learned interpolation ratio"
    PAPER = "Mai et al., 2021"
    HPARAMS = (
        HParam(
            "metamixup_init",
            0.75,
            uniform(0.6, 0.95),
            "initial lambda, in (0.5, 1)",
            interval(0.5, 1.0, lo_open=True, hi_open=True),
        ),
        HParam(
            "metamixup_inner_lr",
            0.1,
            choice([0.01, 0.1, 1.0]),
            "step size of the virtual step",
            positive(),
        ),
        HParam(
            "metamixup_lambda_lr",
            1e-2,
            log_uniform(-3, -1),
            "Adam learning rate of omega",
            LEARNING_RATE,
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
        init = float(self.hparams["metamixup_init"])
        self.omega = nn.Parameter(torch.logit(torch.tensor(2.0 * init - 1.0)))
        self.lambda_optimizer = torch.optim.Adam(
            [self.omega], lr=self.hparams["metamixup_lambda_lr"]
        )

    @property
    def lam(self) -> Tensor:
        """(1 + sigmoid(omega)) / 2."""
        return 0.5 * (1.0 + torch.sigmoid(self.omega))

    def meta_step(self, minibatches: Minibatches) -> torch.Tensor:
        """Steps 1-3 of the module docstring; returns the meta-test loss at theta'."""
        test = int(torch.randint(len(minibatches), ()))
        rest = [mb for i, mb in enumerate(minibatches) if i != test]
        pairs = random_pairs(rest) if len(rest) > 1 else _self_pairs(rest[0])
        names = [n for n, p in self.network.named_parameters() if p.requires_grad]
        params = [dict(self.network.named_parameters())[n] for n in names]
        inner = mixup_loss(self.network, pairs, self.lam)
        grads = autograd.grad(inner, params, create_graph=True, allow_unused=True)
        lr = float(self.hparams["metamixup_inner_lr"])
        virtual = {
            n: p if g is None else p - lr * g for n, p, g in zip(names, params, grads, strict=True)
        }
        x, y = minibatches[test]
        meta = F.cross_entropy(functional_call(self.network, virtual, (x,)), y)
        (grad_omega,) = autograd.grad(meta, [self.omega])
        self.lambda_optimizer.zero_grad()
        self.omega.grad = grad_omega
        self.lambda_optimizer.step()
        return meta.detach()

    def update(self, minibatches: Minibatches) -> Logs:
        logs: dict[str, float] = {}
        if len(minibatches) > 1:
            logs["meta_loss"] = self.meta_step(minibatches)
        pairs = random_pairs(minibatches) if len(minibatches) > 1 else _self_pairs(minibatches[0])
        loss = mixup_loss(self.network, pairs, self.lam.detach())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "lambda": self.lam.detach(), **logs}
