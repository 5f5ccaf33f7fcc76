"""The quantities the weight-space analyses evaluate at perturbed weights: the training loss
(on the original training data, or on original + FGMix mixes as the paper's Figs. 5 and 6) and
the test accuracy, plus helpers to read and write a network's weights as one vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgalign.algorithms import Algorithm
from dgalign.algorithms.fgmix import GRADIENT_INPUTS
from dgalign.algorithms.fgmix_policy import MixPlan, gather, plan_mixes
from dgalign.analysis.loading import LoadedRun, RunData, take
from dgalign.errors import ConfigError

CHUNK = 512


def weight_params(algorithm: Algorithm) -> list[nn.Parameter]:
    """The weights the analyses move: `algorithm.network` (featurizer + classifier) when the
    algorithm has one, else every parameter of the algorithm."""
    module = getattr(algorithm, "network", None)
    return list((module if isinstance(module, nn.Module) else algorithm).parameters())


def get_vector(algorithm: Algorithm) -> Tensor:
    return torch.nn.utils.parameters_to_vector(weight_params(algorithm)).detach().clone()


def set_vector(algorithm: Algorithm, vector: Tensor) -> None:
    torch.nn.utils.vector_to_parameters(vector, weight_params(algorithm))


@torch.no_grad()
def _codes(algorithm: Algorithm, x: Tensor) -> Tensor:
    return torch.cat([algorithm.featurizer(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])


@torch.no_grad()
def _logits(algorithm: Algorithm, x: Tensor) -> Tensor:
    return torch.cat([algorithm.predict(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])


@dataclass
class Objective:
    """Training data of the training envs (`xs`, `ys`), optional mixes (`plan`, `weights`
    fixed once, from a trained FGMix policy) and the test data."""

    xs: list[Tensor]
    ys: list[Tensor]
    test_x: Tensor
    test_y: Tensor
    plan: MixPlan | None = None
    weights: Tensor | None = None

    @property
    def mixed(self) -> bool:
        return self.plan is not None

    @torch.no_grad()
    def loss(self, algorithm: Algorithm) -> float:
        """Mean CE over the original training samples (and the mixes, each mix one sample)."""
        algorithm.eval()
        y = torch.cat(self.ys)
        if self.plan is None:
            return float(F.cross_entropy(_logits(algorithm, torch.cat(self.xs)), y))
        codes = [_codes(algorithm, x) for x in self.xs]
        mixed = (self.weights[..., None] * gather(codes, self.plan)).sum(1)
        all_codes = torch.cat([torch.cat(codes), mixed])
        logits = algorithm.classifier(all_codes)
        return float(F.cross_entropy(logits, torch.cat([y, self.plan.y])))

    @torch.no_grad()
    def test_accuracy(self, algorithm: Algorithm) -> float:
        algorithm.eval()
        return float((_logits(algorithm, self.test_x).argmax(1) == self.test_y).float().mean())


def build_objective(
    data: RunData,
    max_samples: int | None,
    mixes_from: LoadedRun | None = None,
    n_mix: int = 1000,
    seed: int = 0,
) -> Objective:
    """The first `max_samples` `in` rows of every training env and of the (first) test env;
    with `mixes_from` (an FGMix run) also `n_mix` mixes drawn (seeded) and weighted by its
    trained policy at its final weights."""
    xs, ys = zip(*[take(data.in_splits[i], max_samples) for i in data.train_envs], strict=True)
    test_x, test_y = take(data.in_splits[data.test_envs[0]], max_samples)
    objective = Objective(list(xs), list(ys), test_x, test_y)
    if mixes_from is not None:
        objective.plan, objective.weights = policy_mixes(
            mixes_from, objective.xs, objective.ys, n_mix, seed
        )
    return objective


@torch.no_grad()
def policy_mixes(
    run: LoadedRun, xs: list[Tensor], ys: list[Tensor], n_mix: int, seed: int = 0
) -> tuple[MixPlan, Tensor]:
    """`n_mix` class-aware mixes over the domains' samples and their weights l' [M, K] from
    the trained FGMix policy of `run` (variant-aware: Dirichlet, cosine or learned)."""
    algorithm = run.algorithm
    if not hasattr(algorithm, "mix_weights"):
        raise ConfigError(f"mixes need an FGMix run, got a {run.name} run ({run.source})")
    codes = [_codes(algorithm, x) for x in xs]
    present = [set(y.tolist()) for y in ys]
    need = len(ys) if algorithm.hparams["mix_missing"] == "skip" else 2
    if len(ys) < 2 or not any(sum(c in p for p in present) >= need for c in set().union(*present)):
        raise ConfigError("no class is shared by enough training domains: nothing to mix")
    cuda = sorted({y.device.index or 0 for y in ys if y.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):  # the caller's streams, CUDA's too, untouched
        torch.manual_seed(seed)
        plan = plan_mixes(list(ys), n_mix, algorithm.hparams["mix_missing"], algorithm.num_classes)
        assert plan is not None  # two or more domains
        if algorithm.variant in GRADIENT_INPUTS:
            grads = [
                algorithm.head_gradients(z, algorithm.classifier(z), y)
                for z, y in zip(codes, ys, strict=True)
            ]
            inputs = gather(grads, plan)
        else:
            inputs = gather(codes, plan)
        weights = algorithm.mix_weights(inputs, plan.mask).detach().to(codes[0].dtype)
    return plan, weights
