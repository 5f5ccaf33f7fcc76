"""A run logging to TensorBoard, MLflow and W&B (offline) is SIGKILLed mid-run and resumed;
each tracker, read back with its own reader, then holds exactly the records of results.jsonl:
every step once, no step missing, the resumed attempt's values."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tests.tracking.readers import (
    mlflow_runs,
    mlflow_scalars,
    tensorboard_scalars,
    wandb_config,
    wandb_history,
    wandb_offline_runs,
)

from dgalign.runs.directory import RunDirectory
from dgalign.tracking import record_point

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")

STEPS, FREQ = 150, 10


def expected_series(records):
    """metric -> [(step, value)] of the records, as the trackers must hold them."""
    out = {}
    for record in records:
        step, scalars = record_point(record)
        for key, value in scalars.items():
            out.setdefault(key, []).append((step, value))
    return out


def n_records(run_dir):
    try:
        return sum(1 for line in (run_dir / "results.jsonl").read_text().splitlines() if line)
    except OSError:
        return 0


def kill_after_records(argv, run_dir, env, count, timeout=240.0):
    """Start `dgalign train` in a session of its own and SIGKILL the whole session (the run and
    the trackers' helper processes) once `count` records and a checkpoint are on disk."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgalign", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if n_records(run_dir) >= count and (run_dir / "checkpoint.pt").exists():
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def test_sigkilled_and_resumed_run_is_exact_in_every_tracker(
    tmp_path, tracker_env, make_train_argv
):
    run_dir = tmp_path / "sweep" / "run"
    argv = make_train_argv(run_dir, STEPS, FREQ, ["tensorboard", "mlflow", "wandb"])
    # a job is a process of its own, never attached to the W&B service of the process that
    # started it (this test process starts one in other tests)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    kill_after_records(argv, run_dir, env, count=3)
    rundir = RunDirectory(run_dir)
    assert not rundir.is_done()
    killed_at = len(rundir.read_records())
    assert 3 <= killed_at < STEPS // FREQ + 1
    done = subprocess.run(
        [sys.executable, "-m", "dgalign", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming" in (run_dir / "out.txt").read_text()
    assert "logging failed" not in (run_dir / "err.txt").read_text()
    records = rundir.read_records()
    steps = [*range(0, STEPS, FREQ), STEPS - 1]
    assert [r["step"] for r in records] == steps
    expected = expected_series(records)
    assert {"acc/env2_in", "train/loss", "curvature/hess_dist", "system/step_time"} <= set(expected)

    # TensorBoard: float32 scalars, so each value is the record's value rounded to float32
    tb = tensorboard_scalars(run_dir)
    assert set(tb) == set(expected)
    for key, series in expected.items():
        assert [s for s, _ in tb[key]] == steps, key
        assert [v for _, v in tb[key]] == [float(np.float32(v)) for _, v in series], key

    # MLflow: one run for the directory, found again on resume, holding each step once
    (run,) = mlflow_runs(tmp_path / "sweep" / "mlruns")
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["dgalign.algorithm"] == "ERM" and tags["dgalign.dataset"] == "Spurious28"
    assert tags["dgalign.test_envs"] == "2" and tags["dgalign.trial_seed"] == "0"
    assert tags["dgalign.hparams_seed"] == "0" and len(tags["dgalign.run_hash"]) == 32
    assert run.data.params["hp.batch_size"] == "16"
    assert mlflow_scalars(tmp_path / "sweep" / "mlruns", run.info.run_id) == expected

    # W&B offline: one local run per attempt, same run id; the resumed one holds it all
    offline = wandb_offline_runs(run_dir)
    assert len(offline) == 2
    assert len({p.name.rsplit("-", 1)[1] for p in offline}) == 1
    assert wandb_history(offline[-1]) == expected
    config = wandb_config(offline[-1])
    assert json.dumps(config).count("Spurious28") >= 1
