"""Safe extraction of downloaded zip and tar archives.

Only regular files and folders are extracted: no dataset of the manifest ships links, so a
symbolic or hard link is refused outright, as are device files and FIFOs (a chain of links
such as `a -> .` then `l -> a/a/../../etc` passes any check of one link's text, so links are
not judged, they are refused). Every member's name is checked before anything is written: no
absolute paths or drive letters, no `..` components, no NUL bytes, no name that is both a file
and a folder. The members are written into a fresh temporary folder next to the target and
moved into the target only once every member was written, never through a link already in
the target. One bad member rejects the whole archive (`UnsafeArchive`, naming it) and leaves
the target as it was.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from dgalign.errors import DataError, os_error
from dgalign.utils.progress import progress_bar

CHUNK = 1 << 20
# What a damaged archive raises (BadGzipFile is an OSError: it must be caught before those).
DAMAGED = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    gzip.BadGzipFile,
)


class UnsafeArchive(DataError):
    """An archive member that could be written (or point) outside the extraction folder, or
    that is not a plain file or folder."""


def archive_kind(path: Path) -> str | None:
    """ "zip", "tar" (plain or compressed) or None, judged by content, not by name."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        with tarfile.open(path, "r:*") as archive:
            archive.next()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return None
    return "tar"


def member_parts(name: str, archive: Path) -> tuple[str, ...]:
    """The path components of member `name` below the target; `UnsafeArchive` if the name
    could land elsewhere (absolute, a drive letter, `..`, a NUL byte, or nothing at all)."""
    unixy = name.replace("\\", "/")
    parts = tuple(p for p in PurePosixPath(unixy).parts if p not in ("", "."))
    bad = (
        not parts
        or unixy.startswith("/")
        or (len(unixy) > 1 and unixy[1] == ":")
        or "\x00" in unixy
        or ".." in parts
    )
    if bad:
        raise UnsafeArchive(f"{archive.name}: member {name!r} has an unsafe path; not extracted")
    return parts


class _Plan:
    """The members to write, checked for names and file/folder conflicts before any write."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.files: dict[tuple[str, ...], str] = {}
        self.folders: set[tuple[str, ...]] = set()

    def add(self, name: str, is_dir: bool) -> tuple[str, ...]:
        parts = member_parts(name, self.archive)
        parents = {parts[:i] for i in range(1, len(parts))}
        clash = parents & self.files.keys() or (
            parts in self.files if is_dir else parts in self.folders
        )
        if clash:
            raise UnsafeArchive(
                f"{self.archive.name}: member {name!r} is both a file and a folder; not extracted"
            )
        self.folders |= parents
        if is_dir:
            self.folders.add(parts)
        else:
            self.files[parts] = name
        return parts


def _refuse(archive: Path, name: str, what: str) -> UnsafeArchive:
    return UnsafeArchive(f"{archive.name}: member {name!r} is {what}; not extracted")


def _copy(source: IO[bytes], dest: Path) -> None:
    with open(dest, "wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)


def _tar_members(path: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every member; then the rest of the (compressed) stream is read, so that gzip's, bzip2's
    or xz's own check of the whole stream runs (tar itself checks only its headers)."""
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            yield archive, member
        stream = archive.fileobj
        if stream is not None and not isinstance(stream, io.BufferedReader):
            while stream.read(CHUNK):
                pass


def _plan_tar(path: Path) -> _Plan:
    plan = _Plan(path)
    for _, member in _tar_members(path):
        if member.issym():
            raise _refuse(path, member.name, f"a symbolic link (to {member.linkname!r})")
        if member.islnk():
            raise _refuse(path, member.name, f"a hard link (to {member.linkname!r})")
        if not (member.isfile() or member.isdir()):
            raise _refuse(path, member.name, "a device or FIFO")
        plan.add(member.name, member.isdir())
    return plan


def _write_tar(path: Path, into: Path, progress: bool | None) -> int:
    count = 0
    members = progress_bar(
        _tar_members(path), desc=f"extracting {path.name}", unit=" files", progress=progress
    )
    for archive, member in members:
        dest = into.joinpath(*member_parts(member.name, path))
        if member.isdir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is None:  # not reached: links and devices were refused by the plan
                raise _refuse(path, member.name, "not a regular file")
            with source:
                _copy(source, dest)
        count += 1
    return count


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """ "dir", "file", "link" or "special", from the name and the Unix mode (if recorded)."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "link"
    if info.is_dir() or stat.S_ISDIR(mode):
        return "dir"
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "special"
    return "file"


def _plan_zip(path: Path, archive: zipfile.ZipFile) -> _Plan:
    plan = _Plan(path)
    for info in archive.infolist():
        kind = _zip_kind(info)
        if kind == "link":
            raise _refuse(path, info.filename, "a symbolic link")
        if kind == "special":
            raise _refuse(path, info.filename, "a device or FIFO")
        plan.add(info.filename, kind == "dir")
    return plan


def _write_zip(path: Path, archive: zipfile.ZipFile, into: Path, progress: bool | None) -> int:
    infos = archive.infolist()
    for info in progress_bar(
        infos, desc=f"extracting {path.name}", unit=" files", progress=progress
    ):
        dest = into.joinpath(*member_parts(info.filename, path))
        if _zip_kind(info) == "dir":
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source:
                _copy(source, dest)
    return len(infos)


def _move_into(source: Path, target: Path) -> None:
    """Move the tree `source` into `target`, merging folders; never through a link that
    exists in `target` (UnsafeArchive). `source` holds only files and folders."""
    for entry in sorted(source.iterdir()):
        dest = target / entry.name
        if dest.is_symlink():
            raise UnsafeArchive(f"{dest} is a symbolic link; not extracting into it")
        if entry.is_dir() and dest.is_dir():
            _move_into(entry, dest)
        elif dest.exists() and entry.is_dir() != dest.is_dir():
            raise DataError(
                f"{dest} exists as a {'folder' if dest.is_dir() else 'file'} and the archive "
                "holds the other; delete it and fetch again"
            )
        else:
            os.replace(entry, dest)


def safe_extract(path: Path, target: Path, progress: bool | None = None) -> int:
    """Extract zip or tar archive `path` into `target` (created); return the member count.

    Raises `UnsafeArchive` for a member that is not a plain file or folder or could escape
    `target`, `DataError` when `path` is neither a zip nor a tar archive or is damaged; in
    every case `target` is left as it was. `progress=None` shows a bar only on a terminal."""
    path, target = Path(path), Path(target)
    kind = archive_kind(path)
    if kind is None:
        raise DataError(f"{path} is neither a zip nor a tar archive (a web page instead?)")
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    except OSError as exc:
        raise os_error(exc, target, "create the extraction folder") from None
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                _plan_zip(path, archive)
                count = _write_zip(path, archive, staging, progress)
        else:
            _plan_tar(path)
            count = _write_tar(path, staging, progress)
        _move_into(staging, target)
        return count
    except DAMAGED as exc:
        raise DataError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); delete it and fetch again"
        ) from None
    except OSError as exc:
        if exc.errno is None:  # bz2 and others report a bad stream as a plain OSError
            raise DataError(f"{path} is damaged ({exc}); delete it and fetch again") from None
        raise os_error(exc, target, "extract into") from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
