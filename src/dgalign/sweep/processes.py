"""The process a local job runs in: `dgalign train <args>` in a fresh process of its own.

Two ways to start it, same behaviour (own session, stdout discarded since the run copies its
output to out.txt, stderr captured to a file, exit code or signal reported):

- `forked` (default on CPU-only Linux machines): forked by a server process that has imported
  torch and dgalign once (`dgalign.sweep.forkserver`), so a job starts in a fraction of a
  second instead of the ~3 s an interpreter takes to import torch.
- `fresh` (default with GPUs, and elsewhere): `python -m dgalign train ...` as a plain
  subprocess, with CUDA_VISIBLE_DEVICES set in its environment from the start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Protocol

from dgalign.runs.lock import pid_alive as _pid_alive
from dgalign.sweep.jobs import Job

START_METHODS = ("forked", "fresh")


def default_start_method(gpus: list[str]) -> str:
    """`forked` on a CPU-only Linux machine; `fresh` with GPUs (GPU jobs are long enough that
    the start-up does not matter, and a fresh interpreter can never inherit CUDA state) and
    where forking torch is unsafe or impossible (macOS, Windows)."""
    return "forked" if sys.platform.startswith("linux") and not gpus else "fresh"


class JobProcess(Protocol):
    pid: int | None

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None: ...


class FreshProcess:
    """A `python -m dgalign train` subprocess."""

    def __init__(self, job: Job, env: dict[str, str], stderr_path: str, python: str | None):
        with open(stderr_path, "wb") as stderr:
            self.popen = subprocess.Popen(
                job.command(python),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class ForkServer:
    """The launcher's side of `dgalign.sweep.forkserver`: starts it once, asks it for jobs,
    and collects their pids and exit codes on a reader thread."""

    def __init__(self, python: str | None = None) -> None:
        self.process = subprocess.Popen(
            [python or sys.executable, "-m", "dgalign.sweep.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.ready = False
        self.alive = True
        self.pids: dict[int, int] = {}
        self.exits: dict[int, int] = {}
        self.next_id = 0
        threading.Thread(target=self._read, name="dgalign-forkserver", daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self.changed:
                if message.get("ready"):
                    self.ready = True
                elif "exit" in message:
                    self.exits[message["pid"]] = message["exit"]
                else:
                    self.pids[message["id"]] = message["pid"]
                self.changed.notify_all()
        with self.changed:
            self.alive = False
            self.changed.notify_all()

    def fork(self, argv: list[str], env: dict[str, str], stderr_path: str, threads: int) -> int:
        """Start a job; return its pid."""
        with self.changed:
            self.next_id += 1
            request_id = self.next_id
            request = {
                "id": request_id,
                "argv": argv,
                "env": env,
                "stderr": stderr_path,
                "threads": threads,
            }
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            if not self.changed.wait_for(lambda: request_id in self.pids or not self.alive, 300):
                raise RuntimeError("the local launcher's fork server does not answer")
            if request_id not in self.pids:
                raise RuntimeError("the local launcher's fork server died")
            return self.pids.pop(request_id)

    def exit_code(self, pid: int) -> int | None:
        """The exit code of job `pid` once it has ended, else None. If the server died, a job
        that is gone counts as ended with an unknown code (255)."""
        with self.lock:
            if pid in self.exits:
                return self.exits[pid]
            server_alive = self.alive
        if not server_alive and not _pid_alive(pid):
            return 255
        return None


_servers: dict[str, ForkServer] = {}
_servers_lock = threading.Lock()


def fork_server(python: str | None = None) -> ForkServer:
    """The fork server of this process (started on first use, restarted if it died)."""
    key = python or sys.executable
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive:
            server = _servers[key] = ForkServer(python)
        return server


class ForkedProcess:
    """A job forked by the fork server."""

    def __init__(
        self,
        job: Job,
        env: dict[str, str],
        stderr_path: str,
        threads: int,
        python: str | None = None,
    ):
        self.server = fork_server(python)
        self.pid = self.server.fork(job.train_argv(), env, stderr_path, threads)

    def poll(self) -> int | None:
        return self.server.exit_code(self.pid)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.time() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.time() >= deadline:
                return None
            time.sleep(0.02)
        return code


def start_process(
    job: Job, env: dict[str, str], method: str, python: str | None = None, threads: int = 0
) -> tuple[JobProcess, str]:
    """Start `job` with `method` ("forked" or "fresh"); return it and its stderr file path."""
    fd, stderr_path = tempfile.mkstemp(prefix="dgalign-job-", suffix=".err")
    os.close(fd)
    if method == "forked":
        return ForkedProcess(job, env, stderr_path, threads, python), stderr_path
    return FreshProcess(job, env, stderr_path, python), stderr_path
