"""Sweeps: the job grid and launchers (local pool, Ray, Slurm); the states of their run
directories come from `dgalign.runs.state` (re-exported here).

`SweepSpec(...).jobs()` builds DomainBed's grid; `make_launcher(name, options).run(jobs)` runs
the jobs that are not done; `dgalign.sweep.status` reports and cleans up. Ray and submitit are
imported only when their launcher is used.
"""

from dgalign.runs.state import JobState, run_state
from dgalign.sweep.jobs import Job, SweepSpec, held_out_sets, job_hash
from dgalign.sweep.launchers import LAUNCHERS, LauncherOptions, LaunchSummary, make_launcher

__all__ = [
    "LAUNCHERS",
    "Job",
    "JobState",
    "LaunchSummary",
    "LauncherOptions",
    "SweepSpec",
    "held_out_sets",
    "job_hash",
    "make_launcher",
    "run_state",
]
