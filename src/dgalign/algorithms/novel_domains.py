"""L2A-OT, learning to augment by optimal transport (Zhou et al., 2020): a conditional generator
G(x, d) maps source images to K novel domains (K = number of training domains) chosen to be far,
in optimal-transport distance, from the source domains and from each other, while keeping the
class (the classifier must still recognise them) and cycle-consistent; the classifier trains on
source and generated data.

Per update, with z = f(x) the featurizer's features (its weights are not changed by the
generator's step) and W the entropic optimal-transport cost between two sets of features
(`sinkhorn_cost`):

1. generator step (Adam, `l2aot_lr_g`) on
   - lambda_ot [mean_{k, s} W(z(G(x, novel k)), z(x_s)) + mean_{k < k'} W(z(G_k), z(G_k'))]
   + lambda_cycle mean |G(G(x_s, novel k), source s) - x_s|
   + lambda_cls CE(h(z(G(x, novel k))), y);
2. classifier step (featurizer + head): (CE(source) + CE(generated, detached)) / 2.

G's domain codes are the E source domains and the K novel ones (one-hot channels appended to
the input); G is residual, x + g(x, code). Where the paper is open, our choices: the OT ground
cost is the squared Euclidean distance of L2-normalised features of the classifier's own
featurizer (the paper uses the features of a separately trained domain classifier); the
generator is a small conv (or, for vector inputs, MLP) network; each novel domain takes every
source minibatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgalign.algorithms._common import concat
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import LEARNING_RATE, HParam, choice, const, log_uniform, nonnegative, positive

SINKHORN_STEPS = 50


def sinkhorn_cost(a: Tensor, b: Tensor, eps: float = 0.05, steps: int = SINKHORN_STEPS) -> Tensor:
    """<P, C> for the entropic optimal transport plan P between the uniform measures on the
    rows of `a` [n, d] and `b` [m, d], cost C_ij = ||a_i - b_j||^2, regularisation eps * mean(C)
    (log-domain Sinkhorn iterations; differentiable)."""
    cost = torch.cdist(a, b).pow(2)
    n, m = cost.shape
    reg = eps * cost.detach().mean().clamp_min(1e-12)
    log_mu = torch.full((n,), -torch.log(torch.tensor(float(n))), dtype=a.dtype, device=a.device)
    log_nu = torch.full((m,), -torch.log(torch.tensor(float(m))), dtype=a.dtype, device=a.device)
    f = torch.zeros(n, dtype=a.dtype, device=a.device)
    g = torch.zeros(m, dtype=a.dtype, device=a.device)
    for _ in range(steps):
        f = reg * (log_mu - torch.logsumexp((g[None, :] - cost) / reg, dim=1))
        g = reg * (log_nu - torch.logsumexp((f[:, None] - cost) / reg, dim=0))
    plan = torch.exp((f[:, None] + g[None, :] - cost) / reg)
    return (plan * cost).sum()


class DomainGenerator(nn.Module):
    """x + g([x, one-hot code]) for image inputs (3x3 convs, `width` channels) or vectors."""

    def __init__(self, input_shape: Sequence[int], n_codes: int, width: int = 16) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_codes = n_codes
        c = self.input_shape[0]
        if len(self.input_shape) == 3:
            self.net = nn.Sequential(
                nn.Conv2d(c + n_codes, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, c, 3, padding=1),
            )
        else:
            d = 1
            for s in self.input_shape:
                d *= s
            self.net = nn.Sequential(
                nn.Linear(d + n_codes, 4 * width), nn.ReLU(), nn.Linear(4 * width, d)
            )

    def forward(self, x: Tensor, code: int) -> Tensor:
        onehot = torch.zeros(len(x), self.n_codes, dtype=x.dtype, device=x.device)
        onehot[:, code] = 1.0
        if x.dim() == 4:
            maps = onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
            return x + self.net(torch.cat([x, maps], dim=1))
        flat = x.flatten(1)
        return x + self.net(torch.cat([flat, onehot], dim=1)).view_as(x)


@register
class L2AOT(FeaturizerClassifier):
    """min_classifier CE on source + generated data; the generator maximises the OT distance of
    its K novel domains to the sources and to each other, keeping class and cycle consistency
    (module docstring)."""

    DESCRIPTION = "L2A-OT: a generator of novel domains far from the sources in OT distance"
    PAPER = "Zhou et al., 2020"
    HPARAMS = (
        HParam(
            "l2aot_lambda_ot",
            1.0,
            log_uniform(-1, 1),
            "weight of the OT novelty terms",
            nonnegative(),
        ),
        HParam(
            "l2aot_lambda_cycle",
            10.0,
            choice([1.0, 10.0]),
            "weight of cycle consistency",
            nonnegative(),
        ),
        HParam(
            "l2aot_lambda_cls",
            1.0,
            const(1.0),
            "weight of the generator's class loss",
            nonnegative(),
        ),
        HParam(
            "l2aot_lr_g",
            1e-4,
            log_uniform(-4.5, -3),
            "Adam learning rate of the generator",
            LEARNING_RATE,
        ),
        HParam(
            "l2aot_sinkhorn_eps",
            0.05,
            const(0.05),
            "entropic regularisation / mean cost",
            positive(),
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
        self.n_novel = num_domains
        self.generator = DomainGenerator(input_shape, 2 * num_domains)
        self.generator_optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=self.hparams["l2aot_lr_g"], betas=(0.5, 0.999)
        )

    def _features(self, x: Tensor) -> Tensor:
        return F.normalize(self.featurizer(x), dim=1)

    def novelty(self, sources: list[Tensor], novel: list[Tensor]) -> Tensor:
        """mean_{k, s} W(novel_k, source_s) + mean_{k < k'} W(novel_k, novel_k')."""
        eps = float(self.hparams["l2aot_sinkhorn_eps"])
        to_sources = torch.stack([sinkhorn_cost(n, s, eps) for n in novel for s in sources])
        pairs = [
            sinkhorn_cost(novel[i], novel[j], eps)
            for i in range(len(novel))
            for j in range(i + 1, len(novel))
        ]
        between = torch.stack(pairs).mean() if pairs else to_sources.new_zeros(())
        return to_sources.mean() + between

    def generate(self, minibatches: Minibatches) -> list[Tensor]:
        """Novel domain k's images: G(x, novel k) of every source minibatch, concatenated."""
        all_x, _ = concat(minibatches)
        return [self.generator(all_x, self.num_domains + k) for k in range(self.n_novel)]

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        novel = self.generate(minibatches)
        z_sources = [self._features(x).detach() for x, _ in minibatches]
        z_novel = [self._features(x) for x in novel]
        ot = self.novelty(z_sources, z_novel)
        cycle = torch.stack(
            [
                (self.generator(g[start : start + len(x)], e) - x).abs().mean()
                for g in novel
                for e, (x, start) in enumerate(
                    zip([x for x, _ in minibatches], _starts(minibatches), strict=True)
                )
            ]
        ).mean()
        cls = torch.stack(
            [F.cross_entropy(self.classifier(self.featurizer(g)), all_y) for g in novel]
        ).mean()
        h = self.hparams
        gen_loss = (
            -h["l2aot_lambda_ot"] * ot
            + h["l2aot_lambda_cycle"] * cycle
            + h["l2aot_lambda_cls"] * cls
        )
        self.generator_optimizer.zero_grad()
        gen_loss.backward()
        self.generator_optimizer.step()

        with torch.no_grad():
            generated = self.generate(minibatches)
        x_gen = torch.cat(generated)
        y_gen = all_y.repeat(len(generated))
        loss = 0.5 * (
            F.cross_entropy(self.predict(all_x), all_y)
            + F.cross_entropy(self.predict(x_gen), y_gen)
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {
            "loss": loss.detach(),
            "gen_loss": gen_loss.detach(),
            "ot_novelty": ot.detach(),
            "cycle": cycle.detach(),
            "gen_cls": cls.detach(),
        }


def _starts(minibatches: Minibatches) -> list[int]:
    starts, total = [], 0
    for _, y in minibatches:
        starts.append(total)
        total += len(y)
    return starts
