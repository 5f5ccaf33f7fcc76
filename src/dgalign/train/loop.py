"""The training loop of one run, with DomainBed's semantics.

Per step: one minibatch per training environment -> `algorithm.update` -> every
`checkpoint_freq` steps (and at the last step) evaluate every split of every environment,
append a record to results.jsonl and save a resumable checkpoint. Rerunning an unfinished run
resumes from its last checkpoint and produces the same records as an uninterrupted run
(apart from the measured `step_time`). With `swa` the running mean of the weights
(`dgalign.train.swa`) is evaluated next to the trained model (`swa_env{i}_{in,out}_acc`),
checkpointed with it and saved as model_swa.pt. With `autolr` the checkpoints of this loop
also run ERM++'s plateau lr schedule, which can end it early, and a full-data retrain follows
(`dgalign.train.autolr`, `dgalign.train.autolr_retrain`); model.pt is the retrained model.
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
from dgalign.errors import ConfigError, DGAlignError, os_error
from dgalign.hparam_grids import run_hparams
from dgalign.runs.directory import RunDirectory
from dgalign.runs.lock import run_lock
from dgalign.tracking import Tracking
from dgalign.train import autolr as auto_lr
from dgalign.train.adaptation import UnlabelledBatches
from dgalign.train.autolr_retrain import RetrainData, retrain
from dgalign.train.config import RunConfig
from dgalign.train.diagnostics import curvature_diagnostics
from dgalign.train.evaluate import Evaluator
from dgalign.train.guards import check_finite_logs, check_finite_parameters, save_model
from dgalign.train.logs import LogWindow
from dgalign.train.state import load_checkpoint, restore, resumed_records, save_checkpoint
from dgalign.train.swa import CheckpointView, WeightAverage
from dgalign.train.swad import SWAD, SWADCheckpointView, evaluate_swad, validation_loss
from dgalign.train.tee import tee_output
from dgalign.utils.io import remove_with_digest
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
    if config.autolr:
        auto_lr.check_config(config, algorithm_cls, hparams)
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
    autolr = auto_lr.AutoLR(algorithm, hparams, device) if config.autolr else None
    if autolr is not None:
        checkpointed = autolr.view(checkpointed)

    start_step, records = 0, []
    if rundir.checkpoint.exists():
        state = load_checkpoint(rundir.checkpoint)
        start_step = restore(checkpointed, state, rundir.checkpoint, device)
        found, keep = rundir.read_records(), (n_steps, checkpoint_freq)
        if autolr is None:
            records = resumed_records(rundir, start_step, found, *keep)
        else:
            records = autolr.resumed_records(rundir, start_step, found, *keep)
        phase = " of the full-data retrain" if autolr is not None and autolr.phase == 2 else ""
        print(f"resuming {rundir.path} at step {start_step}{phase}")
    rundir.write_records(records)
    tracking.start_training(rundir.path, args, hparams, records)

    in_out = {}
    for i in range(len(dataset)):
        in_out[f"env{i}_in_acc"], in_out[f"env{i}_out_acc"] = in_splits[i], out_splits[i]
    evaluator = Evaluator(
        {**in_out, **{f"env{i}_uda_acc": uda for i, uda in uda_splits.items()}}, device
    )
    window = LogWindow()
    first = n_steps if autolr is not None and autolr.phase1_over else start_step
    bar = progress_bar(
        total=n_steps,
        initial=first,
        desc=f"{config.algorithm} on {config.dataset}",
        file=bar_stream,
        progress=progress,
    )
    with bar:
        window_start = clock(device)
        for step in range(first, n_steps):
            values, minibatches = _step(
                algorithm, loaders, unlabelled, average, swad, step, device, config.precision
            )
            if autolr is not None:
                autolr.track()
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
                if autolr is not None:
                    record.update(autolr.observe(step, [out_splits[i] for i in train_envs]))
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
                    save_model(rundir.path / f"model_step{step}.pt", algorithm, dataset, args)
                tracking.log_record(record)  # after the record and checkpoint are on disk
                window.clear()
                summary = _summary(record, config.test_envs)
                bar.set_postfix_str(summary)
                tqdm.write(f"step {step}: {summary}", file=sys.stdout)
                window_start = clock(device)
                if autolr is not None and autolr.phase1_over:
                    break

    if autolr is not None:
        retrain(
            autolr,
            RetrainData.of(in_splits, out_splits, train_envs),
            config=config,
            dataset=dataset,
            hparams=hparams,
            records=records,
            rundir=rundir,
            checkpointed=checkpointed,
            start_step=start_step,
            tracking=tracking,
            progress=progress,
            bar_stream=bar_stream,
            device=device,
        )
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
            save_model(path, model, dataset, args)
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


def _summary(record: dict[str, Any], test_envs: list[int]) -> str:
    """A one-line summary: loss, mean training-env out accuracy, test-env accuracies."""
    parts = [f"loss {record['loss']:.4f}"] if "loss" in record else []
    n_envs = sum(1 for k in record if k.startswith("env") and k.endswith("_out_acc"))
    train = [record[f"env{i}_out_acc"] for i in range(n_envs) if i not in test_envs]
    parts.append(f"train-val acc {np.mean(train):.3f}")
    for i in test_envs:
        parts.append(f"test env{i} acc {record[f'env{i}_in_acc']:.3f}")
    return ", ".join(parts)
