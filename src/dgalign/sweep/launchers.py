"""Launchers: what runs the jobs of a sweep.

`local` (worker slots on this machine, one per GPU or `--workers` on CPU, each job a process
running `dgalign train`), `ray` (Ray tasks), `slurm` (Slurm job arrays through submitit) and
`dummy` (print the commands). Every launcher claims a job before starting it and skips jobs
that are done, run or claimed by another process; it records each attempt in the run
directory and never stops the sweep on a failed job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from dgalign.errors import ConfigError
from dgalign.runs.launch import claim_launch, release_launch
from dgalign.runs.state import live_owner
from dgalign.sweep.execute import ALREADY_DONE, BUSY, COMPLETED, FAILED, Outcome
from dgalign.sweep.jobs import Job

LAUNCHERS = ("local", "ray", "slurm", "dummy")

Printer = Callable[[str], None]


@dataclass
class LaunchSummary:
    """What a launch did, job by job."""

    total: int = 0
    completed: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    skipped_done: int = 0
    skipped_busy: int = 0
    retried: int = 0
    submitted: int = 0  # jobs handed to a scheduler that runs them later (slurm without --wait)

    def line(self) -> str:
        parts = [f"{len(self.completed)} completed", f"{len(self.failed)} failed"]
        if self.retried:
            parts.append(f"{self.retried} retried")
        if self.skipped_done:
            parts.append(f"{self.skipped_done} already done")
        if self.skipped_busy:
            parts.append(f"{self.skipped_busy} run by another launch")
        if self.submitted:
            parts.append(f"{self.submitted} submitted")
        return ", ".join(parts)


class Tracker:
    """Bookkeeping shared by the launchers: pre-checks, retries, progress lines."""

    def __init__(self, jobs: list[Job], max_retries: int, out: Printer, launcher: str) -> None:
        self.summary = LaunchSummary(total=len(jobs))
        self.max_retries = max_retries
        self.out = out
        self.launcher = launcher
        self.failures: dict[str, int] = {}
        self.claimed: dict[str, Job] = {}

    def should_start(self, job: Job) -> bool:
        """Claim the job for this launch (see `state.claim_launch`); False (and counted) when
        it is done, or a live process runs it or has claimed it."""
        if (job.output_dir / "done").exists():
            self.summary.skipped_done += 1
            return False
        if job.name in self.claimed:  # a retry
            return True
        if live_owner(job.output_dir) is not None or not claim_launch(
            job.output_dir, self.launcher
        ):
            self.summary.skipped_busy += 1
            return False
        self.claimed[job.name] = job
        return True

    def release(self, job: Job) -> None:
        if self.claimed.pop(job.name, None) is not None:
            release_launch(job.output_dir)

    def release_all(self) -> None:
        for job in list(self.claimed.values()):
            self.release(job)

    def settle(self, job: Job, outcome: Outcome) -> bool:
        """Account for an ended attempt; True when the job should be tried again (it stays
        claimed), else its claim is released."""
        finished = len(self.summary.completed) + len(self.summary.failed) + 1
        where = f"[{finished}/{self.summary.total}]"
        if outcome.status != FAILED:
            self.release(job)
        if outcome.status == COMPLETED:
            self.summary.completed.append(job)
            self.out(f"{where} done    {job.describe()} ({outcome.seconds:.1f} s)")
        elif outcome.status == ALREADY_DONE:
            self.summary.skipped_done += 1
        elif outcome.status == BUSY:
            self.summary.skipped_busy += 1
            self.out(f"[skip] {job.describe()}: being run by another process")
        elif outcome.status == FAILED:
            count = self.failures.get(job.name, 0) + 1
            self.failures[job.name] = count
            if count <= self.max_retries:
                self.summary.retried += 1
                self.out(f"[retry {count}/{self.max_retries}] {job.describe()}: {outcome.detail}")
                return True
            self.release(job)
            self.summary.failed.append((job, outcome.detail))
            self.out(
                f"{where} FAILED  {job.describe()}: {outcome.detail}; "
                f"see {job.output_dir / 'err.txt'}"
            )
        return False


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES order), empty on CPU."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # a broken CUDA install means no GPU for the sweep
        count = 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    ids = [x.strip() for x in listed.split(",") if x.strip()]
    return ids[:count]


@dataclass
class LauncherOptions:
    """The launcher options of `dgalign sweep launch`; None means not given."""

    workers: int | None = None
    jobs_per_gpu: int | None = None
    max_retries: int | None = None
    start_method: str | None = None
    ray_address: str | None = None
    partition: str | None = None
    time: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    array_parallelism: int | None = None
    submitit_cluster: str | None = None
    wait: bool = False


_ONLY_FOR = {
    "workers": ("local", "ray"),
    "jobs_per_gpu": ("local", "ray"),
    "max_retries": ("local", "ray"),
    "start_method": ("local",),
    "ray_address": ("ray",),
    "partition": ("slurm",),
    "time": ("slurm",),
    "gpus_per_job": ("slurm",),
    "cpus_per_job": ("slurm",),
    "array_parallelism": ("slurm",),
    "submitit_cluster": ("slurm",),
    "wait": ("slurm",),
}


def make_launcher(name: str, options: LauncherOptions, out: Printer = print):
    """The launcher `name` configured by `options`; ConfigError for unknown names, options
    of another launcher, and out-of-range values."""
    if name not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {name!r}; valid launchers: {', '.join(LAUNCHERS)}")
    for key, launchers in _ONLY_FOR.items():
        value = getattr(options, key)
        if value not in (None, False) and name not in launchers:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} only applies to --launcher {' or '.join(launchers)}")
    for key in ("workers", "jobs_per_gpu", "array_parallelism", "cpus_per_job"):
        value = getattr(options, key)
        if value is not None and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    for key in ("max_retries", "gpus_per_job"):
        value = getattr(options, key)
        if value is not None and value < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 0, got {value}")
    if name == "dummy":
        return DummyLauncher(out)
    if name == "local":
        from dgalign.sweep.local import LocalLauncher

        return LocalLauncher(
            workers=options.workers,
            jobs_per_gpu=options.jobs_per_gpu or 1,
            max_retries=options.max_retries or 0,
            start_method=options.start_method,
            out=out,
        )
    if name == "ray":
        from dgalign.sweep.ray_launcher import RayLauncher

        return RayLauncher(
            address=options.ray_address,
            workers=options.workers,
            jobs_per_gpu=options.jobs_per_gpu or 1,
            max_retries=options.max_retries or 0,
            out=out,
        )
    from dgalign.sweep.slurm import SlurmLauncher, parse_time

    return SlurmLauncher(
        partition=options.partition,
        time_min=parse_time(options.time) if options.time is not None else 24 * 60,
        gpus_per_job=1 if options.gpus_per_job is None else options.gpus_per_job,
        cpus_per_job=options.cpus_per_job,
        array_parallelism=options.array_parallelism or 256,
        cluster=options.submitit_cluster or "slurm",
        wait=options.wait,
        out=out,
    )


class DummyLauncher:
    """Prints the command of every job that is not done; runs nothing."""

    name = "dummy"

    def __init__(self, out: Printer = print) -> None:
        self.out = out

    def describe(self) -> str:
        return "the dummy launcher (prints the commands, runs nothing)"

    def run(self, jobs: list[Job]) -> LaunchSummary:
        for job in jobs:
            self.out(f"Dummy launcher: {job.command_str()}")
        return LaunchSummary(total=len(jobs))


__all__ = ["FAILED", "LAUNCHERS", "LaunchSummary", "LauncherOptions", "make_launcher"]
