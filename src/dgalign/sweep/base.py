"""What every launcher shares: the summary of a launch, the bookkeeping of claims and retries
(`Tracker`), the GPUs this process may use, and the dummy launcher. The launchers (`local`,
`ray_launcher`, `slurm`) build on this module; `launchers.make_launcher` picks one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from dgalign.runs.directory import RunDirectory
from dgalign.runs.launch import claim_launch, release_launch
from dgalign.runs.state import live_owner
from dgalign.sweep.execute import ALREADY_DONE, BUSY, COMPLETED, FAILED, Outcome
from dgalign.sweep.jobs import Job

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
        """Claim the job for this launch (`dgalign.runs.launch.claim_launch`); False (and
        counted) when it is done, or a live process runs it or has claimed it."""
        if RunDirectory(job.output_dir).is_done():
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
