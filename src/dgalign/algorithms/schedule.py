"""One penalty schedule for every penalised objective.

    objective_t = base + w_t * penalty,   w_t = before for t < anneal_iters, after from then on,
    and, with `rescale`, objective_t / w_t whenever w_t > 1.
DomainBed's annealing is (before 0 or 1, after lambda) with the optimizer re-created at the
switch (`reset_optimizer`); the IRM Colored MNIST protocol is (before 1, after W) with the
whole loss divided by W and no reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class PenaltySchedule:
    anneal_iters: int
    after: float
    before: float = 0.0
    reset_optimizer: bool = True
    rescale: bool = False

    def weight(self, step: int) -> float:
        """w_t for step t (0-based)."""
        return float(self.after) if step >= int(self.anneal_iters) else float(self.before)

    def resets_at(self, step: int) -> bool:
        """Whether the optimizer is re-created before step t."""
        return (
            self.reset_optimizer and int(self.anneal_iters) > 0 and step == int(self.anneal_iters)
        )

    def objective(self, base: Tensor, penalty: Tensor | None, step: int) -> Tensor:
        """base + w_t penalty (divided by w_t when rescaling and w_t > 1); base alone if there
        is no penalty."""
        if penalty is None:
            return base
        w = self.weight(step)
        loss = base + w * penalty
        return loss / w if self.rescale and w > 1.0 else loss
