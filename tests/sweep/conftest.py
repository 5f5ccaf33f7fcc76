"""Helpers and fixtures of the sweep tests: tiny Spurious28 sweeps, finding and killing a job
mid-run. Tests get the helpers through the `kit` fixture (pytest runs with
--import-mode=importlib, so test modules cannot import each other)."""

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from dgalign.runs.state import live_owner
from dgalign.sweep import SweepSpec

FAST = '{"backbone": "mlp", "mlp_width": 32, "batch_size": 16}'


def fast_spec(root, **overrides) -> SweepSpec:
    """A Spurious28 sweep of 6-step ERM jobs (1 trial, 1 config, single test envs: 3 jobs)."""
    options = {
        "output_dir": str(Path(root) / "sweep"),
        "datasets": ["Spurious28"],
        "algorithms": ["ERM"],
        "n_hparams": 1,
        "n_trials": 1,
        "single_test_envs": True,
        "steps": 6,
        "checkpoint_freq": 2,
        "hparams": FAST,
    }
    options.update(overrides)
    return SweepSpec(**options)


def spec_argv(spec: SweepSpec) -> list[str]:
    """The `dgalign sweep launch` options that make `spec`."""
    argv = [
        "--output-dir",
        spec.output_dir,
        "--datasets",
        *spec.datasets,
        "--algorithms",
        *spec.algorithms,
        "--n-hparams",
        str(spec.n_hparams),
        "--n-hparams-from",
        str(spec.n_hparams_from),
        "--n-trials",
        str(spec.n_trials),
        "--steps",
        str(spec.steps),
        "--checkpoint-freq",
        str(spec.checkpoint_freq),
        "--hparams",
        spec.hparams,
    ]
    return [*argv, "--single-test-envs"] if spec.single_test_envs else argv


def n_records(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "results.jsonl").read_text().splitlines() if line)
    except OSError:
        return 0


def wait_until(predicate, timeout=120.0, interval=0.01):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s")


def kill_mid_run(jobs, min_records=1, timeout=120.0):
    """SIGKILL the process of the first job seen mid-run (live lock, a checkpoint on disk, at
    least `min_records` records, no done marker); retry if the kill came too late. Returns
    the job, now unfinished."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for job in jobs:
            path = job.output_dir
            if (path / "done").exists() or not (path / "checkpoint.pt").exists():
                continue
            if n_records(path) < min_records:
                continue
            owner = live_owner(path)
            if owner is None:
                continue
            try:
                os.kill(int(owner["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                continue
            wait_until(lambda p=path: live_owner(p) is None, timeout=30)
            if not (path / "done").exists():
                return job
        time.sleep(0.005)
    raise AssertionError("no job could be killed mid-run")


def out_lines(run_dir: Path, prefix: str) -> int:
    text = (run_dir / "out.txt").read_text() if (run_dir / "out.txt").exists() else ""
    return sum(1 for line in text.splitlines() if line.startswith(prefix))


def read_records(run_dir: Path) -> list[dict]:
    """The records of a run's results.jsonl."""
    text = (Path(run_dir) / "results.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for tests."""
    return SimpleNamespace(
        FAST=FAST,
        fast_spec=fast_spec,
        spec_argv=spec_argv,
        n_records=n_records,
        wait_until=wait_until,
        kill_mid_run=kill_mid_run,
        out_lines=out_lines,
        read_json=read_json,
        read_records=read_records,
    )


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by the Ray tests (2 CPUs, listening on 127.0.0.1 only, no
    dashboard), shut down at the end."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    yield ray
    ray.shutdown()
