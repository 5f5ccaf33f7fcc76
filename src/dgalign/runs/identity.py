"""A run directory's identity: the settings that define its results, kept in one JSON file.

A training run keeps them in `run.json` (the whole file); a Colored MNIST reproduction in
`config.json`, under `identity`. Before a process writes results into a directory it claims it
(`claim_identity`, called while holding the directory's lock, `dgalign.runs.lock.run_lock`):
a directory without an identity gets this one, one with the same identity is resumed, and one
with another identity is refused in one line naming the settings that differ. So two runs of
different settings never mix their results in one directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dgalign.errors import RunDirError
from dgalign.utils.io import atomic_write_json, read_json_object


@dataclass(frozen=True)
class IdentityFile:
    """Where one kind of run directory keeps its identity, and how its messages name it."""

    name: str  # the file, in the run directory
    key: str | None = None  # None: the whole file is the identity, else the file's `key`
    mismatch: str = "a different run"  # what a directory of other settings holds
    restart_flag: str | None = None  # the flag that discards an unreadable identity, if any


TRAINING = IdentityFile("run.json", restart_flag="--restart-from-scratch")
#: Keys of a whole-file identity (`run.json`) that record where a run came from without
#: defining its results: written with the identity, never compared (e.g. the plugins loaded).
RECORD_ONLY = ("plugins",)
REPRODUCTION = IdentityFile("config.json", key="identity", mismatch="results of other settings")


def read_identity(directory: str | Path, spec: IdentityFile = TRAINING) -> dict[str, Any] | None:
    """The identity stored in `directory` (None when there is no identity file; {} when the
    file is a JSON object without `spec.key`); RunDirError when the file is unreadable or not
    a JSON object."""
    path = Path(directory) / spec.name
    if not path.exists():
        return None
    content = read_json_object(path)
    if content is None:
        fix = f", or rerun with {spec.restart_flag}" if spec.restart_flag else ""
        raise RunDirError(
            f"{path} is unreadable or not a JSON object; delete {directory}, choose another "
            f"--output-dir{fix}"
        )
    if spec.key is None:
        return content
    identity = content.get(spec.key)
    return identity if isinstance(identity, dict) else {}


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The keys whose values differ between `a` and `b` (missing counts as None), sorted."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def claim_identity(
    directory: str | Path,
    identity: dict[str, Any],
    spec: IdentityFile = TRAINING,
    *,
    extra: dict[str, Any] | None = None,
    restart: bool = False,
    orphans: Iterable[Path] = (),
) -> None:
    """Check that `directory` holds the run with `identity`, writing the identity file if it
    holds none yet (with `extra` beside the identity: in the file's top level, keys of
    `RECORD_ONLY`, when the whole file is the identity). Call while holding
    the directory's lock. RunDirError when it holds another identity, when its identity file is
    unreadable, or when any of `orphans` (results that need an identity) exists without one;
    with `restart` an unreadable identity file and orphans are discarded instead (the caller
    then deletes the results)."""
    directory = Path(directory)
    path = directory / spec.name
    try:
        existing = read_identity(directory, spec)
    except RunDirError:
        if not restart:
            raise
        existing = None
    if existing is not None:
        if spec.key is None:  # what `extra` wrote beside the identity is not compared
            existing = {k: v for k, v in existing.items() if k not in RECORD_ONLY}
        if existing != identity:
            raise RunDirError(
                f"{directory} holds {spec.mismatch} (differs in "
                f"{', '.join(differing_keys(existing, identity))}); choose another "
                "--output-dir or delete that directory"
            )
        return
    if not path.exists() and not restart and any(Path(p).exists() for p in orphans):
        fix = f", or rerun with {spec.restart_flag}" if spec.restart_flag else ""
        raise RunDirError(
            f"{directory} holds results of an unknown run (no {spec.name}); choose another "
            f"--output-dir, delete that directory{fix}"
        )
    if spec.key is None:
        content = {**identity, **(extra or {})}
    else:
        content = {spec.key: identity, **(extra or {})}
    atomic_write_json(path, content)


def is_reproduction(directory: str | Path) -> bool:
    """Whether `directory` is a `dgalign reproduce cmnist` run directory (a `config.json`
    that holds an identity)."""
    path = Path(directory) / REPRODUCTION.name
    if not path.is_file():
        return False
    content = read_json_object(path)
    return content is not None and REPRODUCTION.key in content
