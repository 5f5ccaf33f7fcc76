"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Each writer writes to a temporary file in the target's directory, flushes and fsyncs it,
then renames it over the target with `os.replace`, which is atomic on POSIX and Windows.
An OS error on the way (read-only folder, full disk, permissions) is raised as a one-line
`StorageError` naming the file, and leaves the target as it was.

Torch files saved with `digest=True` get a sidecar `<name>.sha256` (JSON) listing the SHA-256
of the file; `read_verified_torch` refuses a file whose digest is not listed. The sidecar is
written before the file is renamed into place and keeps the previous digests too, so a crash
between the two renames leaves an old file that still verifies. `read_json_object` reads a
JSON object back (None for a missing or damaged file).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from dgalign.errors import os_error

DIGEST_SUFFIX = ".sha256"
DIGEST_FORMAT = "dgalign-sha256-1"
DIGEST_HISTORY = 3  # digests a sidecar keeps: the new file's and those of earlier saves


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on success rename it to `path`.

    On an exception the temporary file is removed and `path` is left untouched; an OSError
    becomes a one-line `StorageError` naming `path`.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise os_error(exc, path) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_object(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in `path`; None when the file is missing, unreadable, not JSON or not
    an object."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def atomic_write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Write one key-sorted JSON object per line to `path` atomically. Strict JSON: a NaN or
    infinity is a ValueError (encode such records first, see `dgalign.utils.records`)."""
    lines = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records)
    atomic_write_text(path, lines)


def digest_path(path: str | os.PathLike) -> Path:
    """The sidecar that lists the SHA-256 of `path`: `<path>.sha256`."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def _listed_digests(path: Path) -> list[str] | None:
    """The digests listed for `path`, or None when its sidecar is missing or unreadable."""
    data = read_json_object(digest_path(path))
    if data is None or data.get("format") != DIGEST_FORMAT:
        return None
    listed = data.get("sha256")
    if not isinstance(listed, list) or not all(isinstance(d, str) for d in listed):
        return None
    return listed


def atomic_torch_save(path: str | os.PathLike, obj: Any, digest: bool = False) -> None:
    """`torch.save` to `path` atomically. Save only plain state (tensors, numbers, strings,
    lists, dicts) so the file loads with `torch.load(weights_only=True)`. With `digest` also
    list the file's SHA-256 in `<path>.sha256` (see the module docstring)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    if digest:
        new = hashlib.sha256(data).hexdigest()
        previous = [d for d in (_listed_digests(path) or []) if d != new]
        atomic_write_json(
            digest_path(path),
            {"format": DIGEST_FORMAT, "sha256": [new, *previous][:DIGEST_HISTORY]},
        )
    atomic_write_bytes(path, data)


def read_verified_torch(path: str | os.PathLike) -> tuple[Any | None, str | None]:
    """(object, None) for a torch file whose SHA-256 its sidecar lists, loaded with
    `weights_only=True`; (None, why) when it has no readable sidecar, does not match it, or
    does not load."""
    path = Path(path)
    listed = _listed_digests(path)
    if listed is None:
        return None, f"its digest file {digest_path(path).name} is missing or unreadable"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"it cannot be read ({exc.strerror or exc})"
    if hashlib.sha256(data).hexdigest() not in listed:
        return None, f"its SHA-256 does not match {digest_path(path).name} (damaged)"
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), None
    except Exception as exc:  # any unpickling error means the file is unusable
        return None, f"it does not load ({type(exc).__name__})"


def remove_with_digest(path: str | os.PathLike) -> None:
    """Delete `path` and its digest sidecar (missing ones are fine)."""
    Path(path).unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)
