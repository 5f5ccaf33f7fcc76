"""Running one job and recording how it ended, for every launcher.

A job runs `dgalign train` on its run directory: in a process of its own (the local launcher,
see `dgalign.sweep.processes`) or in the calling process (Ray tasks and Slurm jobs are
processes of their own already). Outcomes:

- completed: the run directory holds `done` (written by this attempt).
- already done: another process finished it first; nothing is recorded.
- busy: another process holds the run's lock; not a failure, nothing is recorded.
- failed: anything else; `job.json` records it and `err.txt` gets what the run printed on
  stderr that it does not hold yet (a traceback, an early error) and a closing line.
- interrupted: stopped by Ctrl-C; recorded so `status` shows it as incomplete, not failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from dgalign.runs.directory import RunDirectory
from dgalign.runs.launch import record_attempt
from dgalign.sweep.jobs import Job
from dgalign.sweep.processes import JobProcess, start_process

# What `dgalign train` prints when another process runs the job / has finished it.
BUSY_MESSAGE = "is being run by"
DONE_MESSAGE = "holds a finished run"
COMPLETED, ALREADY_DONE, BUSY = "completed", "already done", "busy"
FAILED, INTERRUPTED = "failed", "interrupted"
MARK = "[dgalign sweep]"


@dataclass
class Outcome:
    """How one attempt of a job ended."""

    status: str
    detail: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    attempts: int = 0


def describe_returncode(returncode: int) -> str:
    """`exit code 3` or `killed by signal SIGKILL`."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def append_err(run_dir: Path, captured: str, closing: str) -> None:
    """Append to `err.txt` the captured stderr lines it lacks, then `MARK closing`."""
    path = RunDirectory(run_dir).err
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = set(path.read_text(errors="replace").splitlines()) if path.exists() else set()
    lines = []
    for line in captured.splitlines()[-60:]:
        bare = line.removeprefix("dgalign: ")
        if line.strip() and line not in existing and bare not in existing:
            lines.append(line)
    with open(path, "a") as handle:
        handle.write("".join(f"{line}\n" for line in lines) + f"{MARK} {closing}\n")


def finish(
    job: Job,
    launcher: str,
    returncode: int | None,
    captured: str,
    error: str = "",
    seconds: float = 0.0,
) -> Outcome:
    """Classify an attempt that ended with `returncode` (None: the process never reported one,
    `error` says why) and record it in the run directory."""
    if RunDirectory(job.output_dir).is_done() and returncode in (0, None) and not error:
        if DONE_MESSAGE in captured:
            return Outcome(ALREADY_DONE, "finished by another process", returncode, seconds)
        attempts = record_attempt(job.output_dir, COMPLETED, launcher)
        return Outcome(COMPLETED, "", returncode, seconds, attempts)
    if BUSY_MESSAGE in captured or BUSY_MESSAGE in error:
        return Outcome(BUSY, "run by another process", returncode, seconds)
    if error:
        detail = error
    elif returncode is None or returncode == 0:
        detail = "ended without writing its done marker"
    else:
        detail = describe_returncode(returncode)
    attempts = record_attempt(job.output_dir, FAILED, launcher, detail, returncode=returncode)
    append_err(job.output_dir, captured, f"attempt {attempts} failed: {detail}")
    return Outcome(FAILED, detail, returncode, seconds, attempts)


def mark_interrupted(job: Job, launcher: str) -> Outcome:
    """Record that an attempt was stopped by the user (the run resumes on relaunch)."""
    attempts = record_attempt(job.output_dir, INTERRUPTED, launcher, "interrupted")
    return Outcome(INTERRUPTED, "interrupted", None, 0.0, attempts)


@dataclass
class RunningJob:
    """A job's process (see `dgalign.sweep.processes`) and the file its stderr goes to."""

    job: Job
    process: JobProcess
    stderr_path: str
    started: float = field(default_factory=time.time)
    slot: int = 0

    def captured(self) -> str:
        try:
            with open(self.stderr_path, "rb") as handle:
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.stderr_path)


def start_job(
    job: Job,
    env: dict[str, str],
    method: str,
    python: str | None = None,
    threads: int = 0,
    slot: int = 0,
) -> RunningJob:
    """Start `dgalign train` for `job` in a process of its own (`method`: forked or fresh)."""
    process, stderr_path = start_process(job, env, method, python, threads)
    return RunningJob(job, process, stderr_path, slot=slot)


def finish_job(running: RunningJob, launcher: str = "local") -> Outcome:
    """Classify and record a job whose process has exited."""
    try:
        return finish(
            running.job,
            launcher,
            running.process.poll(),
            running.captured(),
            seconds=time.time() - running.started,
        )
    finally:
        running.close()


def stop_jobs(running: list[RunningJob], grace: float = 10.0) -> None:
    """Ctrl-C every job (a run exits cleanly, releasing its lock), SIGKILL any that is still
    alive after `grace` seconds."""
    for item in running:
        item.process.send_signal(signal.SIGINT)
    deadline = time.time() + grace
    for item in running:
        if item.process.wait(max(0.0, deadline - time.time())) is None:
            item.process.kill()
            item.process.wait(5.0)
        item.close()


def run_in_process(job: Job, launcher: str) -> Outcome:
    """Run `job` in this process (a Ray worker, a Slurm job), after loading its plugins, and
    record how it ended."""
    from dgalign.errors import DGAlignError
    from dgalign.plugins import load_plugins
    from dgalign.train import RunConfig, run_training

    start = time.time()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        load_plugins(list(job.plugins))  # the sweep's plugins, in this worker too
        result = run_training(RunConfig(**job.config_kwargs()), progress=False, loggers=job.loggers)
    except KeyboardInterrupt:
        mark_interrupted(job, launcher)
        raise
    except DGAlignError as exc:
        return finish(job, launcher, None, f"dgalign: error: {exc}", str(exc), time.time() - start)
    except Exception as exc:  # a crash in the job must never stop the sweep
        return finish(
            job,
            launcher,
            None,
            traceback.format_exc(),
            f"{type(exc).__name__}: {exc}".splitlines()[0],
            time.time() - start,
        )
    captured = DONE_MESSAGE if result.status == "already_done" else ""
    return finish(job, launcher, 0, captured, seconds=time.time() - start)
