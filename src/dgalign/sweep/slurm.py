"""The Slurm launcher: the jobs of a sweep as one Slurm job array, submitted with submitit.

Each array task runs one job inside its own process. A task that reaches its time limit or is
preempted is requeued by submitit and resumes from the run's last checkpoint. submitit's logs go
to `<sweep dir>/.submitit/`. With `cluster="local"` submitit runs the tasks on this machine
(for tests and dry runs).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from dgalign.errors import ConfigError
from dgalign.sweep.base import LaunchSummary, Printer, Tracker
from dgalign.sweep.execute import Outcome, finish, run_in_process
from dgalign.sweep.jobs import Job

CLUSTERS = ("slurm", "local")
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def import_submitit() -> Any:
    """`submitit`, or a one-line ConfigError saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install dgalign[slurm] (or pip install submitit)"
        ) from None
    return submitit


def parse_time(text: str) -> int:
    """Minutes from a Slurm time: `MM`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`."""
    match = _TIME.match(text.strip())
    if not match:
        raise ConfigError(f"--time {text!r} is not a Slurm time such as 90, 12:00:00 or 1-00:00")
    days, a, b, c = match.groups()
    if days is None and b is None:  # plain minutes
        minutes = int(a)
    elif days is None and c is None:  # MM:SS
        minutes = int(a) + (int(b) > 0)
    elif days is None:  # HH:MM:SS
        minutes = int(a) * 60 + int(b) + (int(c) > 0)
    else:  # D-HH[:MM[:SS]]
        minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + (int(c or 0) > 0)
    if minutes < 1:
        raise ConfigError(f"--time must be at least one minute, got {text!r}")
    return minutes


class SweepTask:
    """The callable each array task runs. On a time limit or preemption submitit calls
    `checkpoint`, which resubmits the same job: rerunning it resumes from its checkpoint."""

    def __call__(self, job: Job) -> Outcome:
        return run_in_process(job, "slurm")

    def checkpoint(self, job: Job) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SweepTask(), job)


class SlurmLauncher:
    """Submit the jobs as a Slurm array; wait for them when `wait` is set."""

    name = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        time_min: int = 24 * 60,
        gpus_per_job: int = 1,
        cpus_per_job: int | None = None,
        array_parallelism: int = 256,
        cluster: str = "slurm",
        wait: bool = False,
        out: Printer = print,
    ) -> None:
        if cluster not in CLUSTERS:
            raise ConfigError(
                f"unknown --submitit-cluster {cluster!r}; valid values: {', '.join(CLUSTERS)}"
            )
        self.partition = partition
        self.time_min = time_min
        self.gpus_per_job = gpus_per_job
        self.cpus_per_job = cpus_per_job
        self.array_parallelism = array_parallelism
        self.cluster = cluster
        self.wait = wait
        self.out = out

    def describe(self) -> str:
        where = "Slurm" if self.cluster == "slurm" else "submitit's local executor"
        partition = f", partition {self.partition}" if self.partition else ""
        return (
            f"the Slurm launcher ({where}{partition}, {self.time_min} min, "
            f"{self.gpus_per_job} GPU(s) per job, at most {self.array_parallelism} at once)"
        )

    def executor(self, folder: Path) -> Any:
        submitit = import_submitit()
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError(
                "--launcher slurm needs a Slurm cluster (sbatch not found); "
                "use --submitit-cluster local to run the array on this machine"
            )
        executor = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        params: dict[str, Any] = {
            "name": "dgalign-sweep",
            "timeout_min": self.time_min,
            "gpus_per_node": self.gpus_per_job,
            "tasks_per_node": 1,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.cpus_per_job is not None:
            params["cpus_per_task"] = self.cpus_per_job
        if self.partition is not None:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        return executor

    def run(self, jobs: list[Job]) -> LaunchSummary:
        tracker = Tracker(jobs, 0, self.out, self.name)
        try:
            return self._run(tracker, jobs)
        finally:
            tracker.release_all()

    def _run(self, tracker: Tracker, jobs: list[Job]) -> LaunchSummary:
        if not jobs:
            return tracker.summary
        folder = jobs[0].output_dir.parent / ".submitit"
        executor = self.executor(folder)  # configuration errors before any job is claimed
        todo = [job for job in jobs if tracker.should_start(job)]
        if not todo:
            return tracker.summary
        submitted = executor.map_array(SweepTask(), todo)
        ids = sorted({str(s.job_id).split("_")[0] for s in submitted})
        self.out(f"Submitted {len(todo)} job(s) as job id(s) {', '.join(ids)}; logs in {folder}")
        if not self.wait:
            tracker.summary.submitted = len(todo)
            return tracker.summary
        for job, handle in zip(todo, submitted, strict=True):
            try:
                outcome = handle.result()
            except Exception as exc:  # the task died (killed, out of memory, cancelled)
                reason = f"Slurm task {handle.job_id} failed ({type(exc).__name__})"
                outcome = finish(job, self.name, None, str(exc)[-2000:], reason)
            tracker.settle(job, outcome)
        return tracker.summary
