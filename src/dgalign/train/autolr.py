"""ERM++'s automatic learning-rate schedule (DomainBed's `train_autolr`, `dgalign train --autolr`).

Phase 1 trains as usual on the training envs' `in` splits. At each checkpoint at step s with
s + 1 > `linear_steps` (the head-only warm-up of ERM++; 0 for algorithms without it), the
validation loss

    L = mean over training envs e of (1 / |out_e|) sum_{(x, y) in out_e} CE(predict(x), y)

(`predict` is the SMA network for ERM++) drives `PlateauSchedule`, ReduceLROnPlateau's rule:
mode min, patience 1, factor 0.1, relative threshold 1e-4. Its lr (starting at hparams `lr`)
rescales every optimizer of the algorithm: each param group's lr = its lr at creation x
lr / hparams `lr` (for ERM and ERM++'s full-network Adam this is the schedule's lr itself; an
optimizer the algorithm re-creates is rescaled after the update that made it). Phase 1 ends
at the checkpoint of the third decrease, or at the last step.

Phase 2 (`dgalign.train.autolr_retrain`) retrains from the same initial weights and RNG state
on each training env's `in` + `out` data, sets at each checkpoint the lr phase 1 set there and
stops at phase 1's last step; its accuracies on every whole environment (`in` + `out`, less a
test env's `uda` split), `fd_env{i}_in_acc`, are merged into phase 1's record of the same step.

Records: `autolr_lr`, the lr of the algorithm's `optimizer` (else its first optimizer) after
the checkpoint set it, i.e. the lr of the steps after it; `autolr_val_loss` where L was
observed; phase 2 adds `fd_autolr_lr` and `fd_loss` etc. (its logged values). The state
(phase, schedule, observed steps, the end) is checkpointed under `CHECKPOINT_KEY`.
"""

from __future__ import annotations

import copy
import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from dgalign.data.splits import Subset
from dgalign.errors import ConfigError, RunDirError
from dgalign.runs.directory import RESTART_HINT
from dgalign.train.state import (
    ExtraStateView,
    checkpoint_steps,
    damaged,
    resumed_records,
    rng_state,
    set_rng_state,
)
from dgalign.train.swad import validation_loss

PATIENCE = 1
FACTOR = 0.1
THRESHOLD = 1e-4  # relative: an improvement is loss < best * (1 - THRESHOLD)
MAX_DECREASES = 3
CHECKPOINT_KEY = "_autolr"
FULL_DATA_PREFIX = "fd_"


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


def optimizers(algorithm: torch.nn.Module) -> list[torch.optim.Optimizer]:
    """The optimizers among the algorithm's attributes, in definition order."""
    return [v for v in vars(algorithm).values() if isinstance(v, torch.optim.Optimizer)]


def current_lr(algorithm: torch.nn.Module) -> float:
    """The lr of the first param group of `algorithm.optimizer` (else its first optimizer)."""
    main = getattr(algorithm, "optimizer", None)
    if not isinstance(main, torch.optim.Optimizer):
        main = optimizers(algorithm)[0]
    return float(main.param_groups[0]["lr"])


class LRScale:
    """Keeps every optimizer of an algorithm at (lr at creation) x `factor`, remembering the
    factor each optimizer object already has (an optimizer not seen before has 1)."""

    def __init__(self) -> None:
        self._applied: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def apply(self, algorithm: torch.nn.Module, factor: float) -> None:
        for optimizer in optimizers(algorithm):
            applied = self._applied.get(optimizer, 1.0)
            if applied != factor:
                for group in optimizer.param_groups:
                    group["lr"] = group["lr"] / applied * factor
            self._applied[optimizer] = factor

    def assume(self, algorithm: torch.nn.Module, factor: float) -> None:
        """The optimizers hold `factor` already (loaded from a checkpoint, or reset)."""
        for optimizer in optimizers(algorithm):
            self._applied[optimizer] = factor


def check_config(config: Any, algorithm_cls: type, hparams: dict[str, Any]) -> None:
    """ConfigError for a run `--autolr` cannot train (before any data is loaded)."""
    for flag, on in (("--swa", config.swa), ("--swad", config.swad)):
        if on:
            raise ConfigError(
                f"--autolr cannot be combined with {flag}: the full-data retrain does not keep "
                "weight averages; run them separately"
            )
    if config.task != "domain_generalization":
        raise ConfigError(
            "--autolr supports --task domain_generalization only (the full-data retrain "
            "passes no unlabelled data)"
        )
    lr = hparams.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ConfigError(
            f"--autolr scales the learning rate `lr`, and {algorithm_cls.__name__}'s "
            f"hparams give {lr!r}; choose an algorithm with a positive lr"
        )


class AutoLR:
    """The schedule of one `--autolr` run over both phases (module docstring). Created right
    after the algorithm, whose initial weights, optimizer state and RNG state it keeps for
    phase 2."""

    def __init__(self, algorithm: torch.nn.Module, hparams: dict[str, Any], device) -> None:
        if not optimizers(algorithm):
            raise ConfigError(
                f"--autolr sets the learning rate of {type(algorithm).__name__}'s optimizers, "
                "and it has none; choose an algorithm that trains with an optimizer"
            )
        self.algorithm = algorithm
        self.device = device
        self.lr0 = float(hparams["lr"])
        self.warmup = int(hparams.get("linear_steps", 0))
        self.initial = copy.deepcopy(
            {
                "model": {k: v.detach().cpu() for k, v in algorithm.state_dict().items()},
                "extra": algorithm.extra_state(),
                "rng": rng_state(device),
            }
        )
        self.schedule = PlateauSchedule(self.lr0)
        self.steps: list[int] = []  # the checkpoint steps that observed a loss, with `lrs`
        self.phase = 1
        self.end_step: int | None = None
        self.replay_lr = self.lr0  # phase 2: the lr last set by the replay
        self.scale = LRScale()

    @property
    def phase1_over(self) -> bool:
        return self.phase == 2 or self.schedule.finished

    def observe(self, step: int, out_splits: list[Subset]) -> dict[str, float]:
        """Phase 1's checkpoint at `step`: observe L after the warm-up and set the lrs."""
        fields: dict[str, float] = {}
        if step + 1 > self.warmup:
            loss = validation_loss(self.algorithm, out_splits, self.device)
            fields["autolr_val_loss"] = loss
            self.steps.append(step)
            self.scale.apply(self.algorithm, self.schedule.observe(loss) / self.lr0)
        fields["autolr_lr"] = current_lr(self.algorithm)
        return fields

    @property
    def lr(self) -> float:
        """The lr in force: the schedule's (phase 1) or the replay's (phase 2)."""
        return self.replay_lr if self.phase == 2 else self.schedule.lr

    def track(self) -> None:
        """After each update: rescale an optimizer the update re-created."""
        self.scale.apply(self.algorithm, self.lr / self.lr0)

    def start_phase2(self, end_step: int) -> None:
        """Reset the algorithm and the RNGs to their state at creation; phase 1 ended at
        `end_step`."""
        self.algorithm.load_state_dict(self.initial["model"])
        self.algorithm.load_extra_state(copy.deepcopy(self.initial["extra"]))
        set_rng_state(self.initial["rng"], self.device)
        self.phase, self.end_step, self.replay_lr = 2, end_step, self.lr0
        self.scale.assume(self.algorithm, 1.0)

    def replay(self, step: int) -> dict[str, float]:
        """Phase 2's checkpoint at `step`: set the lr phase 1 set at this step."""
        if step in self.steps:
            self.replay_lr = self.schedule.lrs[self.steps.index(step)]
            self.scale.apply(self.algorithm, self.replay_lr / self.lr0)
        return {"fd_autolr_lr": current_lr(self.algorithm)}

    def resumed_records(
        self,
        rundir,
        start_step: int,
        records: list[dict[str, Any]],
        n_steps: int,
        checkpoint_freq: int,
    ) -> list[dict[str, Any]]:
        """The records a resume keeps: in phase 1, those `state.resumed_records` keeps,
        without retrain keys (from a retrain interrupted before its first checkpoint); in
        phase 2, all of phase 1's (checked as at its end), with the retrain's keys kept for
        steps before `start_step` (which must have them) and dropped after."""
        if self.phase == 1:
            kept = resumed_records(rundir, start_step, records, n_steps, checkpoint_freq)
            return [_without_full_data(r) for r in kept]
        end = self.end_step
        assert end is not None
        if start_step - 1 not in checkpoint_steps(end + 1, checkpoint_freq, end + 1):
            raise damaged(
                rundir.checkpoint,
                f"its retrain step {start_step} follows no checkpoint of 0..{end}",
            )
        kept = resumed_records(rundir, end + 1, records, n_steps, checkpoint_freq)
        for r in kept:
            if r["step"] >= start_step:
                for key in [k for k in r if k.startswith(FULL_DATA_PREFIX)]:
                    del r[key]
            elif "fd_autolr_lr" not in r:
                raise RunDirError(
                    f"{rundir.results} lacks the full-data accuracies of step {r['step']} "
                    f"(checkpoint {rundir.checkpoint.name} is at retrain step {start_step}); "
                    f"{RESTART_HINT}"
                )
        return kept

    def state_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "phase": self.phase,
            "end_step": -1 if self.end_step is None else self.end_step,
            "steps": list(self.steps),
            "replay_lr": self.replay_lr,
            "lr": s.lr,
            "lrs": list(s.lrs),
            "best": s.best,
            "bad_checks": s.bad_checks,
            "decreases": s.decreases,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase = int(state["phase"])
        self.end_step = None if int(state["end_step"]) < 0 else int(state["end_step"])
        self.steps = [int(s) for s in state["steps"]]
        self.replay_lr = float(state["replay_lr"])
        self.schedule = PlateauSchedule(
            float(state["lr"]),
            [float(v) for v in state["lrs"]],
            float(state["best"]),
            int(state["bad_checks"]),
            int(state["decreases"]),
        )
        self.scale.assume(self.algorithm, self.lr / self.lr0)

    def view(self, inner: Any) -> ExtraStateView:
        """What the checkpoint functions see: `inner` with this state under `CHECKPOINT_KEY`."""
        return ExtraStateView(
            inner,
            CHECKPOINT_KEY,
            self,
            "the checkpoint holds no auto-lr schedule although the run uses --autolr; rerun "
            "with --restart-from-scratch to discard it and train from step 0",
        )


def _without_full_data(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith(FULL_DATA_PREFIX)}
