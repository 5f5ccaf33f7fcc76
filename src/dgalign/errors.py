"""User-facing errors.

Every error a user can cause (bad arguments, missing data, a corrupt file) is raised as a
subclass of `DGAlignError` with a one-line message that names the problem and the fix. The
command-line entry point prints that line to stderr and exits non-zero; it never shows a
traceback for these.
"""

import errno


class DGAlignError(Exception):
    """Base class of errors whose message is meant for the user, as one line."""

    exit_code = 2


class ConfigError(DGAlignError):
    """Invalid arguments or hyper-parameters."""


class DataError(DGAlignError):
    """A dataset could not be obtained, read or verified."""


class RunDirError(DGAlignError):
    """A run directory that cannot be used as asked (different run, already done, ...)."""


class TrainingDiverged(DGAlignError):
    """The training loss became NaN or infinite."""

    exit_code = 3


class StorageError(DGAlignError, OSError):
    """A file could not be written or read (read-only folder, full disk, permissions). Also an
    OSError, so code that handles OS errors keeps handling it."""


_FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (disk quota)",
    errno.EFBIG: "the file size limit (ulimit -f) is too small",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.EACCES: "fix the permissions or choose another location",
    errno.EPERM: "fix the permissions or choose another location",
    errno.ENOENT: "check that the path exists and can be created",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another location",
}


def os_error(exc: OSError, path: object, action: str = "write") -> StorageError:
    """A one-line `StorageError` for `exc`, raised while trying to `action` `path`: the path,
    the cause and a fix. Files written before are untouched (every write is atomic)."""
    if isinstance(exc, StorageError):
        return exc
    cause = exc.strerror or str(exc) or type(exc).__name__
    fix = _FIXES.get(exc.errno or 0, "fix the cause")
    return StorageError(
        f"cannot {action} {path}: {cause}; {fix}, then rerun (files written before are intact)"
    )
