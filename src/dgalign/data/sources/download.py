"""Resumable, checksummed HTTP download of one file with urllib (standard library only)."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dgalign.utils.hashing import md5_of
from dgalign.utils.progress import progress_bar

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class DownloadOptions:
    """Knobs of the mirror download. `progress=None` shows a bar only on a terminal."""

    retries: int = 2
    backoff_s: float = 1.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    chunk_size: int = 1 << 16
    progress: bool | None = None


class DownloadFailed(Exception):
    """A download did not succeed. `retry`: worth trying the same URL again;
    `dead`: the host itself is unusable (skip it for the other files too)."""

    def __init__(self, reason: str, *, retry: bool = False, dead: bool = False) -> None:
        super().__init__(reason)
        self.retry = retry
        self.dead = dead


class _ReadTimeoutMixin:
    """Connect with the request's (connect) timeout, then read with `read_timeout`."""

    read_timeout: float = 30.0
    sock: socket.socket

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock.settimeout(self.read_timeout)


def _opener(read_timeout: float) -> urllib.request.OpenerDirector:
    """An opener whose connections use `read_timeout` once connected."""
    attrs = {"read_timeout": read_timeout}
    http_conn = type("_HTTPConnection", (_ReadTimeoutMixin, http.client.HTTPConnection), attrs)
    https_conn = type("_HTTPSConnection", (_ReadTimeoutMixin, http.client.HTTPSConnection), attrs)

    class _HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(http_conn, req)

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(https_conn, req, context=self._context)

    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


def _classify(err: BaseException) -> DownloadFailed:
    """Turn a urllib/socket error into a `DownloadFailed` saying whether to retry."""
    if isinstance(err, urllib.error.HTTPError):
        transient = err.code in (408, 429) or err.code >= 500
        return DownloadFailed(f"HTTP {err.code}", retry=transient)
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
            return DownloadFailed(f"cannot resolve host ({reason.strerror})", dead=True)
        if isinstance(reason, TimeoutError):  # while connecting: the host is unreachable
            return DownloadFailed("connection timed out", dead=True)
        if isinstance(reason, BaseException):
            return _classify(reason)
        return DownloadFailed(str(reason), retry=True)
    if isinstance(err, TimeoutError):
        return DownloadFailed("timed out", retry=True)
    if isinstance(err, OSError | http.client.HTTPException):
        return DownloadFailed(str(err) or type(err).__name__, retry=True)
    return DownloadFailed(str(err))


def _open(url: str, offset: int, options: DownloadOptions) -> http.client.HTTPResponse:
    headers = {"User-Agent": "dgalign", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return _opener(options.read_timeout_s).open(request, timeout=options.connect_timeout_s)


def download_once(url: str, part: Path, options: DownloadOptions, label: str) -> None:
    """Append the rest of `url` to `part` (resuming from its size with a Range request;
    starting over if the server ignores Range). Raises `DownloadFailed`."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, options)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # our partial file is no prefix: start over
            part.unlink()
            raise DownloadFailed("server refused to resume", retry=True) from None
        raise _classify(err) from None
    except (OSError, http.client.HTTPException) as err:
        raise _classify(err) from None
    with response:
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not (offset and match and int(match[1]) == offset):
                part.unlink(missing_ok=True)
                raise DownloadFailed("server sent an unexpected range", retry=True)
        else:
            offset = 0  # the server ignored Range and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        try:
            with (
                open(part, "ab" if offset else "wb") as out,
                progress_bar(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    desc=label,
                    progress=options.progress,
                    leave=False,
                ) as bar,
            ):
                while chunk := response.read(options.chunk_size):
                    out.write(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except (OSError, http.client.HTTPException) as err:
            raise _classify(err) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadFailed(f"connection closed after {size} of {total} bytes", retry=True)


def finish(part: Path, final: Path, md5: str) -> bool:
    """Rename `part` to `final` if its md5 is `md5`; else delete it. Return whether it matched."""
    if md5_of(part) != md5:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        return False
    os.replace(part, final)
    return True
