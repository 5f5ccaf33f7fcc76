"""The local launcher: a pool of worker slots, each running one job at a time, every job a
process of its own running `dgalign train <args>` (forked from a warm server, or a fresh
`python -m dgalign train` interpreter; see `dgalign.sweep.processes`).

GPU-aware: by default one slot per visible GPU (`jobs_per_gpu` slots per GPU to pack more),
each job seeing only its slot's GPU through CUDA_VISIBLE_DEVICES; on CPU one slot unless
`workers` says otherwise, with the CPU threads shared out between the slots. Ctrl-C stops every
job cleanly (each saves nothing more, releases its lock) and leaves the sweep relaunchable.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import deque

from dgalign.errors import ConfigError
from dgalign.runs.directory import RunDirectory
from dgalign.sweep.base import LaunchSummary, Printer, Tracker, visible_gpus
from dgalign.sweep.execute import RunningJob, finish_job, mark_interrupted, start_job, stop_jobs
from dgalign.sweep.jobs import Job
from dgalign.sweep.processes import START_METHODS, default_start_method


class LocalLauncher:
    """Run jobs as processes on this machine, `workers` at a time."""

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        jobs_per_gpu: int = 1,
        max_retries: int = 0,
        gpus: list[str] | None = None,
        python: str | None = None,
        start_method: str | None = None,
        poll_interval: float = 0.05,
        shuffle: bool = True,
        out: Printer = print,
    ) -> None:
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        default = len(self.gpus) * jobs_per_gpu if self.gpus else 1
        self.workers = workers or default
        self.max_retries = max_retries
        self.python = python or sys.executable
        self.start_method = start_method or default_start_method(self.gpus)
        if self.start_method not in START_METHODS:
            raise ConfigError(
                f"unknown start method {self.start_method!r}; valid: {', '.join(START_METHODS)}"
            )
        self.poll_interval = poll_interval
        self.shuffle = shuffle
        self.out = out

    def describe(self) -> str:
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"
        return f"the local launcher ({self.workers} worker(s), {where}, {self.start_method} jobs)"

    def threads(self) -> int:
        """CPU threads per job on a CPU-only machine (0: leave torch's default)."""
        if self.gpus or "OMP_NUM_THREADS" in os.environ:
            return 0
        return max(1, (os.cpu_count() or 1) // self.workers)

    def slot_env(self, slot: int) -> dict[str, str]:
        """The environment of a job in `slot`: its GPU, or its share of the CPU threads."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        elif self.threads():
            env["OMP_NUM_THREADS"] = str(self.threads())
        return env

    def run(self, jobs: list[Job]) -> LaunchSummary:
        """Run `jobs` (in random order, so concurrent launches rarely meet) until each is
        completed, failed (after `max_retries` retries), done or run by someone else."""
        order = list(jobs)
        if self.shuffle:
            random.Random().shuffle(order)
        tracker = Tracker(order, self.max_retries, self.out, self.name)
        queue = deque(order)
        running: dict[int, RunningJob] = {}
        try:
            while queue or running:
                for slot in range(self.workers):
                    if slot in running:
                        continue
                    while queue:
                        job = queue.popleft()
                        if tracker.should_start(job):
                            running[slot] = start_job(
                                job,
                                self.slot_env(slot),
                                self.start_method,
                                self.python,
                                self.threads(),
                                slot,
                            )
                            break
                for slot, item in list(running.items()):
                    if item.process.poll() is None:
                        continue
                    del running[slot]
                    if tracker.settle(item.job, finish_job(item, self.name)):
                        queue.append(item.job)
                time.sleep(self.poll_interval)
        except BaseException as exc:  # Ctrl-C, or the launcher itself failed: stop the jobs
            items = list(running.values())
            why = "Interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
            self.out(f"{why}: stopping {len(items)} running job(s)...")
            stop_jobs(items)
            for item in items:
                if not RunDirectory(item.job.output_dir).is_done():
                    mark_interrupted(item.job, self.name)
            raise
        finally:
            tracker.release_all()
        return tracker.summary
