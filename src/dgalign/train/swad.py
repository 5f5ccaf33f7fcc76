"""SWAD: dense stochastic weight averaging over the validation-loss valley (Cha et al., 2021),
for any algorithm (`dgalign train --swad`).

Between two evaluations the weights of every step are averaged into a *segment* (dense
averaging). At each evaluation the segment is closed with the training-domain validation loss
of the trained model at its end (the mean over training environments of the mean
cross-entropy on their `out` splits). The loss-valley rule (`LossValley`, the original's
default N_s = 3, N_e = 6, r = 0.3):

- converged: once the oldest of the last `n_converge` segments has the smallest loss of them,
  the valley starts at it; threshold = (1 + `tolerance_ratio`) x mean loss of those segments;
  earlier segments back to the last one above the threshold join the average too. Quirks of
  the original kept: the first segment after that one is skipped, the converging segment is
  counted again when the window reaches it, and it alone is the result if nothing joined;
- each later segment joins the average once the `n_tolerance` segments starting at it have a
  minimum loss below the threshold; when they do not, the valley is over (the original stops
  training there; here training goes on, so the run's records do not depend on `--swad`, and
  the average is frozen);
- at the end, the remaining segments join while the same test passes.

The SWAD model is the mean of its segments' averages (each segment weighs the same). Before it
is evaluated, its BatchNorm statistics are recomputed on `SWAD_BN_STEPS` training minibatches
when BatchNorm is not frozen (`freeze_bn` false), as the original does; the MNIST CNN and MLP
have none. When no valley was found the last segment is used (as the original).

All state (open segment, queues, valley average) is plain tensors and numbers, saved in the
run's checkpoint under `CHECKPOINT_KEY`, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dgalign.data.splits import InfiniteLoader, Subset, is_tensor_backed, iterate_split
from dgalign.train.evaluate import accuracy
from dgalign.train.state import ExtraStateView
from dgalign.train.swa import has_batchnorm, recompute_batchnorm

N_CONVERGE = 3
N_TOLERANCE = 6
TOLERANCE_RATIO = 0.3
SWAD_BN_STEPS = 500
CHECKPOINT_KEY = "_swad"

Weights = dict[str, torch.Tensor]


def trainable_state(module: nn.Module) -> Weights:
    """`module`'s parameters, detached (no copy; the averages copy them)."""
    return {k: v.detach() for k, v in module.named_parameters()}


@dataclass
class Segment:
    """The mean of the weights of steps `start`..`end` and the validation loss at `end`."""

    start: int
    end: int
    loss: float
    weights: Weights

    def state(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "loss": self.loss, "weights": self.weights}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Segment:
        return cls(int(state["start"]), int(state["end"]), float(state["loss"]), state["weights"])


@dataclass
class RunningMean:
    """theta_bar <- theta_bar + (theta - theta_bar) / n over snapshots `add`ed."""

    weights: Weights | None = None
    count: int = 0
    start: int = -1
    end: int = -1

    def add(self, weights: Weights, start: int, end: int) -> None:
        self.count += 1
        if self.weights is None:
            self.weights = {k: v.clone().double() for k, v in weights.items()}
            self.start = start
        else:
            for k, v in weights.items():
                self.weights[k].add_(v.double() - self.weights[k], alpha=1.0 / self.count)
        self.end = end

    def state(self) -> dict[str, Any]:
        return {"weights": self.weights, "count": self.count, "start": self.start, "end": self.end}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningMean:
        return cls(state["weights"], int(state["count"]), int(state["start"]), int(state["end"]))


@dataclass
class LossValley:
    """Cha et al.'s valley detection over closed segments (module docstring)."""

    n_converge: int = N_CONVERGE
    n_tolerance: int = N_TOLERANCE
    tolerance_ratio: float = TOLERANCE_RATIO
    converge_q: list[Segment] = field(default_factory=list)
    smooth_q: list[Segment] = field(default_factory=list)
    average: RunningMean = field(default_factory=RunningMean)
    converge_step: int | None = None
    threshold: float | None = None
    dead: bool = False
    fallback: Segment | None = None  # the converging segment, while nothing is averaged

    def _push(self, segment: Segment) -> None:
        self.converge_q = [*self.converge_q, segment][-self.n_converge :]
        self.smooth_q = [*self.smooth_q, segment][-self.n_tolerance :]

    def _smooth_loss(self, start: int = 0) -> float:
        return min(s.loss for s in self.smooth_q[start:])

    def update(self, segment: Segment) -> None:
        """Take the segment just closed."""
        if self.dead:
            return
        self._push(segment)
        if self.converge_step is None:
            if len(self.converge_q) < self.n_converge:
                return
            losses = [s.loss for s in self.converge_q]
            if min(range(len(losses)), key=losses.__getitem__) != 0:
                return
            first = self.converge_q[0]
            self.converge_step = first.end
            self.threshold = sum(losses) / len(losses) * (1.0 + self.tolerance_ratio)
            self.fallback = first
            self.average = RunningMean()
            if self.n_tolerance < self.n_converge:
                joined = self.converge_q[1 : 1 + self.n_converge - self.n_tolerance]
            else:
                earlier = self.smooth_q[: len(self.smooth_q) - self.n_converge + 1]
                begin = 0
                for i in reversed(range(len(earlier))):
                    if earlier[i].loss > self.threshold:
                        begin = i + 1
                        break
                joined = earlier[begin + 1 :]
            for s in joined:
                self.average.add(s.weights, s.start, s.end)
            return
        if self.smooth_q[0].end < self.converge_step:
            return
        if self._smooth_loss() > self.threshold:
            self.dead = True
            return
        head = self.smooth_q[0]
        self.average.add(head.weights, head.start, head.end)

    def finish(self) -> RunningMean:
        """The valley's average after the end-of-training pass (module docstring); the last
        segment when no valley was found."""
        if self.converge_step is None:
            last = self.converge_q[-1]
            mean = RunningMean()
            mean.add(last.weights, last.start, last.end)
            return mean
        average = copy.deepcopy(self.average)
        if not self.dead:
            queue = self.smooth_q[1:]
            while queue and min(s.loss for s in queue) <= self.threshold:
                head, queue = queue[0], queue[1:]
                average.add(head.weights, head.start, head.end)
        if average.count == 0 and self.fallback is not None:
            average.add(self.fallback.weights, self.fallback.start, self.fallback.end)
        return average

    def state(self) -> dict[str, Any]:
        return {
            "config": [self.n_converge, self.n_tolerance, self.tolerance_ratio],
            "converge_q": [s.state() for s in self.converge_q],
            "smooth_q": [s.state() for s in self.smooth_q],
            "average": self.average.state(),
            "converge_step": -1 if self.converge_step is None else self.converge_step,
            "threshold": math.nan if self.threshold is None else self.threshold,
            "dead": self.dead,
            "fallback": [] if self.fallback is None else [self.fallback.state()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LossValley:
        n_c, n_t, ratio = state["config"]
        step = int(state["converge_step"])
        threshold = float(state["threshold"])
        return cls(
            int(n_c),
            int(n_t),
            float(ratio),
            [Segment.from_state(s) for s in state["converge_q"]],
            [Segment.from_state(s) for s in state["smooth_q"]],
            RunningMean.from_state(state["average"]),
            None if step < 0 else step,
            None if math.isnan(threshold) else threshold,
            bool(state["dead"]),
            Segment.from_state(state["fallback"][0]) if state["fallback"] else None,
        )


@torch.no_grad()
def validation_loss(
    algorithm: nn.Module, splits: Iterable[Subset], device: torch.device, batch_size: int = 512
) -> float:
    """Mean over `splits` of the mean cross-entropy of `algorithm.predict` (eval mode)."""
    was_training = algorithm.training
    algorithm.eval()
    losses = []
    try:
        for split in splits:
            if len(split) == 0:
                continue
            size = batch_size if is_tensor_backed(split) else min(batch_size, 128)
            total = 0.0
            for x, y in iterate_split(split, size, device, None):
                x, y = x.to(device), y.to(device)
                total += float(F.cross_entropy(algorithm.predict(x), y, reduction="sum"))
            losses.append(total / len(split))
    finally:
        algorithm.train(was_training)
    return sum(losses) / len(losses) if losses else math.nan


class SWAD:
    """Dense segment averaging + `LossValley` for one run (module docstring)."""

    def __init__(self, algorithm: nn.Module, valley: LossValley | None = None) -> None:
        self.template = algorithm
        self.valley = valley or LossValley()
        self.segment = RunningMean()

    def update(self, algorithm: nn.Module, step: int) -> None:
        """Average the weights after the update of `step` into the open segment."""
        self.segment.add(trainable_state(algorithm), step, step)

    def close_segment(self, loss: float) -> None:
        """Close the open segment with the validation loss at its end and start a new one."""
        if self.segment.weights is None:
            return
        weights = {k: v.to("cpu", torch.float32) for k, v in self.segment.weights.items()}
        self.valley.update(Segment(self.segment.start, self.segment.end, loss, weights))
        self.segment = RunningMean()

    def final_model(self, algorithm: nn.Module) -> tuple[nn.Module, RunningMean]:
        """A copy of `algorithm` holding the SWAD weights, and the average they came from."""
        average = self.valley.finish()
        model = copy.deepcopy(algorithm)
        for name, value in list(vars(model).items()):
            if isinstance(value, torch.optim.Optimizer):
                setattr(model, name, None)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in (average.weights or {}).items():
                params[k].copy_(v.to(params[k].dtype))
        return model, average

    def state_dict(self) -> dict[str, Any]:
        return {"segment": self.segment.state(), "valley": self.valley.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.segment = RunningMean.from_state(state["segment"])
        self.valley = LossValley.from_state(state["valley"])


class SWADCheckpointView(ExtraStateView):
    """What the checkpoint functions see with `--swad`: `inner` (the algorithm, or SWA's view
    of it) with the SWAD state under the reserved key `CHECKPOINT_KEY` of `extra_state`."""

    def __init__(self, inner: Any, swad: SWAD) -> None:
        super().__init__(
            inner,
            CHECKPOINT_KEY,
            swad,
            "the checkpoint holds no SWAD state although the run uses --swad; delete "
            "checkpoint.pt to restart the run from step 0",
        )


def evaluate_swad(
    swad: SWAD,
    algorithm: nn.Module,
    hparams: dict[str, Any],
    loaders: list[InfiniteLoader],
    n_steps: int,
    in_splits: list[Subset],
    out_splits: list[Subset],
    device: torch.device,
) -> tuple[nn.Module, dict[str, float]]:
    """The SWAD model (BatchNorm statistics recomputed on the `SWAD_BN_STEPS` minibatches after
    training when BatchNorm is not frozen) and its record fields: `swad_env{i}_{in,out}_acc`,
    the averaged steps `swad_start_step`..`swad_end_step`, the number of segments
    `swad_n_averaged` and whether a valley was found (`swad_converged`, 1 or 0)."""
    model, average = swad.final_model(algorithm)
    model.to(device)
    if has_batchnorm(model) and not hparams.get("freeze_bn", True):
        steps = range(n_steps, n_steps + SWAD_BN_STEPS)
        recompute_batchnorm(model, (torch.cat([ld.batch(s)[0] for ld in loaders]) for s in steps))
    fields: dict[str, float] = {}
    for i, (in_, out) in enumerate(zip(in_splits, out_splits, strict=True)):
        fields[f"swad_env{i}_in_acc"] = accuracy(model, in_, device)
        fields[f"swad_env{i}_out_acc"] = accuracy(model, out, device)
    fields.update(
        swad_start_step=float(average.start),
        swad_end_step=float(average.end),
        swad_n_averaged=float(average.count),
        swad_converged=float(swad.valley.converge_step is not None),
    )
    return model, fields
