"""Exclusive locks on files, held by the kernel for the life of the process that took them.

A lock is an `fcntl.flock(LOCK_EX)` on an open descriptor of its file (a run directory's
`lock`, a sweep's `launch.lock`): the kernel drops it when the process exits, however it dies,
so there is no stale lock to detect and take over. The file also holds the owner's host and pid
as JSON, for messages only; its content never decides who owns the lock.

Taking a lock: open (creating) the file, `flock(LOCK_EX | LOCK_NB)`, then check that the path
still names the file we locked (the previous owner unlinks it when it releases, and a process
that opened the old file just before could otherwise lock a file no one else sees); if not,
start again. Releasing: unlink the file while still holding it, then close. So at every moment
the path names at most one locked file, and at most one process holds it.

`holder(path)` says whether someone holds a lock without taking it for long: a shared lock
taken and dropped at once. A process taking the lock that finds only such a probe in its way
retries for a moment instead of reporting the lock busy.

NFS: Linux emulates flock there with the server's byte-range locks, which work across hosts,
unless the file system is mounted with `nolock` or `local_lock=flock|all`, where locks are seen
by this host only. Such a mount is refused (`LockError`) unless `DGALIGN_HOST_LOCAL_LOCKS=1`
says every process runs on one host. See docs/sweeps.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dgalign.errors import RunDirError, os_error

PROBE_RETRY_S = 2.0  # how long a taker waits for probes (never for an owner) to let go
HOST_LOCAL_ENV = "DGALIGN_HOST_LOCAL_LOCKS"
RUN_LOCK = "lock"  # a run directory's lock file, held while a process runs it


class LockError(RunDirError):
    """A lock that cannot be taken safely on this file system."""


def _no_hook(stage: str, path: Path) -> None:
    """Called between the steps of taking a lock: "opened" (file open, not locked yet) and
    "locked" (flock held and owner written, path not checked yet). Tests replace it to pause
    one taker there."""


hook: Callable[[str, Path], None] = _no_hook


def pid_alive(pid: int) -> bool:
    """Whether a process with `pid` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(path: Path) -> dict:
    """The owner recorded in lock file `path` ({} when absent, empty or not a JSON object)."""
    try:
        owner = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def describe_owner(owner: dict) -> str:
    """`pid 123 on host` from an owner record (`?` for what it lacks)."""
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"


class HeldLock:
    """A lock this process holds on `path` through descriptor `fd`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    def release(self) -> None:
        """Unlink the lock file (if it is still ours) while holding it, then let go."""
        if self.fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                if _same_file(self.path, self.fd):
                    os.unlink(self.path)
        finally:
            os.close(self.fd)
            self.fd = None


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _only_probes(fd: int) -> bool:
    """After LOCK_EX failed: True when no exclusive owner holds the file (only shared probes,
    see `holder`), so retrying makes sense."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def try_lock(path: Path, owner: dict | None = None) -> HeldLock | None:
    """Take the exclusive lock on `path` (creating the file), or None when another process
    holds it. `owner` (default: this host and pid) is written into the file for messages."""
    path = Path(path)
    check_lock_support(path.parent)
    record = owner or {"host": socket.gethostname(), "pid": os.getpid()}
    deadline = time.monotonic() + PROBE_RETRY_S
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise os_error(exc, path, "create the lock file") from None
        try:
            hook("opened", path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if _only_probes(fd) and time.monotonic() < deadline:
                    os.close(fd)
                    time.sleep(0.002)
                    continue
                os.close(fd)
                return None
            except OSError as exc:  # ENOSYS, ENOLCK: no flock on this file system
                raise LockError(
                    f"cannot lock {path}: {exc.strerror or exc}; this file system does not "
                    "support flock (on Lustre mount with -o flock), use another directory"
                ) from None
            data = json.dumps({**record, "since": time.time()}).encode()
            os.ftruncate(fd, 0)  # the file is ours now (if it is still the one at `path`)
            os.pwrite(fd, data, 0)
            hook("locked", path)
            if not _same_file(path, fd):  # released and unlinked by its owner meanwhile
                os.close(fd)
                continue
            return HeldLock(path, fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


def holder(path: Path) -> dict | None:
    """The owner record of the lock on `path` when a process holds it, else None (also when
    the file does not exist). Takes a shared lock for an instant, never waits."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_owner(path)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold `directory/lock` for the duration of the block; RunDirError if another process
    holds it."""
    path = Path(directory) / RUN_LOCK
    held = try_lock(path)
    if held is None:
        raise RunDirError(
            f"{directory} is being run by {describe_owner(read_owner(path))}; wait for it to "
            "finish, or stop it and rerun to resume"
        )
    try:
        yield
    finally:
        held.release()


# -- NFS --------------------------------------------------------------------------------------


def mount_of(path: Path, mountinfo: str) -> tuple[str, str, set[str]] | None:
    """(mount point, file-system type, mount and super-block options) of the mount holding
    `path`, from the text of /proc/self/mountinfo; None when no line matches."""
    target = os.path.realpath(path)
    best: tuple[str, str, set[str]] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 6:
            continue
        left, right = line.split(" - ", 1)
        left_fields, right_fields = left.split(), right.split()
        point = left_fields[4].encode().decode("unicode_escape")
        if not (target == point or target.startswith(point.rstrip("/") + "/")):
            continue
        if best is not None and len(point) < len(best[0]):
            continue
        options = set(left_fields[5].split(","))
        if len(right_fields) >= 3:
            options |= set(right_fields[2].split(","))
        best = (point, right_fields[0], options)
    return best


def host_local_reason(fstype: str, options: set[str]) -> str | None:
    """Why locks on such a mount are seen by this host only, or None when they are not."""
    if not fstype.startswith("nfs"):
        return None
    if "nolock" in options:
        return "mounted with nolock"
    for value in ("local_lock=all", "local_lock=flock"):
        if value in options:
            return f"mounted with {value}"
    return None


def _mountinfo() -> str | None:
    """The text of /proc/self/mountinfo, or None where there is none."""
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None


def check_lock_support(folder: Path) -> None:
    """LockError when locks in `folder` would be visible to this host only (an NFS mount with
    `nolock` or `local_lock`), unless $DGALIGN_HOST_LOCAL_LOCKS=1. Linux only (elsewhere there
    is no /proc/self/mountinfo and nothing is checked)."""
    if os.environ.get(HOST_LOCAL_ENV) == "1":
        return
    mountinfo = _mountinfo()
    if mountinfo is None:
        return
    found = mount_of(folder, mountinfo)
    if found is None:
        return
    point, fstype, options = found
    reason = host_local_reason(fstype, options)
    if reason is not None:
        raise LockError(
            f"{folder} is on {point}, {fstype} {reason}, where a lock is seen by this host "
            "only, so two hosts could run one job at once; use a directory on a file system "
            f"with working locks, or set {HOST_LOCAL_ENV}=1 if every process runs on this host"
        )


__all__ = [
    "RUN_LOCK",
    "HeldLock",
    "LockError",
    "check_lock_support",
    "describe_owner",
    "holder",
    "pid_alive",
    "read_owner",
    "run_lock",
    "try_lock",
]
