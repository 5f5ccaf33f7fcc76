"""Benchmarks shared by `benchmarks/*.py` and `dgalign bench`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch

from dgalign.errors import ConfigError, DGAlignError


def set_threads(threads: int) -> None:
    """torch's intra-op threads (0: leave the default); ConfigError if negative."""
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def script_main(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of a `benchmarks/*.py` script: parse, run, errors as one line (exit 2)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except DGAlignError as exc:
        parser.exit(2, f"error: {exc}\n")
        return 2
