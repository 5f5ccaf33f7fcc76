"""The `dgalign` command. Subcommands only parse arguments and call into the package.

Errors the user can fix are printed as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from dgalign import __version__
from dgalign.cli import (
    algorithms_cmd,
    analyze_cmd,
    bench_cmd,
    data_cmd,
    probe_cmd,
    report_cmd,
    reproduce_cmd,
    runs_cmd,
    sweep_cmd,
    train_cmd,
)
from dgalign.errors import DGAlignError

SUBCOMMANDS = (
    train_cmd,
    data_cmd,
    algorithms_cmd,
    sweep_cmd,
    report_cmd,
    bench_cmd,
    analyze_cmd,
    reproduce_cmd,
    runs_cmd,
    probe_cmd,
)


class _StderrHandler(logging.Handler):
    """Log records as plain lines on whatever `sys.stderr` is at the time (so a run's
    err.txt copy sees them too)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors (a missing option, a value out of range) printed as one
    line, like every other error; subcommand parsers are made of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dgalign: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dgalign",
        description="Domain generalization by aligning gradients and curvature across domains.",
    )
    parser.add_argument("--version", action="version", version=f"dgalign {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="import a module, .py file or package folder that registers algorithms, datasets, "
        "backbones, launchers or selection methods (repeatable; also DGALIGN_PLUGINS, "
        "os.pathsep-separated, and installed `dgalign.plugins` entry points); sweeps pass "
        "them on to every job",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dgalign` console command; returns the exit code.

    Plugins (`--plugin`, anywhere on the line) load first, so that what they register is
    known to the argument parser and to every check. Freed host memory is kept for reuse
    (`utils.runtime.keep_freed_memory`; DGALIGN_KEEP_FREED_MEMORY=0 turns it off)."""
    from dgalign.plugins import load_plugins, parse_plugin_args
    from dgalign.utils.runtime import keep_freed_memory

    keep_freed_memory()
    specs, argv = parse_plugin_args(sys.argv[1:] if argv is None else list(argv))
    try:
        load_plugins(specs)
    except DGAlignError as exc:
        print(f"dgalign: error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    logger = logging.getLogger("dgalign")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args.handler(args) or 0)
    except DGAlignError as exc:
        print(f"dgalign: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dgalign: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
