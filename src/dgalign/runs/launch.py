"""A launcher's files in a run directory: its claim and its record of attempts.

- `launch.lock`: a launcher claims a run directory before starting its job, so two launches
  never start the same job; a kernel lock (`dgalign.runs.lock`), gone when its process dies.
- `job.json`: the end of the last attempt (`completed`, `failed` or `interrupted`), with the
  number of attempts so far; `dgalign.runs.state` reads it to tell failed from incomplete.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from dgalign.errors import os_error
from dgalign.runs.lock import HeldLock, holder, try_lock
from dgalign.utils.io import atomic_write_json

JOB_FILE = "job.json"
CLAIM_FILE = "launch.lock"

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
