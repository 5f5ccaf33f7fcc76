"""Phase 2 of `dgalign train --autolr`: the full-data retrain (`dgalign.train.autolr`).

From the algorithm's initial weights and RNG state, train steps 0..`end_step` (phase 1's last)
on each training environment's `in` + `out` rows, with the minibatch streams of phase 1 (same
seed, same stream per environment). At each of phase 1's checkpoint steps: set the lr phase 1
set there, evaluate every whole environment (`in` + `out`, a test env without its `uda`
split) as `fd_env{i}_in_acc`, merge those and the logged means (`fd_loss`, ...) into phase 1's
record of that step, rewrite results.jsonl atomically, then save the checkpoint.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from dgalign.data.splits import InfiniteLoader, Subset
from dgalign.runs.directory import RunDirectory
from dgalign.train.autolr import AutoLR
from dgalign.train.evaluate import Evaluator
from dgalign.train.guards import check_finite_logs, check_finite_parameters, save_model
from dgalign.train.logs import LogWindow
from dgalign.train.state import save_checkpoint
from dgalign.utils.progress import progress_bar
from dgalign.utils.runtime import autocast


@dataclass
class RetrainData:
    """The splits phase 2 trains and evaluates on: `full[i]` is environment i's `in` + `out`."""

    full: list[Subset]
    train_envs: list[int]

    @classmethod
    def of(cls, in_splits: list[Subset], out_splits: list[Subset], train_envs: list[int]):
        full = [
            Subset(a.dataset, torch.cat([a.keys, b.keys]).tolist())
            for a, b in zip(in_splits, out_splits, strict=True)
        ]
        return cls(full, list(train_envs))


def retrain(
    autolr: AutoLR,
    data: RetrainData,
    *,
    config,
    dataset,
    hparams: dict[str, Any],
    records: list[dict[str, Any]],
    rundir: RunDirectory,
    checkpointed,
    start_step: int,
    tracking,
    progress: bool | None,
    bar_stream,
    device: torch.device,
) -> None:
    """Run (or resume at `start_step`) phase 2; see the module docstring. Starting it (phase 1
    over, `autolr.phase` still 1) resets the algorithm first."""
    algorithm, args = autolr.algorithm, config.as_args()
    if autolr.phase == 1:
        end = records[-1]["step"] if records else -1
        autolr.start_phase2(end)
        start_step = 0
        print(f"auto-lr: phase 1 ended at step {end}; retraining on the full training data")
    end = autolr.end_step
    assert end is not None
    by_step = {r["step"]: r for r in records}
    batch_size = int(hparams["batch_size"])
    augment = bool(hparams["data_augmentation"])
    loaders = [
        InfiniteLoader(data.full[i], batch_size, config.seed, i, device, augment=augment)
        for i in data.train_envs
    ]
    evaluator = Evaluator({f"fd_env{i}_in_acc": split for i, split in enumerate(data.full)}, device)
    checkpoint_freq = config.checkpoint_freq or dataset.CHECKPOINT_FREQ
    window = LogWindow()
    bar = progress_bar(
        total=end + 1,
        initial=min(start_step, end + 1),
        desc=f"{config.algorithm} on {config.dataset}, full-data retrain",
        file=bar_stream,
        progress=progress,
    )
    with bar:
        for step in range(start_step, end + 1):
            minibatches = [loader.batch(step) for loader in loaders]
            with autocast(device, config.precision):
                values = algorithm.update(minibatches)
            autolr.track()
            window.add(step, values)
            bar.update(1)
            if step % checkpoint_freq != 0 and step != end:
                continue
            check_finite_logs(window, records, rundir)
            check_finite_parameters(algorithm, step, records, rundir)
            fields = autolr.replay(step)
            fields.update({f"fd_{k}": v for k, v in window.means().items()})
            fields.update(evaluator.accuracies(algorithm))
            by_step[step].update(fields)
            rundir.write_records(records)
            save_checkpoint(rundir.checkpoint, checkpointed, step + 1, args, device)
            if config.save_model_every_checkpoint and not config.skip_model_save:
                save_model(rundir.path / f"model_fd_step{step}.pt", algorithm, dataset, args)
            tracking.log_record({"step": step, **fields})
            window.clear()
            tests = ", ".join(f"env{i} {fields[f'fd_env{i}_in_acc']:.3f}" for i in config.test_envs)
            tqdm.write(f"full-data step {step}: test {tests}", file=sys.stdout)
