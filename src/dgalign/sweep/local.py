"""The local launcher: a pool of worker slots, each running one job at a time, every job a
process of its own running `dgalign train <args>` (forked from a warm server, or a fresh
`python -m dgalign train` interpreter; see `dgalign.sweep.processes`).

GPU-aware: by default one slot per visible GPU (`jobs_per_gpu` slots per GPU to pack more),
each job seeing only its slot's GPU through CUDA_VISIBLE_DEVICES; on CPU one slot unless
`workers` says otherwise. Every slot gets a CPU budget, so that eight jobs on an eight-GPU node
do not fight over the cores: `threads_per_job` compute threads (OMP_NUM_THREADS and
MKL_NUM_THREADS, and `torch.set_num_threads` in a forked job) and `loader_workers_per_job`
DataLoader worker processes, shared out between the job's training loaders through
`$DGALIGN_NUM_WORKERS` (`dgalign.data.splits.default_num_workers`). Ctrl-C stops every job
cleanly (each saves nothing more, releases its lock) and leaves the sweep relaunchable.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import deque

from dgalign.errors import ConfigError, DGAlignError
from dgalign.runs.directory import RunDirectory
from dgalign.sweep.base import LaunchSummary, Printer, Tracker, visible_gpus
from dgalign.sweep.execute import RunningJob, finish_job, mark_interrupted, start_job, stop_jobs
from dgalign.sweep.jobs import Job
from dgalign.sweep.processes import START_METHODS, default_start_method

#: DomainBed's DataLoader workers per loader (`N_WORKERS`): the most the default share gives one.
MAX_WORKERS_PER_LOADER = 8


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which Slurm and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def training_loaders(job: Job) -> int:
    """How many training loaders `job` runs at once: one per training environment."""
    from dgalign.data import get_dataset_class

    try:
        n_envs = len(get_dataset_class(job.train_args["dataset"]).ENVIRONMENTS)
    except (DGAlignError, KeyError):
        return 1
    return max(1, n_envs - len(job.train_args.get("test_envs", [])))


def workers_per_loader(budget: int, loaders: int, cap: int) -> int:
    """A job's `budget` of DataLoader workers shared by its `loaders`: max(1, budget //
    loaders), at most `cap`; 0 for a budget of 0 (every batch loaded in the job's process)."""
    if budget == 0:
        return 0
    return min(cap, max(1, budget // loaders))


def _positive_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


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
        threads_per_job: int | None = None,
        loader_workers_per_job: int | None = None,
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
        for flag, value, least in (
            ("--threads-per-job", threads_per_job, 1),
            ("--loader-workers-per-job", loader_workers_per_job, 0),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < least
            ):
                raise ConfigError(f"{flag} must be an integer >= {least}, got {value!r}")
        self.threads_per_job = threads_per_job
        self.loader_workers_per_job = loader_workers_per_job
        self.poll_interval = poll_interval
        self.shuffle = shuffle
        self.out = out

    def describe(self) -> str:
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"
        return f"the local launcher ({self.workers} worker(s), {where}, {self.start_method} jobs)"

    def share(self) -> int:
        """A slot's share of the CPUs: max(1, usable CPUs // workers)."""
        return max(1, usable_cpus() // self.workers)

    def threads(self) -> int:
        """Compute threads per job: `threads_per_job`, else $OMP_NUM_THREADS when set, else
        the slot's share of the CPUs."""
        if self.threads_per_job is not None:
            return self.threads_per_job
        return _positive_env("OMP_NUM_THREADS") or self.share()

    def loader_workers(self) -> int:
        """DataLoader workers per job: `loader_workers_per_job`, else the slot's share."""
        if self.loader_workers_per_job is not None:
            return self.loader_workers_per_job
        return self.share()

    def slot_env(self, slot: int, job: Job | None = None) -> dict[str, str]:
        """The environment of `job` in `slot`: its GPU, its compute threads, and its loader
        workers shared by its training loaders (never more per loader than a
        $DGALIGN_NUM_WORKERS the launcher was given)."""
        from dgalign.data.splits import WORKERS_ENV

        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        threads = str(self.threads())
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
        loaders = 1 if job is None else training_loaders(job)
        given = os.environ.get(WORKERS_ENV, "").strip()
        if given.isdigit():
            cap = int(given)
        elif self.loader_workers_per_job is None:
            cap = MAX_WORKERS_PER_LOADER  # the default share: DomainBed's 8 per loader at most
        else:
            cap = self.loader_workers_per_job
        env[WORKERS_ENV] = str(workers_per_loader(self.loader_workers(), loaders, cap))
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
                                self.slot_env(slot, job),
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
