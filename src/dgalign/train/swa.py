"""Weight averaging (SWA as used for domain generalization: the moving-average model of
Arpit et al., 2021, "Ensemble of averages").

From step `start` on, after every update the averaged weights are the running mean of the
snapshots taken so far:

    theta_avg(t) = (1 / n) sum_{s = start}^{t} theta(s),   n = t - start + 1,
    computed incrementally as theta_avg <- theta_avg + (theta - theta_avg) / n.

Before `start` the averaged model simply follows the trained one (theta_avg = theta), so it can
be evaluated at every checkpoint. Every parameter of the algorithm module is averaged (so
`predict` of any algorithm works on the copy); buffers are copied from the trained model.
BatchNorm running statistics of an average are not the average of the statistics: when the
network has BatchNorm layers they are recomputed on training minibatches before evaluation
(`recompute_batchnorm`). The MNIST CNN uses GroupNorm and needs none of this.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from dgalign.train.state import ExtraStateView

SWA_START = 100  # Arpit et al. skip the first 100 iterations
CHECKPOINT_KEY = "_swa"  # reserved key of the checkpoint's `extra` dict


def has_batchnorm(module: nn.Module) -> bool:
    """Whether `module` contains a BatchNorm layer that tracks running statistics."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for m in module.modules()
    )


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Reset the running mean / variance of every BatchNorm layer of `model` and set them to the
    plain (cumulative, momentum None) average over the batches `inputs`, fed through
    `model.predict` (or `model(x)`). Only the BatchNorm layers are in training mode meanwhile
    (dropout stays off), and the torch RNG is left as it was, so training is not perturbed."""
    layers = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not layers:
        return
    was_training = model.training
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    forward = model.predict if hasattr(model, "predict") else model
    try:
        with torch.random.fork_rng(devices=[]):
            for x in inputs:
                forward(x)
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)


class WeightAverage:
    """The running mean of an algorithm's weights from step `start` on (see module docstring).

    `model` is a deep copy of the algorithm whose parameters hold the average; evaluate it like
    the algorithm itself. `state_dict` / `load_state_dict` are plain tensors and numbers, so
    they travel in a `weights_only` checkpoint."""

    def __init__(self, algorithm: nn.Module, start: int = SWA_START) -> None:
        if start < 0:
            raise ValueError(f"swa start must be >= 0, got {start}")
        self.start = int(start)
        self.count = 0
        self.model = copy.deepcopy(algorithm)
        self.model.requires_grad_(False)
        for name, value in list(vars(self.model).items()):
            if isinstance(value, torch.optim.Optimizer):
                setattr(self.model, name, None)  # the copy never trains; drop optimizer state

    @torch.no_grad()
    def update(self, algorithm: nn.Module, step: int) -> None:
        """Take the snapshot after the update of `step` (0-based)."""
        source = dict(algorithm.named_parameters())
        if step < self.start:
            for name, p in self.model.named_parameters():
                p.copy_(source[name])
        else:
            self.count += 1
            for name, p in self.model.named_parameters():
                p.add_(source[name].detach() - p, alpha=1.0 / self.count)
        targets = dict(self.model.named_buffers())
        for name, b in algorithm.named_buffers():
            targets[name].copy_(b)

    def prepare(self, inputs: Iterable[torch.Tensor]) -> nn.Module:
        """The averaged model ready for evaluation: BatchNorm statistics recomputed on
        `inputs` when it has BatchNorm layers (`inputs` is not consumed otherwise)."""
        if has_batchnorm(self.model):
            recompute_batchnorm(self.model, inputs)
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "count": self.count, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = int(state["start"])
        self.count = int(state["count"])
        self.model.load_state_dict(state["model"])


class CheckpointView(ExtraStateView):
    """What the checkpoint functions see when SWA is on: the algorithm, with the average's
    state stored under the reserved key `CHECKPOINT_KEY` of `extra_state` (so a checkpoint
    resumes the average exactly)."""

    def __init__(self, algorithm: nn.Module, average: WeightAverage) -> None:
        super().__init__(
            algorithm,
            CHECKPOINT_KEY,
            average,
            "the checkpoint holds no weight average although the run uses --swa; rerun "
            "with --restart-from-scratch to discard it and train from step 0",
        )
