"""The Ray launcher: every job a Ray remote task, on an existing cluster (`address`) or on a
Ray instance started here.

A task runs the job inside its Ray worker process (no extra interpreter per job). When the
cluster has GPUs each task asks for `1 / jobs_per_gpu` of one and its worker exits after the
task, so GPU memory is returned. Ray's own retries are off: a failed task (an error, or a
worker that died, e.g. killed) is recorded in the run directory and resubmitted by this
launcher up to `max_retries` times, while the other tasks keep running. A local instance started
here is watched by `ray_reaper`, which stops all of its processes when this process ends, even
when it is SIGKILLed.
"""

from __future__ import annotations

import random
from typing import Any

from dgalign.errors import ConfigError
from dgalign.runs.directory import RunDirectory
from dgalign.sweep import ray_reaper
from dgalign.sweep.base import LaunchSummary, Printer, Tracker, visible_gpus
from dgalign.sweep.execute import FAILED, Outcome, finish, mark_interrupted, run_in_process
from dgalign.sweep.jobs import Job


def import_ray() -> Any:
    """`ray`, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--launcher ray needs Ray: pip install dgalign[ray] (or pip install ray)"
        ) from None
    return ray


def start_watchdog(ray: Any):
    """Start `ray_reaper` for the local instance this process just started (its processes are
    stopped when this process ends, even by SIGKILL); None when Ray does not say where its
    session and raylet are."""
    try:
        node = ray._private.worker._global_node
        session_dir = node.get_session_dir_path()
        raylet_pid = node.all_processes["raylet"][0].process.pid
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    return ray_reaper.start(session_dir, raylet_pid)


def _ray_task(job: Job) -> Outcome:
    """The body of a Ray task (module level, so Ray pickles it by reference)."""
    return run_in_process(job, "ray")


class RayLauncher:
    """Run jobs as Ray tasks; see the module docstring."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        jobs_per_gpu: int = 1,
        max_retries: int = 0,
        out: Printer = print,
    ) -> None:
        if address and workers:
            raise ConfigError(
                "--workers sizes a local Ray instance; with --ray-address the "
                "cluster's resources decide how many jobs run at once"
            )
        self.address = address
        self.workers = workers
        self.jobs_per_gpu = jobs_per_gpu
        self.max_retries = max_retries
        self.out = out

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        return f"the Ray launcher ({where})"

    def _connect(self, ray: Any) -> bool:
        """Connect to (or start) Ray unless this process already did; True if we did."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address:
            kwargs["address"] = self.address
        else:  # one job per GPU (times jobs_per_gpu) on a GPU machine, else `workers` or 1
            gpus = len(visible_gpus()) * self.jobs_per_gpu
            kwargs["num_cpus"] = self.workers or gpus or 1
            kwargs["_node_ip_address"] = "127.0.0.1"  # a local instance listens on loopback only
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"cannot connect to Ray at {self.address}: {exc}") from None
        return True

    def run(self, jobs: list[Job]) -> LaunchSummary:
        ray = import_ray()
        started = self._connect(ray)
        watchdog = start_watchdog(ray) if started else None
        try:
            return self._run(ray, jobs)
        finally:
            if started:
                ray.shutdown()
                ray_reaper.finish(watchdog)

    def _run(self, ray: Any, jobs: list[Job]) -> LaunchSummary:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0, "retry_exceptions": False}
        if has_gpus:
            options.update(num_gpus=1.0 / self.jobs_per_gpu, max_calls=1)
        task = ray.remote(**options)(_ray_task)
        order = list(jobs)
        random.Random().shuffle(order)
        tracker = Tracker(order, self.max_retries, self.out, self.name)
        pending = {task.remote(job): job for job in order if tracker.should_start(job)}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    outcome = ray.get(ready[0])
                except ray.exceptions.RayError as exc:  # the worker died or Ray failed
                    reason = f"Ray task failed ({type(exc).__name__})"
                    outcome = finish(job, self.name, None, str(exc)[-2000:], reason)
                if tracker.settle(job, outcome):
                    pending[task.remote(job)] = job
        except KeyboardInterrupt:
            self.out(f"Interrupted: cancelling {len(pending)} Ray task(s)...")
            for ref, job in pending.items():
                ray.cancel(ref, force=True)
                if not RunDirectory(job.output_dir).is_done() and job.output_dir.exists():
                    mark_interrupted(job, self.name)
            raise
        finally:
            tracker.release_all()
        return tracker.summary


__all__ = ["FAILED", "RayLauncher", "import_ray"]
