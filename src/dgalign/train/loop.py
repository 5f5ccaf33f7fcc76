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

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dgalign import algorithms, plugins
from dgalign.data import get_dataset_class
from dgalign.data.splits import InfiniteLoader, Subset, split_environment, split_uda
from dgalign.errors import ConfigError, DGAlignError, TrainingDiverged, os_error
from dgalign.hparam_grids import run_hparams
from dgalign.runs.directory import RunDirectory
from dgalign.runs.lock import run_lock
from dgalign.tracking import Tracking
from dgalign.train.adaptation import UnlabelledBatches
from dgalign.train.config import RunConfig
from dgalign.train.diagnostics import curvature_diagnostics
from dgalign.train.evaluate import Evaluator
from dgalign.train.logs import LogWindow
from dgalign.train.state import load_checkpoint, restore, resumed_records, save_checkpoint
from dgalign.train.swa import CheckpointView, WeightAverage
from dgalign.train.swad import SWAD, SWADCheckpointView, evaluate_swad, validation_loss
from dgalign.train.tee import tee_output
from dgalign.utils.io import atomic_torch_save, remove_with_digest
from dgalign.utils.progress import progress_bar
from dgalign.utils.runtime import (
    autocast,
    clock,
    configure_precision,
    resolve_device,
    seed_everything,
)

SWA_BN_STEPS = 10  # steps' minibatches (all training envs) that re-estimate BatchNorm statistics


@dataclass
class RunResult:
    """What a call of `run_training` did: `status` is "completed" or "already_done"."""

    status: str
    output_dir: str
    records: list[dict[str, Any]]


def run_training(
    config: RunConfig,
    progress: bool | None = None,
    loggers: Sequence[str] = (),
    restart_from_scratch: bool = False,
) -> RunResult:
    """Run (or resume) the training run described by `config`; see the module docstring.
    `loggers`: tracker backends (`dgalign.tracking`) that also get every record.
    `restart_from_scratch` first discards the directory's checkpoint, records and models."""
    tracking = Tracking(loggers)  # ConfigError now for an unknown or uninstalled backend
    dataset_cls = get_dataset_class(config.dataset)
    algorithm_cls = algorithms.get(config.algorithm)
    config.validate(len(dataset_cls.ENVIRONMENTS), dataset_cls.ENVIRONMENTS)
    hparams = run_hparams(config)
    configure_precision(config.precision, config.deterministic)  # before CUDA initialises
    device = resolve_device(config.device)
    rundir = RunDirectory(config.output_dir)
    rundir.create()
    with run_lock(rundir.path):
        loaded = plugins.records()
        extra = {"plugins": loaded} if loaded else None
        rundir.claim(config.identity(), restart=restart_from_scratch, extra=extra)
        if restart_from_scratch:
            rundir.discard_results()
        rundir.remove_stale_temporaries()
        if rundir.is_done():
            remove_with_digest(rundir.checkpoint)  # left by a kill between done and cleanup
            print(
                f"{rundir.path} holds a finished run (done marker present): nothing to do. "
                "Delete the directory, choose another --output-dir or pass "
                "--restart-from-scratch to run again.",
                file=sys.stderr,
            )
            return RunResult("already_done", str(rundir.path), rundir.read_records())
        try:
            with tee_output(rundir.out, rundir.err) as (real_stderr, err_file):
                try:
                    result = _train(
                        config,
                        hparams,
                        dataset_cls,
                        algorithm_cls,
                        device,
                        rundir,
                        progress,
                        real_stderr,
                        tracking,
                    )
                except BaseException as exc:
                    tracking.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
                    if isinstance(exc, DGAlignError):
                        print(f"error: {exc}", file=err_file)  # the caller reports it on stderr
                    raise
                tracking.finish("FINISHED")
                return result
        except OSError as exc:  # opening out.txt / err.txt; writes raise StorageError already
            raise os_error(exc, exc.filename or rundir.path) from None


def _train(
    config, hparams, dataset_cls, algorithm_cls, device, rundir, progress, bar_stream, tracking
) -> RunResult:
    args = config.as_args()
    seed_everything(config.seed)
    dataset = dataset_cls(config.data_dir)
    n_steps = config.steps or dataset.N_STEPS
    checkpoint_freq = config.checkpoint_freq or dataset.CHECKPOINT_FREQ

    in_splits: list[Subset] = []
    out_splits: list[Subset] = []
    uda_splits: dict[int, Subset] = {}
    for env_index, environment in enumerate(dataset):
        in_, out = split_environment(
            environment, env_index, config.trial_seed, config.holdout_fraction
        )
        if len(out) == 0 or len(in_) == 0:  # out holds int(n * fraction) examples
            n = len(environment)
            raise ConfigError(
                f"--holdout-fraction {config.holdout_fraction} leaves environment {env_index} "
                f"({dataset.ENVIRONMENTS[env_index]}, {n} examples) with an empty "
                f"{'out' if len(out) == 0 else 'in'} split; use a fraction of at least "
                f"{1 / max(n, 1):.3g}"
            )
        if env_index in config.test_envs and config.uda_holdout_fraction > 0:
            uda, in_ = split_uda(in_, config.uda_holdout_fraction, config.trial_seed, env_index)
            uda_splits[env_index] = uda
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

    unlabelled = None
    if config.task == "domain_adaptation":
        unlabelled = UnlabelledBatches(uda_splits, batch_size, config.seed, device, algorithm_cls)

    algorithm = algorithm_cls(dataset.input_shape, dataset.num_classes, len(train_envs), hparams)
    algorithm.to(device)
    average = WeightAverage(algorithm, config.swa_start) if config.swa else None
    checkpointed = algorithm if average is None else CheckpointView(algorithm, average)
    swad = SWAD(algorithm) if config.swad else None
    if swad is not None:
        checkpointed = SWADCheckpointView(checkpointed, swad)

    start_step, records = 0, []
    if rundir.checkpoint.exists():
        state = load_checkpoint(rundir.checkpoint)
        start_step = restore(checkpointed, state, rundir.checkpoint, device)
        records = resumed_records(
            rundir, start_step, rundir.read_records(), n_steps, checkpoint_freq
        )
        print(f"resuming {rundir.path} at step {start_step}")
    rundir.write_records(records)
    tracking.start_training(rundir.path, args, hparams, records)

    in_out = {}
    for i in range(len(dataset)):
        in_out[f"env{i}_in_acc"], in_out[f"env{i}_out_acc"] = in_splits[i], out_splits[i]
    evaluator = Evaluator(
        {**in_out, **{f"env{i}_uda_acc": uda for i, uda in uda_splits.items()}}, device
    )
    window = LogWindow()
    bar = progress_bar(
        total=n_steps,
        initial=start_step,
        desc=f"{config.algorithm} on {config.dataset}",
        file=bar_stream,
        progress=progress,
    )
    with bar:
        window_start = clock(device)
        for step in range(start_step, n_steps):
            values, minibatches = _step(
                algorithm, loaders, unlabelled, average, swad, step, device, config.precision
            )
            window.add(step, values)
            bar.update(1)
            if step % checkpoint_freq == 0 or step == n_steps - 1:
                step_time = (clock(device) - window_start) / len(window)
                check_finite_logs(window, records, rundir)
                check_finite_parameters(algorithm, step, records, rundir)
                record: dict[str, Any] = {"step": step, "epoch": step / steps_per_epoch}
                record.update(window.means())
                record["step_time"] = step_time
                record.update(curvature_diagnostics(algorithm, minibatches))
                record.update(evaluator.accuracies(algorithm))
                if swad is not None:
                    loss = validation_loss(algorithm, [out_splits[i] for i in train_envs], device)
                    swad.close_segment(loss)
                    record["swad_val_loss"] = loss
                if average is not None:
                    bn_batches = (
                        torch.cat([loader.batch(s)[0] for loader in loaders])
                        for s in range(max(0, step - SWA_BN_STEPS + 1), step + 1)
                    )
                    averaged = average.prepare(bn_batches)
                    accuracies = evaluator.accuracies(averaged)
                    record.update({f"swa_{k}": accuracies[k] for k in in_out})
                record["mem_gb"] = (
                    torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else 0.0
                )
                record["hparams"] = hparams
                record["args"] = args
                records.append(record)
                rundir.write_records(records)
                save_checkpoint(rundir.checkpoint, checkpointed, step + 1, args, device)
                if config.save_model_every_checkpoint and not config.skip_model_save:
                    _save_model(rundir.path / f"model_step{step}.pt", algorithm, dataset, args)
                tracking.log_record(record)  # after the record and checkpoint are on disk
                window.clear()
                summary = _summary(record, config.test_envs)
                bar.set_postfix_str(summary)
                tqdm.write(f"step {step}: {summary}", file=sys.stdout)
                window_start = clock(device)

    swad_model = None
    if swad is not None and records:
        swad_model, fields = evaluate_swad(
            swad, algorithm, hparams, loaders, n_steps, in_splits, out_splits, device
        )
        records[-1].update(fields)
        rundir.write_records(records)
    if not config.skip_model_save:
        saved = [(rundir.model, algorithm)]
        if average is not None:
            saved.append((rundir.model_swa, average.model))
        if swad_model is not None:
            saved.append((rundir.model_swad, swad_model))
        for path, model in saved:
            _save_model(path, model, dataset, args)
    rundir.mark_done()
    remove_with_digest(rundir.checkpoint)
    return RunResult("completed", str(rundir.path), records)


def _step(algorithm, loaders, unlabelled, average, swad, step: int, device, precision: str):
    """One training step: the training environments' minibatches of `step`, the update
    (under autocast for bf16: forward, loss and backward), then the weight averages. Returns
    the logged values as `update` made them (no device value is read here) and the
    minibatches."""
    minibatches = [loader.batch(step) for loader in loaders]
    with autocast(device, precision):
        if unlabelled is None:
            values = algorithm.update(minibatches)
        else:
            values = unlabelled.update(algorithm, minibatches, step)
    if average is not None:
        average.update(algorithm, step)
    if swad is not None:
        swad.update(algorithm, step)
    return values, minibatches


def check_finite_logs(window: LogWindow, records: list, rundir: RunDirectory) -> None:
    """TrainingDiverged naming the first step and logged value of the window that is NaN or
    infinite (read once, at the checkpoint)."""
    bad = window.first_non_finite()
    if bad is None:
        return
    last = records[-1]["step"] if records else None
    raise TrainingDiverged(
        f"{bad.key} became {bad.value} at step {bad.step}; the {len(records)} records up to "
        f"step {last} are kept in {rundir.results}; lower the learning rate "
        "(--hparams '{\"lr\": ...}') or the penalty weights"
    )


def check_finite_parameters(algorithm, step: int, records: list, rundir: RunDirectory) -> None:
    """TrainingDiverged when a parameter or floating buffer of `algorithm` is NaN or infinite
    after step `step`'s update (checked before its record, checkpoint or model is written)."""
    tensors = [t for t in algorithm.state_dict().values() if torch.is_floating_point(t)]
    if not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
        return
    last = records[-1]["step"] if records else None
    raise TrainingDiverged(
        f"the model's weights became NaN or infinite at step {step}; the {len(records)} "
        f"records up to step {last} are kept in {rundir.results}; lower the learning rate "
        "(--hparams '{\"lr\": ...}') or the penalty weights"
    )


def _save_model(path, model, dataset, args: dict[str, Any]) -> None:
    """Write `model` as DomainBed's model file: args, shapes, hparams and the state dict."""
    atomic_torch_save(
        path,
        {
            "args": args,
            "model_input_shape": list(dataset.input_shape),
            "model_num_classes": dataset.num_classes,
            "model_num_domains": model.num_domains,
            "model_hparams": model.hparams,
            "model_dict": model.state_dict(),
        },
        digest=True,
    )


def _summary(record: dict[str, Any], test_envs: list[int]) -> str:
    """A one-line summary: loss, mean training-env out accuracy, test-env accuracies."""
    parts = [f"loss {record['loss']:.4f}"] if "loss" in record else []
    n_envs = sum(1 for k in record if k.startswith("env") and k.endswith("_out_acc"))
    train = [record[f"env{i}_out_acc"] for i in range(n_envs) if i not in test_envs]
    parts.append(f"train-val acc {np.mean(train):.3f}")
    for i in test_envs:
        parts.append(f"test env{i} acc {record[f'env{i}_in_acc']:.3f}")
    return ", ".join(parts)
