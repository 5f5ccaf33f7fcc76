"""The state of a run directory, read from its files alone (no process is asked).

- done: the `done` marker exists.
- running: a process holds its `lock`, or a launcher has claimed it to start it
  (`launch.lock`); both are kernel locks (`dgalign.runs.lock`), gone when their process dies.
- failed: no `done`, no live lock, and the last attempt a launcher recorded in `job.json`
  failed, or (no attempt recorded, e.g. a DomainBed run) `err.txt` holds an error.
- incomplete: started and stopped without an error (interrupted, or its launcher died).
- not launched: the directory does not exist or is empty.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from dgalign.runs.directory import RunDirectory
from dgalign.runs.launch import live_claim, read_attempt
from dgalign.runs.lock import holder

_ERROR_LINE = re.compile(r"^(error: |dgalign: error: |Traceback \(most recent|\w+Error\b)")


class JobState(StrEnum):
    """What is known of one run (a sweep's job)."""

    DONE = "done"
    RUNNING = "running"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    NOT_LAUNCHED = "not launched"


STATE_ORDER = tuple(JobState)


def live_owner(run_dir: Path) -> dict[str, Any] | None:
    """The owner record ({host, pid, since}) of the run's lock while a process holds it,
    else None (see `dgalign.runs.lock`)."""
    return holder(RunDirectory(run_dir).lock)


def err_has_error(run_dir: Path) -> bool:
    """Whether `err.txt` holds an error message or a traceback."""
    return any(_ERROR_LINE.match(line) for line in err_tail(run_dir, 200))


def err_tail(run_dir: Path, n: int = 5) -> list[str]:
    """The last `n` non-empty lines of the run's `err.txt` (empty if none)."""
    try:
        with open(RunDirectory(run_dir).err, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return lines[-n:] if n > 0 else []


def run_state(run_dir: Path) -> JobState:
    """The state of one run directory (see the module docstring)."""
    rundir = RunDirectory(run_dir)
    if rundir.is_done():
        return JobState.DONE
    if not rundir.path.is_dir() or not any(rundir.path.iterdir()):
        return JobState.NOT_LAUNCHED
    if live_owner(rundir.path) is not None or live_claim(rundir.path) is not None:
        return JobState.RUNNING
    if rundir.is_done():  # finished while we looked at the lock
        return JobState.DONE
    attempt = read_attempt(rundir.path)
    if attempt is not None:
        return JobState.FAILED if attempt.get("status") == "failed" else JobState.INCOMPLETE
    return JobState.FAILED if err_has_error(rundir.path) else JobState.INCOMPLETE


def count_states(states: list[JobState]) -> dict[JobState, int]:
    """How many of each state, in the canonical order (zeros included)."""
    return {state: sum(1 for s in states if s is state) for state in STATE_ORDER}


def format_counts(counts: dict[JobState, int]) -> str:
    """`3 done, 1 running, 0 failed, 0 incomplete, 2 not launched`."""
    return ", ".join(f"{n} {state.value}" for state, n in counts.items())
