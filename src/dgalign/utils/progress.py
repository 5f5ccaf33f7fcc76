"""Progress bars only where someone watches: on a terminal, never in a log file.

`progress=None` (the default everywhere) draws a bar only when the bar's stream is a TTY;
True forces it, False turns it off. The CLI's `--progress / --no-progress` set it.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from tqdm.auto import tqdm


def show_progress(progress: bool | None, stream: IO | None = None) -> bool:
    """Whether to draw a bar on `stream` (default stderr) for the `progress` setting."""
    if progress is not None:
        return progress
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(
    iterable: Any = None, *, progress: bool | None = None, file: IO | None = None, **kwargs: Any
) -> tqdm:
    """`tqdm(iterable, **kwargs)` drawn on `file` (default stderr) only if `show_progress`."""
    stream = sys.stderr if file is None else file
    return tqdm(
        iterable,
        file=stream,
        disable=not show_progress(progress, stream),
        dynamic_ncols=True,
        **kwargs,
    )


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """`--progress / --no-progress` (default: a bar only on a terminal) as `args.progress`."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw progress bars (default: only when stderr is a terminal)",
    )
