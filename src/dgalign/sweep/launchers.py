"""Launchers: what runs the jobs of a sweep.

`local` (worker slots on this machine, one per GPU or `--workers` on CPU, each job a process
running `dgalign train`), `ray` (Ray tasks), `slurm` (Slurm job arrays through submitit) and
`dummy` (print the commands). Every launcher claims a job before starting it and skips jobs
that are done, run or claimed by another process; it records each attempt in the run
directory and never stops the sweep on a failed job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dgalign.errors import ConfigError
from dgalign.sweep.base import DummyLauncher, LaunchSummary, Printer
from dgalign.sweep.execute import FAILED
from dgalign.utils.registry import Registry


@dataclass
class LauncherOptions:
    """The launcher options of `dgalign sweep launch`; None means not given."""

    workers: int | None = None
    jobs_per_gpu: int | None = None
    max_retries: int | None = None
    start_method: str | None = None
    threads_per_job: int | None = None
    loader_workers_per_job: int | None = None
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
    "threads_per_job": ("local",),
    "loader_workers_per_job": ("local",),
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
    LAUNCHERS.get(name)  # unknown names fail first, listing the valid ones
    for key, launchers in _ONLY_FOR.items():
        value = getattr(options, key)
        if value not in (None, False) and name not in launchers:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} only applies to --launcher {' or '.join(launchers)}")
    for key in ("workers", "jobs_per_gpu", "array_parallelism", "cpus_per_job", "threads_per_job"):
        value = getattr(options, key)
        if value is not None and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    for key in ("max_retries", "gpus_per_job", "loader_workers_per_job"):
        value = getattr(options, key)
        if value is not None and value < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 0, got {value}")
    return LAUNCHERS.get(name)(options, out)


LauncherFactory = Callable[["LauncherOptions", Printer], Any]

#: Launcher factories `(options, out) -> launcher`; a launcher has `name`, `describe() -> str`
#: and `run(jobs) -> LaunchSummary`. `register_launcher` adds one.
LAUNCHERS: Registry[LauncherFactory] = Registry(
    "launcher",
    check=lambda fn: [] if callable(fn) else ["is not callable (options, out)"],
    describe=lambda fn: (fn.__doc__ or "").strip(),
    what="launcher",
    fix="register a function (options: LauncherOptions, out) -> an object with name, "
    "describe() and run(jobs)",
)


def register_launcher(factory=None, *, name: str | None = None):
    """Decorator (or call): make `factory(options, out)` the launcher `--launcher name`."""
    return LAUNCHERS.register(factory, name=name)


@register_launcher(name="local")
def _local(options: LauncherOptions, out: Printer):
    """worker slots on this machine, each job a process of its own"""
    from dgalign.sweep.local import LocalLauncher

    return LocalLauncher(
        workers=options.workers,
        jobs_per_gpu=options.jobs_per_gpu or 1,
        max_retries=options.max_retries or 0,
        start_method=options.start_method,
        threads_per_job=options.threads_per_job,
        loader_workers_per_job=options.loader_workers_per_job,
        out=out,
    )


@register_launcher(name="ray")
def _ray(options: LauncherOptions, out: Printer):
    """Ray tasks on a local or remote Ray cluster"""
    from dgalign.sweep.ray_launcher import RayLauncher

    return RayLauncher(
        address=options.ray_address,
        workers=options.workers,
        jobs_per_gpu=options.jobs_per_gpu or 1,
        max_retries=options.max_retries or 0,
        out=out,
    )


@register_launcher(name="slurm")
def _slurm(options: LauncherOptions, out: Printer):
    """Slurm job arrays through submitit"""
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


@register_launcher(name="dummy")
def _dummy(options: LauncherOptions, out: Printer):
    """print the commands, run nothing"""
    return DummyLauncher(out)


__all__ = [
    "FAILED",
    "LAUNCHERS",
    "LaunchSummary",
    "LauncherOptions",
    "make_launcher",
    "register_launcher",
]
