"""The state of a run directory as a sweep sees it, read from the files alone.

- done: the `done` marker exists.
- running: a process holds its `lock`, or a launcher has claimed it to start it
  (`launch.lock`); both are kernel locks (`dgalign.train.lock`), gone when their process dies.
- failed: no `done`, no live lock, and the last attempt a launcher recorded in `job.json`
  failed, or (no attempt recorded, e.g. a DomainBed run) `err.txt` holds an error.
- incomplete: started and stopped without an error (interrupted, or its launcher died).
- not launched: the directory does not exist or is empty.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from dgalign.errors import os_error
from dgalign.train.lock import HeldLock, holder, try_lock
from dgalign.utils.io import atomic_write_json

JOB_FILE = "job.json"
CLAIM_FILE = "launch.lock"
_ERROR_LINE = re.compile(r"^(error: |dgalign: error: |Traceback \(most recent|\w+Error\b)")


class JobState(StrEnum):
    """What a sweep knows about one job."""

    DONE = "done"
    RUNNING = "running"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    NOT_LAUNCHED = "not launched"


STATE_ORDER = tuple(JobState)


def live_owner(run_dir: Path) -> dict[str, Any] | None:
    """The owner record ({host, pid, since}) of the run's lock while a process holds it,
    else None (see `dgalign.train.lock`)."""
    return holder(Path(run_dir) / "lock")


_claims: dict[Path, HeldLock] = {}


def claim_launch(run_dir: Path, launcher: str) -> bool:
    """Claim `run_dir` for this launcher process before starting its job (so two launches
    never start the same job): an exclusive lock on `launch.lock`, held until
    `release_launch` or until this process dies. False when another process holds it."""
    run_dir = Path(run_dir)
    if run_dir in _claims:
        return True
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, run_dir, "create the run directory") from None
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "launcher": launcher}
    held = try_lock(run_dir / CLAIM_FILE, owner)
    if held is None:
        return False
    _claims[run_dir] = held
    return True


def release_launch(run_dir: Path) -> None:
    """Drop this process's claim on `run_dir` (see `claim_launch`), if it holds it."""
    held = _claims.pop(Path(run_dir), None)
    if held is not None:
        held.release()


def live_claim(run_dir: Path) -> dict[str, Any] | None:
    """The owner record of the launcher that claimed the run to start it, while it holds the
    claim."""
    return holder(Path(run_dir) / CLAIM_FILE)


def read_attempt(run_dir: Path) -> dict[str, Any] | None:
    """The last attempt a launcher recorded in `job.json`, or None."""
    try:
        return json.loads((Path(run_dir) / JOB_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def record_attempt(run_dir: Path, status: str, launcher: str, detail: str = "", **extra) -> int:
    """Record the end of an attempt (`completed`, `failed` or `interrupted`) in `job.json`;
    return the number of attempts recorded so far."""
    previous = read_attempt(run_dir) or {}
    attempts = int(previous.get("attempts", 0)) + 1
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        Path(run_dir) / JOB_FILE,
        {
            "status": status,
            "detail": detail,
            "attempts": attempts,
            "launcher": launcher,
            "host": socket.gethostname(),
            "time": time.time(),
            **extra,
        },
    )
    return attempts


def err_has_error(run_dir: Path) -> bool:
    """Whether `err.txt` holds an error message or a traceback."""
    return any(_ERROR_LINE.match(line) for line in err_tail(run_dir, 200))


def err_tail(run_dir: Path, n: int = 5) -> list[str]:
    """The last `n` non-empty lines of the run's `err.txt` (empty if none)."""
    path = Path(run_dir) / "err.txt"
    try:
        with open(path, "rb") as handle:
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
    run_dir = Path(run_dir)
    if (run_dir / "done").exists():
        return JobState.DONE
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return JobState.NOT_LAUNCHED
    if live_owner(run_dir) is not None or live_claim(run_dir) is not None:
        return JobState.RUNNING
    if (run_dir / "done").exists():  # finished while we looked at the lock
        return JobState.DONE
    attempt = read_attempt(run_dir)
    if attempt is not None:
        return JobState.FAILED if attempt.get("status") == "failed" else JobState.INCOMPLETE
    return JobState.FAILED if err_has_error(run_dir) else JobState.INCOMPLETE


def count_states(states: list[JobState]) -> dict[JobState, int]:
    """How many of each state, in the canonical order (zeros included)."""
    return {state: sum(1 for s in states if s is state) for state in STATE_ORDER}


def format_counts(counts: dict[JobState, int]) -> str:
    """`3 done, 1 running, 0 failed, 0 incomplete, 2 not launched`."""
    return ", ".join(f"{n} {state.value}" for state, n in counts.items())
