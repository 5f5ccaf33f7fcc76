"""A watchdog that stops the processes of a Ray instance when the launcher that started it ends,
however it ends (SIGKILL included).

Ray makes its head processes (GCS server, raylet, ...) die with the process that started them,
but the agents the raylet starts (dashboard agent, runtime-env agent) outlive a SIGKILLed
launcher and ignore SIGTERM. So a launcher that starts a local Ray instance also starts this
script, in a session of its own, with a pipe on its stdin: the kernel closes the pipe when the
launcher exits, the watchdog wakes up (no polling) and stops every process of that instance:
those whose command line names the instance's session folder, and those started by its raylet
(`RAY_RAYLET_PID=<pid>` in their initial environment, which Ray's process titles do not
rewrite). SIGTERM first, SIGKILL for what is left after a grace period. It never touches the
launcher or processes of other Ray instances. Linux only (it reads /proc); elsewhere it does
nothing.

Run as a script (`python ray_reaper.py LAUNCHER_PID SESSION_DIR RAYLET_PID`): it imports nothing
of dgalign, so it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 3.0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def is_zombie(pid: int) -> bool:
    """Whether `pid` has exited and only waits to be reaped (or is gone)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return True
    return stat.rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X")


def instance_processes(session_dir: str, raylet_pid: int, spare: set[int]) -> list[int]:
    """The live processes of the Ray instance with `session_dir` and raylet `raylet_pid`, except
    the pids in `spare`."""
    session = session_dir.encode()
    marker = f"RAY_RAYLET_PID={raylet_pid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spare:
            continue
        pid = int(entry)
        cmdline = _read(f"/proc/{pid}/cmdline")
        environ = _read(f"/proc/{pid}/environ").split(b"\0")
        if (session in cmdline or marker in environ) and not is_zombie(pid):
            found.append(pid)
    return found


def stop(session_dir: str, raylet_pid: int, spare: set[int], grace_s: float = GRACE_S) -> int:
    """SIGTERM the instance's processes, SIGKILL those alive after `grace_s`; return how many
    were found."""
    spare = spare | {os.getpid()}
    pids = instance_processes(session_dir, raylet_pid, spare)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(not is_zombie(p) for p in pids):
        time.sleep(0.05)
    for pid in instance_processes(session_dir, raylet_pid, spare):
        _signal(pid, signal.SIGKILL)
    return len(pids)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def start(session_dir: str, raylet_pid: int) -> subprocess.Popen | None:
    """Start the watchdog for this process's Ray instance; None where /proc is missing. Keep
    the returned process: closing its stdin (or exiting) makes it stop the instance."""
    if not Path("/proc/self/environ").exists():
        return None
    return subprocess.Popen(
        [sys.executable, __file__, str(os.getpid()), session_dir, str(raylet_pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def finish(watchdog: subprocess.Popen | None, timeout_s: float = 30.0) -> None:
    """After `ray.shutdown()`: let the watchdog stop what is left, and wait for it."""
    if watchdog is None:
        return
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout_s)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def main(argv: list[str]) -> int:
    launcher, session_dir, raylet = int(argv[0]), argv[1], int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()  # returns when the launcher closes the pipe or dies
    stop(session_dir, raylet, {launcher})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
