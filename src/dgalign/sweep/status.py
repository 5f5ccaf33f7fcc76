"""`status` and `delete-incomplete` of a sweep: states of its jobs, a readable summary, and
removal of unfinished run directories (never one a live process holds)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from dgalign.errors import ConfigError, RunDirError
from dgalign.runs.directory import RUN_FILES, RunDirectory, read_run_json, sub_directories
from dgalign.runs.launch import live_claim
from dgalign.runs.lock import LockError, describe_owner, run_lock
from dgalign.runs.state import (
    JobState,
    count_states,
    err_tail,
    format_counts,
    live_owner,
    run_state,
)
from dgalign.sweep.jobs import Job

Printer = Callable[[str], None]


def job_from_dir(path: Path) -> Job | None:
    """A job rebuilt from a run directory's `run.json` (or, for DomainBed's runs, the `args`
    of its first record); None when the directory holds neither."""
    args = read_run_json(path)
    if args is None:
        try:
            with open(RunDirectory(path).results) as handle:
                args = json.loads(handle.readline())["args"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return None
    if not isinstance(args, dict) or "dataset" not in args:
        return None
    return Job({k: args.get(k, "?") for k in JOB_KEYS}, path.resolve())


JOB_KEYS = ("dataset", "algorithm", "test_envs", "hparams_seed", "trial_seed")


def scan_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every run directory directly under `sweep_dir` (hidden folders excluded)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ConfigError(f"sweep directory {root} does not exist")
    jobs = []
    for path in sub_directories(root):
        job = job_from_dir(path)
        if job is None and any((path / name).exists() for name in RUN_FILES):
            job = Job(dict.fromkeys(JOB_KEYS, "?"), path.resolve())
        if job is not None:
            jobs.append(job)
    return jobs


def job_states(jobs: list[Job]) -> list[tuple[Job, JobState]]:
    return [(job, run_state(job.output_dir)) for job in jobs]


def print_status(
    jobs: list[Job],
    sweep_dir: str | Path,
    tail: int = 5,
    verbose: bool = False,
    out: Printer = print,
    grid: bool = True,
) -> dict[JobState, int]:
    """Print the counts per state, the running jobs and the failed jobs with the last `tail`
    lines of their err.txt (every job with `verbose`); return the counts."""
    states = job_states(jobs)
    counts = count_states([s for _, s in states])
    if not grid:
        counts.pop(JobState.NOT_LAUNCHED)
    out(f"Sweep {sweep_dir}: {len(jobs)} job(s): {format_counts(counts)}")
    if verbose:
        for job, state in states:
            out(f"  {state.value:<12} {job.name}  {job.describe()}")
    running = [job for job, state in states if state is JobState.RUNNING]
    if running:
        out("Running:")
        for job in running:
            owner = live_owner(job.output_dir)
            claim = live_claim(job.output_dir) or {}
            who = (
                describe_owner(owner)
                if owner
                else f"starting: claimed by launcher {describe_owner(claim)}"
            )
            out(f"  {job.describe()}  ({who})  {job.output_dir}")
    failed = [job for job, state in states if state is JobState.FAILED]
    if failed:
        out("Failed (relaunch to retry; they resume from their last checkpoint):")
        for job in failed:
            out(f"  {job.describe()}  {job.output_dir}")
            for line in err_tail(job.output_dir, tail):
                out(f"    | {line}")
    return counts


def deletable(jobs: list[Job]) -> list[tuple[Job, JobState]]:
    """Jobs whose directory exists unfinished and is not run by a live process."""
    return [(j, s) for j, s in job_states(jobs) if s in (JobState.FAILED, JobState.INCOMPLETE)]


def delete_run_dirs(jobs: list[Job], out: Printer = print) -> int:
    """Delete each job's directory if it is still unfinished and unclaimed, holding its lock
    while deleting so no run starts in it meanwhile; return how many were deleted."""
    deleted = 0
    for job in jobs:
        path = job.output_dir
        if not path.is_dir():
            continue
        try:
            with run_lock(path):
                if RunDirectory(path).is_done():
                    continue
                shutil.rmtree(path)
                deleted += 1
        except LockError:
            raise
        except RunDirError:
            out(f"kept {path}: a process started running it")
    return deleted
