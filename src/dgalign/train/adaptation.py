"""Domain adaptation (`--task domain_adaptation`, DomainBed's semantics): every step, one
unlabelled minibatch (inputs only) from the `uda` split of each test environment goes to
`algorithm.update(minibatches, unlabeled)`.

DomainBed's `update(minibatches, unlabeled=None)` takes them in every algorithm, and most
ignore them. Here an algorithm takes them when its `update` has an `unlabeled` parameter; the
others train as in domain generalization, and the run says so once on stderr.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from dgalign.data.splits import InfiniteLoader, Subset

logger = logging.getLogger(__name__)

#: Added to the env index for the uda loaders' batch streams (the train envs use the index).
UDA_STREAM = 1000


def takes_unlabeled(algorithm_cls: type) -> bool:
    """Whether `algorithm_cls.update` has a parameter named `unlabeled`."""
    return "unlabeled" in inspect.signature(algorithm_cls.update).parameters


class UnlabelledBatches:
    """The uda loaders of the test environments and the update call that feeds them."""

    def __init__(
        self,
        splits: dict[int, Subset],
        batch_size: int,
        seed: int,
        device: torch.device,
        algorithm_cls: type,
    ) -> None:
        self.loaders = [
            InfiniteLoader(split, batch_size, seed, UDA_STREAM + env, device, augment=False)
            for env, split in sorted(splits.items())
        ]
        self.used = takes_unlabeled(algorithm_cls)
        if not self.used:
            logger.warning(
                f"{algorithm_cls.__name__}.update takes no `unlabeled` argument: it trains "
                "without the test environments' unlabelled data (as in DomainBed, where most "
                "algorithms ignore it)"
            )

    def update(self, algorithm: Any, minibatches: list, step: int) -> dict[str, float]:
        """`algorithm.update(minibatches, unlabeled=[x of each uda split])` for step `step`."""
        if not self.used:
            return algorithm.update(minibatches)
        unlabeled = [loader.batch(step)[0] for loader in self.loaders]
        return algorithm.update(minibatches, unlabeled=unlabeled)
