"""The training loop of one run, with DomainBed's semantics.

Per step: one minibatch per training environment -> `algorithm.update` -> every
`checkpoint_freq` steps (and at the last step) evaluate every split of every environment,
append a record to results.jsonl and save a resumable checkpoint. Rerunning an unfinished run
resumes from its last checkpoint and produces the same records as an uninterrupted run
(apart from the measured `step_time`). With `swa` the running mean of the weights
(`dgalign.train.swa`) is evaluated next to the trained model (`swa_env{i}_{in,out}_acc`),
checkpointed with it and saved as model_swa.pt.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dgalign import algorithms
from dgalign.algorithms.spaces import resolve_hparams
from dgalign.data import get_dataset_class
from dgalign.data.splits import InfiniteLoader, Subset, split_environment
from dgalign.errors import ConfigError, DGAlignError, TrainingDiverged
from dgalign.train.config import RunConfig
from dgalign.train.diagnostics import curvature_diagnostics
from dgalign.train.evaluate import accuracy
from dgalign.train.lock import run_lock
from dgalign.train.rundir import RunDirectory
from dgalign.train.state import load_checkpoint, restore, save_checkpoint
from dgalign.train.swa import CheckpointView, WeightAverage
from dgalign.train.tee import tee_output
from dgalign.utils.io import atomic_torch_save

SWA_BN_STEPS = 10  # steps' minibatches (all training envs) that re-estimate BatchNorm statistics


@dataclass
class RunResult:
    """What a call of `run_training` did: `status` is "completed" or "already_done"."""

    status: str
    output_dir: str
    records: list[dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; `cuda` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"--device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA GPU is available; use auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (as DomainBed) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def run_training(config: RunConfig, progress: bool | None = None) -> RunResult:
    """Run (or resume) the training run described by `config`; see the module docstring."""
    dataset_cls = get_dataset_class(config.dataset)
    algorithm_cls = algorithms.get(config.algorithm)
    config.validate(len(dataset_cls.ENVIRONMENTS), dataset_cls.ENVIRONMENTS)
    hparams = resolve_hparams(
        config.algorithm, config.dataset, config.hparams_seed, config.trial_seed, config.hparams
    )
    device = resolve_device(config.device)
    rundir = RunDirectory(config.output_dir)
    rundir.claim(config.identity())
    with run_lock(rundir.path):
        rundir.remove_stale_temporaries()
        if rundir.is_done():
            print(
                f"{rundir.path} holds a finished run (done marker present): nothing to do. "
                "Delete the directory or choose another --output-dir to run again.",
                file=sys.stderr,
            )
            return RunResult("already_done", str(rundir.path), rundir.read_records())
        with tee_output(rundir.out, rundir.err) as (real_stderr, err_file):
            try:
                return _train(
                    config,
                    hparams,
                    dataset_cls,
                    algorithm_cls,
                    device,
                    rundir,
                    progress,
                    real_stderr,
                )
            except DGAlignError as exc:
                print(f"error: {exc}", file=err_file)  # the caller reports it on stderr
                raise


def _train(
    config, hparams, dataset_cls, algorithm_cls, device, rundir, progress, bar_stream
) -> RunResult:
    args = config.as_args()
    seed_everything(config.seed)
    dataset = dataset_cls(config.data_dir)
    n_steps = config.steps or dataset.N_STEPS
    checkpoint_freq = config.checkpoint_freq or dataset.CHECKPOINT_FREQ

    in_splits: list[Subset] = []
    out_splits: list[Subset] = []
    for env_index, environment in enumerate(dataset):
        in_, out = split_environment(
            environment, env_index, config.trial_seed, config.holdout_fraction
        )
        in_splits.append(in_)
        out_splits.append(out)
    train_envs = [i for i in range(len(dataset)) if i not in config.test_envs]
    batch_size = int(hparams["batch_size"])
    augment = bool(hparams["data_augmentation"])
    loaders = [
        InfiniteLoader(in_splits[i], batch_size, config.seed, i, device, augment=augment)
        for i in train_envs
    ]
    steps_per_epoch = min(len(in_splits[i]) / batch_size for i in train_envs)

    algorithm = algorithm_cls(dataset.input_shape, dataset.num_classes, len(train_envs), hparams)
    algorithm.to(device)
    average = WeightAverage(algorithm, config.swa_start) if config.swa else None
    checkpointed = algorithm if average is None else CheckpointView(algorithm, average)

    start_step, records = 0, []
    if rundir.checkpoint.exists():
        start_step = restore(checkpointed, load_checkpoint(rundir.checkpoint))
        records = [r for r in rundir.read_records() if r["step"] < start_step]
        print(f"resuming {rundir.path} at step {start_step}")
    rundir.write_records(records)

    window: dict[str, list[float]] = defaultdict(list)
    bar = tqdm(
        total=n_steps,
        initial=start_step,
        desc=f"{config.algorithm} on {config.dataset}",
        file=bar_stream,
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )
    with bar:
        for step in range(start_step, n_steps):
            step_start = time.time()
            minibatches = [loader.batch(step) for loader in loaders]
            values = algorithm.update(minibatches)
            if average is not None:
                average.update(algorithm, step)
            for key, value in values.items():
                if not math.isfinite(value):
                    last = records[-1]["step"] if records else None
                    raise TrainingDiverged(
                        f"{key} became {value} at step {step}; the {len(records)} records up to "
                        f"step {last} are kept in {rundir.results}; lower the learning rate "
                        "(--hparams '{\"lr\": ...}') or the penalty weights"
                    )
                window[key].append(value)
            window["step_time"].append(time.time() - step_start)
            bar.update(1)
            if step % checkpoint_freq == 0 or step == n_steps - 1:
                record: dict[str, Any] = {"step": step, "epoch": step / steps_per_epoch}
                record.update({k: float(np.mean(v)) for k, v in window.items()})
                record.update(curvature_diagnostics(algorithm, minibatches))
                for i in range(len(dataset)):
                    record[f"env{i}_in_acc"] = accuracy(algorithm, in_splits[i], device)
                    record[f"env{i}_out_acc"] = accuracy(algorithm, out_splits[i], device)
                if average is not None:
                    bn_batches = (
                        torch.cat([loader.batch(s)[0] for loader in loaders])
                        for s in range(max(0, step - SWA_BN_STEPS + 1), step + 1)
                    )
                    averaged = average.prepare(bn_batches)
                    for i in range(len(dataset)):
                        record[f"swa_env{i}_in_acc"] = accuracy(averaged, in_splits[i], device)
                        record[f"swa_env{i}_out_acc"] = accuracy(averaged, out_splits[i], device)
                record["mem_gb"] = (
                    torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else 0.0
                )
                record["hparams"] = hparams
                record["args"] = args
                records.append(record)
                rundir.write_records(records)
                save_checkpoint(rundir.checkpoint, checkpointed, step + 1, args)
                window.clear()
                summary = _summary(record, config.test_envs)
                bar.set_postfix_str(summary)
                tqdm.write(f"step {step}: {summary}", file=sys.stdout)

    if not config.skip_model_save:
        saved = [(rundir.model, algorithm)]
        if average is not None:
            saved.append((rundir.path / "model_swa.pt", average.model))
        for path, model in saved:
            atomic_torch_save(
                path,
                {
                    "args": args,
                    "model_input_shape": list(dataset.input_shape),
                    "model_num_classes": dataset.num_classes,
                    "model_num_domains": len(train_envs),
                    "model_hparams": hparams,
                    "model_dict": model.state_dict(),
                },
            )
    rundir.mark_done()
    rundir.checkpoint.unlink(missing_ok=True)
    return RunResult("completed", str(rundir.path), records)


def _summary(record: dict[str, Any], test_envs: list[int]) -> str:
    """A one-line summary: loss, mean training-env out accuracy, test-env accuracies."""
    parts = [f"loss {record['loss']:.4f}"] if "loss" in record else []
    n_envs = sum(1 for k in record if k.startswith("env") and k.endswith("_out_acc"))
    train = [record[f"env{i}_out_acc"] for i in range(n_envs) if i not in test_envs]
    parts.append(f"train-val acc {np.mean(train):.3f}")
    for i in test_envs:
        parts.append(f"test env{i} acc {record[f'env{i}_in_acc']:.3f}")
    return ", ".join(parts)
