"""Synthetic sweep directories with known accuracies, finished and unfinished runs.

Accuracy of a run (algorithm base b, trial t, hparams seed h, test envs T) at env i:
    in  = b + 0.02 i + 0.01 t + 0.005 h   (0.1 lower at step 0 than at step 10)
    out = in - 0.01 - (0.02 h if i in T else 0)
so training-domain validation and leave-one-domain-out pick h = 1 at step 10, while the oracle
(the test env's out split) picks h = 0.

Runs made with `swa` also record the weight average's accuracies (`swa_env{i}_{in,out}_acc`,
as `dgalign train --swa` does), with the hparams seed's effect reversed:
    in  = b + 0.03 + 0.02 i + 0.01 t - 0.005 h   (0.1 lower at step 0)
    out = in - 0.01 - (0.02 (1 - h) if i in T else 0)
so on them training-domain validation and leave-one-domain-out pick h = 0, the oracle h = 1.
"""

import json
from pathlib import Path

import pytest

from dgalign.runs.lock import try_lock
from dgalign.sweep.jobs import held_out_sets, job_hash

HELD_LOCKS = []  # kernel locks of the "running" runs, held by the test process

BASE = {("Debug28", "ERM"): 0.60, ("Debug28", "ZFake"): 0.70, ("PACS", "ERM"): 0.80}
N_ENVS = {"Debug28": 3, "PACS": 4}


def accs(dataset, algorithm, trial, hseed, test_envs, step):
    """{key: value} of the accuracies of one record."""
    base = BASE[(dataset, algorithm)]
    out = {}
    for i in range(N_ENVS[dataset]):
        in_acc = base + 0.02 * i + 0.01 * trial + 0.005 * hseed - (0.1 if step == 0 else 0.0)
        out[f"env{i}_in_acc"] = round(in_acc, 6)
        out[f"env{i}_out_acc"] = round(in_acc - 0.01 - (0.02 * hseed if i in test_envs else 0), 6)
    return out


SWA = " + SWA"


def swa_accs(dataset, algorithm, trial, hseed, test_envs, step):
    """{env key: value} of the weight average's accuracies of one record of `algorithm` (or of
    "<algorithm> + SWA")."""
    base = BASE[(dataset, algorithm.removesuffix(SWA))]
    out = {}
    for i in range(N_ENVS[dataset]):
        in_acc = base + 0.03 + 0.02 * i + 0.01 * trial - 0.005 * hseed
        in_acc -= 0.1 if step == 0 else 0.0
        out[f"env{i}_in_acc"] = round(in_acc, 6)
        penalty = 0.02 * (1 - hseed) if i in test_envs else 0
        out[f"env{i}_out_acc"] = round(in_acc - 0.01 - penalty, 6)
    return out


def write_run(
    root,
    dataset,
    algorithm,
    trial,
    hseed,
    test_envs,
    state="done",
    steps=(0, 10),
    swa=False,
    accuracies=accs,
):
    """A dgalign run directory in `state` (done, failed, running, incomplete); `swa`: with the
    weight average's accuracies too; `accuracies`: the function giving the `env*` ones."""
    args = {
        "dataset": dataset,
        "algorithm": algorithm,
        "test_envs": list(test_envs),
        "holdout_fraction": 0.2,
        "hparams_seed": hseed,
        "trial_seed": trial,
        "seed": 0,
    }
    path = Path(root) / job_hash(args)
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps(args))
    full = {**args, "output_dir": str(path), "task": "domain_generalization"}
    hparams = {"lr": 0.001 * (hseed + 1), "batch_size": 32}
    kept = steps if state == "done" else steps[:1]
    with open(path / "results.jsonl", "w") as handle:
        for step in kept:
            record = {
                "args": full,
                "hparams": hparams,
                "step": step,
                "epoch": step / 10,
                "loss": 0.5,
                "step_time": 0.01,
                "mem_gb": 0.0,
                **accuracies(dataset, algorithm, trial, hseed, test_envs, step),
            }
            if swa:
                values = swa_accs(dataset, algorithm, trial, hseed, test_envs, step)
                record.update({f"swa_{k}": v for k, v in values.items()})
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    (path / "out.txt").write_text("step 0: ...\n")
    (path / "err.txt").write_text("")
    if state == "done":
        (path / "done").write_text("done\n")
    elif state == "failed":
        (path / "err.txt").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
        (path / "job.json").write_text(json.dumps({"status": "failed", "attempts": 1}))
    elif state == "running":  # this process holds the run's lock until it exits
        HELD_LOCKS.append(try_lock(path / "lock"))
    return path


def write_golden_sweep(root, swa=(), swa_as_algorithm=False):
    """Debug28: ERM and ZFake, 2 trials, 2 hparams seeds, singles and pairs, with
    ERM trial 1 [2] h1 failed, ZFake trial 1 [1] (both seeds) not launched and ZFake trial 1
    [0, 2] h0 running. PACS: ERM only, 1 trial, single test envs only.

    The runs of the (dataset, algorithm) pairs in `swa` record the weight average's accuracies
    too; with `swa_as_algorithm` they are written instead as the `env*` accuracies of separate
    runs of an algorithm "<algorithm> + SWA", in the same states (the reference a report of the
    first sweep must match)."""

    def write(dataset, algorithm, trial, hseed, envs, state="done"):
        with_swa = (dataset, algorithm) in swa
        write_run(
            root,
            dataset,
            algorithm,
            trial,
            hseed,
            envs,
            state,
            swa=with_swa and not swa_as_algorithm,
        )
        if with_swa and swa_as_algorithm:
            write_run(
                root, dataset, algorithm + SWA, trial, hseed, envs, state, accuracies=swa_accs
            )

    for algorithm in ("ERM", "ZFake"):
        for trial in (0, 1):
            for envs in held_out_sets(3, single_only=False):
                for hseed in (0, 1):
                    key = (algorithm, trial, tuple(envs), hseed)
                    state = "done"
                    if key == ("ERM", 1, (2,), 1):
                        state = "failed"
                    elif key == ("ZFake", 1, (0, 2), 0):
                        state = "running"
                    elif key[:3] == ("ZFake", 1, (1,)):
                        continue  # not launched
                    write("Debug28", algorithm, trial, hseed, envs, state)
    for envs in held_out_sets(4, single_only=True):
        for hseed in (0, 1):
            write("PACS", "ERM", 0, hseed, envs)
    return Path(root)


@pytest.fixture
def golden_sweep(tmp_path):
    return write_golden_sweep(tmp_path / "sweep")


@pytest.fixture
def make_golden_sweep():
    """`write_golden_sweep`, for tests that vary its arguments."""
    return write_golden_sweep


@pytest.fixture
def swa_accuracies():
    """`swa_accs`: the weight average's accuracies the synthetic runs record."""
    return swa_accs
