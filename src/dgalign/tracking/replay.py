"""Replaying finished records into trackers: the restarts of a Colored MNIST reproduction as
they are saved, and `dgalign runs export DIR`, which replays run directories (ours and
DomainBed's: a run directory, a sweep directory of them, or a reproduction directory) after
the fact. A backend holding part of a run already gets only what it lacks (`Logger.start`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dgalign.errors import ConfigError
from dgalign.runs.directory import RunDirectory, read_results, sub_directories
from dgalign.runs.identity import REPRODUCTION, is_reproduction, read_identity
from dgalign.runs.state import JobState, run_state
from dgalign.tracking.base import Point, RunInfo, record_point
from dgalign.tracking.identity import restart_points, restart_run_info, train_run_info
from dgalign.tracking.session import Tracking


def replay(loggers: Iterable[str], info: RunInfo, points: list[Point], status: str, strict: bool):
    """One run's points into every backend, then close the tracker run with `status`."""
    tracking = Tracking(loggers, strict=strict)
    tracking.start(info, points)
    tracking.finish(status)


def log_restarts(
    loggers: Iterable[str], root: Path, identity: dict[str, Any], restart_jsons: list[Path]
) -> None:
    """Each saved restart of a reproduction as a finished tracker run (failures reported once
    per restart, never raised: the restart's JSON is what counts)."""
    for path in restart_jsons:
        record = json.loads(Path(path).read_text())
        info = restart_run_info(root, path, identity)
        replay(loggers, info, restart_points(record), "FINISHED", strict=False)


@dataclass
class Exported:
    """What an export did: runs replayed, points in them, runs skipped (and why)."""

    runs: int = 0
    points: int = 0
    skipped: list[str] | None = None


def _run_dirs(root: Path) -> list[Path]:
    if RunDirectory(root).results.exists():
        return [root]
    return [p for p in sub_directories(root) if RunDirectory(p).results.exists()]


def export_dir(directory: str | Path, loggers: list[str]) -> Exported:
    """Replay `directory` into `loggers`; TrackingError on the first tracker failure,
    ConfigError when it holds no run."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; pass a run, sweep or reproduction dir")
    Tracking(loggers)  # ConfigError for a missing extra before anything is written
    done = Exported(skipped=[])
    if is_reproduction(root):
        identity = read_identity(root, REPRODUCTION)
        for path in sorted(root.glob("*/restart*.json")):
            points = restart_points(json.loads(path.read_text()))
            replay(loggers, restart_run_info(root, path, identity), points, "FINISHED", True)
            done.runs, done.points = done.runs + 1, done.points + len(points)
    else:
        for run_dir in _run_dirs(root):
            state = run_state(run_dir)
            if state is JobState.RUNNING:
                done.skipped.append(f"{run_dir.name} (running: its own --logger gets it)")
                continue
            records, _ = read_results(RunDirectory(run_dir).results)
            if not records:
                done.skipped.append(f"{run_dir.name} (no readable record)")
                continue
            records.sort(key=lambda r: r["step"])
            info = train_run_info(run_dir, records[0]["args"], records[0].get("hparams", {}))
            status = "FINISHED" if state is JobState.DONE else "KILLED"
            replay(loggers, info, [record_point(r) for r in records], status, True)
            done.runs, done.points = done.runs + 1, done.points + len(records)
    if not done.runs and not done.skipped:
        raise ConfigError(
            f"no runs in {root}: neither results.jsonl (a run or a sweep of runs) nor "
            "config.json with restarts (a `dgalign reproduce cmnist` directory)"
        )
    return done
