"""An example dgalign plugin: the algorithm `ShrunkERM` and the dataset `TwoBlobs`.

Installed (`pip install -e .`), dgalign finds it through the `dgalign.plugins` entry point;
otherwise name it with `dgalign --plugin dgalign_example_plugin ...` (on PYTHONPATH), by its
folder's path, or in `DGALIGN_PLUGINS`.
"""

from __future__ import annotations

import torch

from dgalign.algorithms import register
from dgalign.algorithms.erm import ERM
from dgalign.data import MultipleEnvironmentDataset, TensorEnvironment, register_dataset
from dgalign.hparams import HParam, log_uniform, nonnegative

__version__ = "0.1.0"


@register
class ShrunkERM(ERM):
    """ERM plus `shrink` * the mean squared logit (a logit-norm penalty)."""

    DESCRIPTION = "ERM with a penalty on the squared logits (example plugin)"
    PAPER = "example"
    HPARAMS = (
        HParam(
            "shrink",
            0.01,
            log_uniform(-3, -1),
            "weight of the squared-logit penalty",
            nonnegative(),
        ),
    )

    def update(self, minibatches):
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        logits = self.predict(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        penalty = logits.square().mean()
        objective = loss + self.hparams["shrink"] * penalty
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": objective.detach(), "nll": loss.detach(), "penalty": penalty.detach()}


@register_dataset
class TwoBlobs(MultipleEnvironmentDataset):
    """Two environments of 48 points in R^4 (2 classes): the class moves coordinate 0; the
    environments differ by a shift of coordinates 1-3."""

    ENVIRONMENTS = ("left", "right")
    N_STEPS = 50
    CHECKPOINT_FREQ = 10
    input_shape = (4,)
    num_classes = 2

    def __init__(self, root=None, test_envs=None, hparams=None):
        super().__init__()
        gen = torch.Generator().manual_seed(4)
        for shift in (-1.0, 1.0):
            y = torch.randint(0, 2, (48,), generator=gen)
            x = torch.randn(48, 4, generator=gen)
            x[:, 0] += 2.0 * y - 1.0
            x[:, 1:] += shift
            self.datasets.append(TensorEnvironment(x, y))
