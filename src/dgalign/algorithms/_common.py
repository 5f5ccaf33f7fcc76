"""Helpers shared by the algorithm families: batching, domain pairs, Beta draws, per-domain
gradients, and the penalised-objective base class (IRM, V-REx, Fishr, the Hessian and moment
alignments).

Every random draw here uses the torch generator, so an algorithm's step is reproduced exactly
from the torch RNG state alone (DomainBed draws Beta variables with NumPy; the distribution is
the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import autograd

from dgalign.algorithms.base import FeaturizerClassifier, Minibatches
from dgalign.algorithms.schedule import PenaltySchedule
from dgalign.curvature.risk import domain_mean_losses

Pair = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def concat(minibatches: Minibatches) -> tuple[torch.Tensor, torch.Tensor]:
    """All domains' inputs and labels, concatenated in domain order."""
    return torch.cat([x for x, _ in minibatches]), torch.cat([y for _, y in minibatches])


def sizes(minibatches: Minibatches) -> list[int]:
    """The number of samples of each domain's minibatch."""
    return [len(y) for _, y in minibatches]


def domain_losses(logits: torch.Tensor, minibatches: Minibatches) -> list[torch.Tensor]:
    """Mean cross-entropy of each domain, from the logits of the concatenated batch."""
    labels = torch.cat([y for _, y in minibatches])
    return list(domain_mean_losses(logits, labels, sizes(minibatches)).unbind(-1))


def random_pairs(minibatches: Minibatches) -> list[Pair]:
    """DomainBed's random domain pairs: shuffle the domains, pair each with the next one in the
    shuffled order (cyclically), and cut both batches of a pair to the shorter length."""
    perm = torch.randperm(len(minibatches)).tolist()
    pairs = []
    for k, i in enumerate(perm):
        j = perm[(k + 1) % len(perm)]
        (xi, yi), (xj, yj) = minibatches[i], minibatches[j]
        n = min(len(yi), len(yj))
        pairs.append(((xi[:n], yi[:n]), (xj[:n], yj[:n])))
    return pairs


def sample_beta(alpha: float) -> float:
    """One draw of Beta(alpha, alpha) from the torch generator."""
    a = torch.tensor(float(alpha), dtype=torch.float64)
    return float(torch.distributions.Beta(a, a).sample())


def domain_gradients(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor], create_graph: bool = False
) -> list[list[torch.Tensor]]:
    """Gradient of each domain's loss w.r.t. `params` (zeros for unused parameters); the
    forward graph is kept so the losses can share one forward pass."""
    grads = []
    for loss in losses:
        g = autograd.grad(
            loss, params, retain_graph=True, create_graph=create_graph, allow_unused=True
        )
        grads.append(
            [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params, strict=True)]
        )
    return grads


def set_gradients(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    """Write the flat `vector` into the `.grad` of `params` (in order)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = vector[offset : offset + n].view_as(p).detach().clone()
        offset += n


class AnnealedPenalty(FeaturizerClassifier):
    """A featurizer-classifier trained on base + w_t * penalty under a `PenaltySchedule`
    (`penalty_schedule(hparams)`); the optimizer is re-created where the schedule says so.
    The step counter is `updates` (`Algorithm.count_updates`).

    The penalty is sum_k weight_k term_k: `head_penalties(z, weight, bias, y, sizes, hparams)`
    (a classmethod on a linear head's features, so a reproduction can run the same penalty on
    its own model) returns the logits and the unweighted terms, and `TERM_WEIGHTS` maps each
    term to the hyper-parameter that weighs it (None: weight 1, the schedule carries it).
    """

    TERM_WEIGHTS: ClassVar[dict[str, str | None]] = {"penalty": None}

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.count_updates()

    @classmethod
    def penalty_schedule(cls, hparams: dict[str, Any]) -> PenaltySchedule:
        """The schedule of the penalty weight w_t."""
        raise NotImplementedError

    @classmethod
    def head_penalties(
        cls,
        z: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        y: torch.Tensor,
        counts: Sequence[int],
        hparams: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [..., N, C] of the linear head (weight [..., C, d], bias [..., C]) on
        features z [..., N, d] of the domains (`counts` rows each) and the unweighted penalty
        terms [...]; leading dims are restarts trained together."""
        raise NotImplementedError

    @classmethod
    def term_weights(cls, hparams: dict[str, Any], num_classes: int) -> dict[str, float]:
        """The weight of each penalty term."""
        return {k: 1.0 if h is None else float(hparams[h]) for k, h in cls.TERM_WEIGHTS.items()}

    def weighted_penalty(self, terms: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """sum_k weight_k term_k (None without terms)."""
        if not terms:
            return None
        weights = self.term_weights(self.hparams, self.num_classes)
        return sum(weights[k] * v for k, v in terms.items())

    def schedule_weight(self) -> float:
        """w_t for this step; re-creates the optimizer where the schedule switches."""
        step = self.updates
        schedule = self.penalty_schedule(self.hparams)
        if schedule.resets_at(step):
            self.optimizer = self.make_optimizer()
        return schedule.weight(step)

    def step(self, objective: torch.Tensor) -> None:
        """One optimizer step on `objective`, then count it."""
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        self.counted()
