"""Safe extraction of downloaded zip and tar archives.

Every member is checked before anything is written: no absolute paths or drive letters, no
`..` components, nothing that resolves outside the target folder, no symbolic or hard links
whose target lies outside it, no device files or FIFOs. One bad member rejects the archive
(`UnsafeArchive`) instead of being silently renamed or skipped. Tar members are then written
by `tarfile` with its "data" filter as a second line of defence (which also drops setuid bits).
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from dgalign.errors import DataError
from dgalign.utils.progress import progress_bar


class UnsafeArchive(DataError):
    """An archive member would be written (or link) outside the extraction folder."""


def archive_kind(path: Path) -> str | None:
    """ "zip", "tar" (plain or compressed) or None, judged by content, not by name."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        with tarfile.open(path, "r:*") as archive:
            archive.next()
    except (tarfile.TarError, OSError, EOFError):
        return None
    return "tar"


def _inside(target: Path, candidate: str) -> bool:
    """Whether `candidate` (normalised, links not followed) lies inside `target`."""
    root = os.path.normpath(os.path.abspath(target))
    path = os.path.normpath(os.path.abspath(candidate))
    return path == root or path.startswith(root + os.sep)


def member_path(target: Path, name: str, archive: Path) -> Path:
    """Where member `name` goes under `target`; `UnsafeArchive` if it could land elsewhere."""
    unixy = name.replace("\\", "/")
    parts = PurePosixPath(unixy).parts
    bad = (
        not unixy.strip("/")
        or unixy.startswith("/")
        or (len(unixy) > 1 and unixy[1] == ":")
        or "\x00" in unixy
        or ".." in parts
    )
    if bad:
        raise UnsafeArchive(f"{archive.name}: member {name!r} has an unsafe path; not extracted")
    dest = target.joinpath(*[p for p in parts if p not in ("", ".")])
    # Follow links that already exist on disk (ones the archive made earlier, say).
    if not _inside(target.resolve(), str(dest.resolve())):
        raise UnsafeArchive(f"{archive.name}: member {name!r} resolves outside {target}")
    return dest


def _check_link(target: Path, dest: Path, link: str, hard: bool, archive: Path, name: str) -> None:
    """Reject a link whose target is absolute or lies outside `target`. Symbolic links are
    relative to the member's folder; tar hard links name another member of the archive."""
    unixy = link.replace("\\", "/")
    base = target if hard else dest.parent
    if not unixy or unixy.startswith("/") or not _inside(target, str(base / unixy)):
        kind = "hard link" if hard else "symlink"
        raise UnsafeArchive(
            f"{archive.name}: member {name!r} is a {kind} to {link!r}, outside the target folder"
        )


def _extract_tar(path: Path, target: Path, progress: bool | None) -> int:
    count = 0
    with tarfile.open(path, "r:*") as archive:
        for member in progress_bar(
            archive, desc=f"extracting {path.name}", unit=" files", progress=progress
        ):
            dest = member_path(target, member.name, path)
            if member.issym() or member.islnk():
                _check_link(target, dest, member.linkname, member.islnk(), path, member.name)
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchive(
                    f"{path.name}: member {member.name!r} is a device or FIFO; not extracted"
                )
            if hasattr(tarfile, "data_filter"):
                archive.extract(member, target, filter="data")
            else:  # Python < 3.11.4: our checks above are the only ones
                archive.extract(member, target)
            count += 1
    return count


def _zip_link_target(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    """The link target when `info` is a symbolic link (Unix mode in the external attributes)."""
    if stat.S_ISLNK(info.external_attr >> 16):
        return archive.read(info).decode("utf-8", "surrogateescape")
    return None


def _extract_zip(path: Path, target: Path, progress: bool | None) -> int:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        plan = []
        for info in infos:  # check every member before writing any
            dest = member_path(target, info.filename, path)
            link = _zip_link_target(archive, info)
            if link is not None:
                _check_link(target, dest, link, False, path, info.filename)
            plan.append((info, dest, link))
        for info, dest, link in progress_bar(
            plan, desc=f"extracting {path.name}", unit=" files", progress=progress
        ):
            if link is not None:
                dest.parent.mkdir(parents=True, exist_ok=True)
                member_path(target, info.filename, path)  # the folders may have changed
                os.symlink(link, dest)
            elif info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                member_path(target, info.filename, path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
        return len(plan)


def safe_extract(path: Path, target: Path, progress: bool | None = None) -> int:
    """Extract zip or tar archive `path` into `target` (created); return the member count.

    Raises `UnsafeArchive` for a member that could escape `target`, `DataError` when `path` is
    neither a zip nor a tar archive. `progress=None` shows a bar only on a terminal."""
    path, target = Path(path), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(path)
    if kind == "zip":
        return _extract_zip(path, target, progress)
    if kind == "tar":
        return _extract_tar(path, target, progress)
    raise DataError(f"{path} is neither a zip nor a tar archive (a web page instead?)")
