"""ERM++'s automatic learning-rate schedule (DomainBed's `train_autolr`), the decision part.

Phase 1 (`PlateauSchedule.observe`): at each checkpoint after the head-only warm-up, the
validation loss (mean over the training envs of the SMA network's cross-entropy on their
`out` splits) drives a reduce-on-plateau rule: mode min, patience 1, factor 0.1, relative
threshold 1e-4. The lr in force after each checkpoint is appended to `lrs`; phase 1 ends at
the third decrease. Phase 2 (`replay`) sets those lrs, checkpoint by checkpoint, while
retraining on the training envs' full data, and stops where phase 1 stopped.

Not yet wired into `dgalign.train.loop` (no `--autolr` flag): see docs/parity.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

PATIENCE = 1
FACTOR = 0.1
THRESHOLD = 1e-4  # relative: an improvement is loss < best * (1 - THRESHOLD)
MAX_DECREASES = 3


@dataclass
class PlateauSchedule:
    """The phase-1 rule; `lr` is the current learning rate, `lrs` the lr after each
    observed checkpoint, `finished` True once the lr was lowered `MAX_DECREASES` times."""

    lr: float
    lrs: list[float] = field(default_factory=list)
    best: float = math.inf
    bad_checks: int = 0
    decreases: int = 0

    @property
    def finished(self) -> bool:
        return self.decreases >= MAX_DECREASES

    def observe(self, val_loss: float) -> float:
        """Record one checkpoint's validation loss; the lr to train with from now on."""
        if val_loss < self.best * (1 - THRESHOLD):
            self.best, self.bad_checks = val_loss, 0
        else:
            self.bad_checks += 1
        if self.bad_checks > PATIENCE:
            self.lr *= FACTOR
            self.bad_checks = 0
            self.decreases += 1
        self.lrs.append(self.lr)
        return self.lr


def replay(lrs: list[float]) -> Iterator[float]:
    """Phase 2: the lrs of phase 1's checkpoints, in order (the retrain stops after the last)."""
    yield from lrs
