"""A run directory: its files, and the checks that keep one run's results from mixing with
another's.

Layout: `run.json` (the run's arguments), `results.jsonl` (one record per checkpoint, strict
JSON, see `dgalign.utils.records`), `out.txt` / `err.txt` (the run's printed output),
`checkpoint.pt` (resumable state), `model.pt` (the final model), each `.pt` with its
`<name>.sha256` digest, `lock` (held while a process runs it) and `done` (written last).
Everything but `out.txt` / `err.txt` is read and written only while holding `lock`.
A sweep's launcher adds `job.json` and `launch.lock` (`dgalign.runs.launch`).

`RunDirectory` is the writer's view (strict: resuming needs every record intact); the readers
(`read_results`, `read_run_json`) take run directories of any origin, DomainBed's included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dgalign.errors import RunDirError, os_error
from dgalign.runs.identity import TRAINING, claim_identity
from dgalign.runs.launch import CLAIM_FILE, JOB_FILE
from dgalign.runs.lock import RUN_LOCK
from dgalign.utils.io import (
    atomic_write_jsonl,
    atomic_write_text,
    read_json_object,
    remove_with_digest,
)
from dgalign.utils.records import decode_record, encode_record

RESTART_HINT = "rerun with --restart-from-scratch to discard it and train from step 0"


class RunDirectory:
    """Paths and atomic reads/writes of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.run_json = self.path / TRAINING.name
        self.results = self.path / "results.jsonl"
        self.checkpoint = self.path / "checkpoint.pt"
        self.model = self.path / "model.pt"
        self.model_swa = self.path / "model_swa.pt"
        self.model_swad = self.path / "model_swad.pt"
        self.done = self.path / "done"
        self.out = self.path / "out.txt"
        self.err = self.path / "err.txt"
        self.lock = self.path / RUN_LOCK

    def is_done(self) -> bool:
        return self.done.exists()

    def create(self) -> None:
        """Create the directory (and its parents); RunDirError when that is impossible."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--output-dir {self.path} exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.path, "create the run directory") from None

    def claim(
        self,
        identity: dict[str, Any],
        restart: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Check that the directory holds the run with `identity` (writing `run.json` if it
        holds no run yet). Call while holding the run lock. RunDirError if it holds a
        different run or files that are not a run's; with `restart` an unreadable `run.json`
        and results without one are discarded instead (`dgalign.runs.identity`). `extra`:
        record-only keys written beside the identity (`RECORD_ONLY`, e.g. the plugins)."""
        claim_identity(
            self.path,
            identity,
            TRAINING,
            extra=extra,
            restart=restart,
            orphans=(self.results, self.checkpoint),
        )

    def discard_results(self) -> None:
        """Delete what training produced (done first, so a crash midway leaves an unfinished
        run): done, checkpoint, models and records. Call while holding the run lock."""
        self.done.unlink(missing_ok=True)
        models = [self.model, self.model_swa, self.model_swad]
        for path in [self.checkpoint, *models, *self.path.glob("model_step*.pt")]:
            remove_with_digest(path)
        self.results.unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files left by a writer killed mid-write. Call only while holding
        the run lock: another live process's temporaries are not stale."""
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def read_records(self) -> list[dict[str, Any]]:
        """The records in results.jsonl (empty if there is none); RunDirError naming the line
        when one is not a JSON object with an integer `step`."""
        try:
            text = self.results.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise os_error(exc, self.results, "read") from None
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            step = record.get("step") if isinstance(record, dict) else None
            if not isinstance(step, int) or isinstance(step, bool):
                raise RunDirError(
                    f"{self.results} line {number} is not a record (a JSON object with an "
                    f"integer step); {RESTART_HINT}"
                )
            records.append(decode_record(record))
        return records

    def write_records(self, records: list[dict[str, Any]]) -> None:
        """Replace results.jsonl with `records` (strict JSON), atomically."""
        atomic_write_jsonl(self.results, [encode_record(r) for r in records])

    def mark_done(self) -> None:
        atomic_write_text(self.done, "done\n")


# -- reading run directories of any origin ----------------------------------------------------

# Files whose presence makes a folder a run directory (a `plots` folder is not one).
RUN_FILES = (
    TRAINING.name,
    "results.jsonl",
    JOB_FILE,
    "err.txt",
    "out.txt",
    RUN_LOCK,
    "done",
    CLAIM_FILE,
)


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a results.jsonl that carry `args` and `step`, ours and DomainBed's, and
    how many lines could not be read (a run killed mid-write by a tool that appends, as
    DomainBed's does, can leave half a line). Unlike `RunDirectory.read_records` (resuming
    needs every record) a bad line is counted, not refused."""
    records: list[dict[str, Any]] = []
    bad = 0
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return records, 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("args"), dict) and "step" in record:
            records.append(decode_record(record))  # non-finite values restored
        else:
            bad += 1
    return records, bad


def read_run_json(directory: str | Path) -> dict[str, Any] | None:
    """The run's `run.json` as a JSON object, or None when it is absent or unreadable."""
    return read_json_object(Path(directory) / TRAINING.name)


def sub_directories(root: str | Path) -> list[Path]:
    """The folders directly under `root` that are not hidden (`.submitit`, ...), by name."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
