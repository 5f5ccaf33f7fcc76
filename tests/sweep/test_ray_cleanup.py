"""A SIGKILLed Ray launcher leaves no process of the Ray instance it started (its watchdog,
`dgalign.sweep.ray_reaper`, stops them all)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dgalign.runs.state import live_owner
from dgalign.sweep import ray_reaper

pytestmark = pytest.mark.slow

LAUNCH = """
import json, sys
from dgalign.sweep import SweepSpec
from dgalign.sweep.ray_launcher import RayLauncher
spec = SweepSpec(**json.loads(sys.argv[1]))
RayLauncher(workers=1, out=lambda line: None).run(spec.jobs()[:1])
"""


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def _session_dir(raylet_pid: int) -> str:
    args = Path(f"/proc/{raylet_pid}/cmdline").read_bytes().decode().split("\0")
    return next(a.split("=", 1)[1] for a in args if a.startswith("--session_dir="))


def _watchdogs(launcher_pid: int) -> list[int]:
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        is_watchdog = any(a.endswith(b"ray_reaper.py") for a in args)
        if (
            is_watchdog
            and str(launcher_pid).encode() in args
            and not ray_reaper.is_zombie(int(entry))
        ):
            out.append(int(entry))
    return out


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_sigkilled_launcher_leaves_no_process_of_its_ray_instance(kit, tmp_path):
    pytest.importorskip("ray")
    spec = kit.fast_spec(tmp_path, steps=1_000_000, checkpoint_freq=100_000)
    fields = ("output_dir", "datasets", "algorithms", "n_hparams", "n_trials", "steps")
    kwargs = {k: getattr(spec, k) for k in fields}
    kwargs.update(single_test_envs=True, checkpoint_freq=100_000, hparams=kit.FAST)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, json.dumps(kwargs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    session, raylet = None, None
    try:
        job_dir = spec.jobs()[0].output_dir
        owner = kit.wait_until(lambda: live_owner(job_dir), timeout=240)
        raylet = int(_environ(int(owner["pid"]))["RAY_RAYLET_PID"])
        session = _session_dir(raylet)
        before = ray_reaper.instance_processes(session, raylet, set())
        assert int(owner["pid"]) in before and raylet in before and len(before) >= 3
        assert _watchdogs(launcher.pid)

        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        kit.wait_until(lambda: not ray_reaper.instance_processes(session, raylet, set()), 60)
        kit.wait_until(lambda: not _watchdogs(launcher.pid), 30)
        # the job's process is gone, its lock with it: a dying process leaves /proc's environ
        # (and so `instance_processes`) before the kernel closes its files, so poll briefly
        kit.wait_until(lambda: live_owner(job_dir) is None, 30)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
        if session is not None:
            ray_reaper.stop(session, raylet, set(), grace_s=0.0)
