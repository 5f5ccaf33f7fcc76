"""Locks with one owner, always: kernel locks (flock) on run directories and launch claims.

The old pid-file locks let two processes own one lock: a taker read a stale owner, and while it
paused before its takeover another process took the lock, which the first then unlinked and
recreated. These tests pause a taker at each step of taking a lock (the `hook` of
`dgalign.runs.lock`) while others take and release it, in threads and in real processes
(`dgalign train` through the CLI), and check that one owner at most holds it at any time.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.train.helpers import paused_cli, run_cli, train_argv

from dgalign.errors import RunDirError
from dgalign.runs import lock
from dgalign.runs.launch import CLAIM_FILE, claim_launch, live_claim, release_launch
from dgalign.runs.lock import (
    LockError,
    check_lock_support,
    holder,
    host_local_reason,
    mount_of,
    run_lock,
    try_lock,
)

STALE = {"host": "this-host", "pid": 999999}


class Pause:
    """A `lock.hook` that stops the thread named `who` at `stage` until `go()`."""

    def __init__(self, who: str, stage: str) -> None:
        self.who, self.stage = who, stage
        self.reached, self.resume = threading.Event(), threading.Event()

    def __call__(self, stage: str, path: Path) -> None:
        if threading.current_thread().name == self.who and stage == self.stage:
            self.reached.set()
            assert self.resume.wait(30)

    def go(self) -> None:
        self.resume.set()


def _taker(path: Path, results: dict, name: str) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.__setitem__(name, try_lock(path, {"pid": name})), name=name
    )
    thread.start()
    return thread


def test_a_taker_paused_before_locking_a_stale_file_cannot_take_it_from_a_new_owner(
    tmp_path, monkeypatch
):
    """The race of the issue: A and B both find a lock file left by a dead owner; A pauses
    right after opening it, B takes the lock; A resumes and must be refused."""
    path = tmp_path / "lock"
    path.write_text(json.dumps(STALE))  # what a SIGKILLed owner leaves: nobody holds it
    pause = Pause("A", "opened")
    monkeypatch.setattr(lock, "hook", pause)
    results: dict = {}
    a = _taker(path, results, "A")
    assert pause.reached.wait(30)
    b = try_lock(path, {"pid": "B"})
    assert b is not None and holder(path)["pid"] == "B"
    pause.go()
    a.join(30)
    assert results["A"] is None  # refused: B holds it
    assert holder(path)["pid"] == "B"
    b.release()
    assert holder(path) is None and not path.exists()


def test_a_taker_paused_on_a_released_file_does_not_share_the_lock_with_the_next_owner(
    tmp_path, monkeypatch
):
    """A opens the file while B owns it and pauses; B releases (unlinks the file) and C takes a
    new one; A then locks the unlinked file, sees it is not the one at the path, and is
    refused by C's lock."""
    path = tmp_path / "lock"
    b = try_lock(path, {"pid": "B"})
    pause = Pause("A", "opened")
    monkeypatch.setattr(lock, "hook", pause)
    results: dict = {}
    a = _taker(path, results, "A")
    assert pause.reached.wait(30)
    b.release()
    c = try_lock(path, {"pid": "C"})
    assert c is not None
    pause.go()
    a.join(30)
    assert results["A"] is None and holder(path)["pid"] == "C"
    c.release()


def test_a_taker_paused_after_locking_keeps_out_everyone(tmp_path, monkeypatch):
    """Between flock and the path check the lock is already A's: B is refused."""
    path = tmp_path / "lock"
    pause = Pause("A", "locked")
    monkeypatch.setattr(lock, "hook", pause)
    results: dict = {}
    a = _taker(path, results, "A")
    assert pause.reached.wait(30)
    assert try_lock(path, {"pid": "B"}) is None
    pause.go()
    a.join(30)
    assert results["A"] is not None and holder(path)["pid"] == "A"
    results["A"].release()


def test_a_probe_never_makes_a_taker_fail(tmp_path, monkeypatch):
    """`holder` takes a shared lock for an instant; a taker that meets only such a probe
    retries instead of reporting the lock busy."""
    path = tmp_path / "lock"
    path.write_text("")
    probe_fd = os.open(path, os.O_RDONLY)
    import fcntl

    fcntl.flock(probe_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe, caught mid-way
    released = {"n": 0}

    def release_probe(stage, p):
        if stage == "opened" and released["n"] == 1:
            fcntl.flock(probe_fd, fcntl.LOCK_UN)
        released["n"] += 1

    monkeypatch.setattr(lock, "hook", release_probe)
    held = try_lock(path)
    os.close(probe_fd)
    assert held is not None and released["n"] >= 2
    held.release()


@pytest.mark.parametrize("content", ["{}", "123", '{"pid": "abc"}', "", "\x00garbage"])
def test_whatever_a_lock_file_holds_only_the_kernel_lock_counts(tmp_path, content):
    path = tmp_path / "lock"
    path.write_text(content)
    assert holder(path) is None
    with run_lock(tmp_path):
        assert holder(path)["pid"] == os.getpid()
        with (
            pytest.raises(RunDirError, match=f"is being run by pid {os.getpid()}"),
            run_lock(tmp_path),
        ):
            pass
    assert not path.exists()


# -- real processes through the CLI -----------------------------------------------------------


def test_two_train_commands_on_one_directory_run_it_once(tmp_path, fast_hparams):
    """First `dgalign train` pauses after opening the lock file; a second one runs the whole
    directory meanwhile; the first then finds the run finished and changes nothing."""
    out = tmp_path / "run"
    argv = train_argv(out, fast_hparams)
    first = paused_cli("opened", argv)
    second = run_cli(argv)
    assert second.returncode == 0, second.stderr
    finished = (out / "results.jsonl").read_bytes()
    first_out, first_err = first.communicate("\n", timeout=300)
    assert first.returncode == 0, first_err
    assert "holds a finished run" in first_err and "step 0:" not in first_out
    assert (out / "results.jsonl").read_bytes() == finished
    assert (out / "out.txt").read_text().count("step 0:") == 1


def test_a_train_command_holding_the_lock_refuses_a_second(tmp_path, fast_hparams):
    out = tmp_path / "run"
    argv = train_argv(out, fast_hparams)
    first = paused_cli("locked", argv)
    second = run_cli(argv)
    err = second.stderr.strip()
    assert second.returncode == 2 and err.startswith("dgalign: error:") and "\n" not in err
    assert f"is being run by pid {first.pid}" in err
    _, first_err = first.communicate("\n", timeout=300)
    assert first.returncode == 0, first_err
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


PAUSED_CLAIM = """
import sys
from pathlib import Path
from dgalign.runs import lock
def hook(name, path):
    if name == "opened":
        print("paused", flush=True)
        sys.stdin.readline()
lock.hook = hook
from dgalign.runs.launch import claim_launch
print(claim_launch(Path(sys.argv[1]), "local"), flush=True)
sys.stdin.readline()
"""


def test_launch_claim_race_between_two_launchers(tmp_path):
    """A launcher pauses while claiming a run whose claim file a killed launcher left; this
    process claims it meanwhile; the paused one is refused, and gets it once released."""
    run = tmp_path / "run"
    run.mkdir()
    (run / CLAIM_FILE).write_text(json.dumps(STALE))
    other = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLAIM, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "paused"
        assert claim_launch(run, "ray") and live_claim(run)["pid"] == os.getpid()
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "False"
        assert live_claim(run)["pid"] == os.getpid()
        release_launch(run)
        assert live_claim(run) is None
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    assert claim_launch(run, "local")  # the killed launcher's claim went with it
    release_launch(run)


# -- NFS ---------------------------------------------------------------------------------------

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:41 / /shared rw,relatime shared:20 - nfs4 srv:/export rw,vers=4.2,local_lock=none
41 22 0:42 / /scratch rw,relatime shared:21 - nfs srv:/scratch rw,vers=3,nolock,local_lock=all
42 41 0:43 / /scratch/fast rw,relatime shared:22 - tmpfs tmpfs rw
43 22 0:44 / /home rw,relatime shared:23 - nfs4 srv:/home rw,vers=4.1,local_lock=flock
"""


@pytest.mark.parametrize(
    ("folder", "fstype", "reason"),
    [
        ("/data/runs", "ext4", None),
        ("/shared/sweep/job", "nfs4", None),
        ("/scratch/sweep", "nfs", "mounted with nolock"),
        ("/scratch/fast/x", "tmpfs", None),
        ("/home/me", "nfs4", "mounted with local_lock=flock"),
    ],
)
def test_mounts_whose_locks_other_hosts_cannot_see_are_recognised(folder, fstype, reason):
    _, found_type, options = mount_of(Path(folder), MOUNTINFO)
    assert found_type == fstype
    assert host_local_reason(found_type, options) == reason


def test_locks_on_a_host_local_nfs_mount_are_refused_unless_allowed(tmp_path, monkeypatch):
    line = f"50 22 0:50 / {tmp_path} rw - nfs srv:/x rw,vers=3,nolock\n"
    monkeypatch.setattr(lock, "_mountinfo", lambda: MOUNTINFO + line)
    with pytest.raises(LockError, match=r"nolock.*DGALIGN_HOST_LOCAL_LOCKS=1") as info:
        check_lock_support(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(LockError):
        try_lock(tmp_path / "lock")
    assert not (tmp_path / "lock").exists()
    monkeypatch.setenv("DGALIGN_HOST_LOCAL_LOCKS", "1")
    held = try_lock(tmp_path / "lock")
    assert held is not None
    held.release()


def test_a_file_system_without_flock_is_one_line(tmp_path, monkeypatch):
    import errno
    import fcntl as real_fcntl

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(real_fcntl, "flock", no_flock)
    with pytest.raises(LockError, match="does not support flock") as info:
        try_lock(tmp_path / "lock")
    assert "\n" not in str(info.value)
