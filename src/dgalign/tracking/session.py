"""The trackers of one run: which backends exist, the check that their extra is installed, and
`Tracking`, which calls every backend and keeps a failing one from stopping the run.

A backend that raises is reported once (a warning naming it and the error) and left out for
the rest of the run: results.jsonl, written before any tracker sees a record, stays complete,
and `dgalign runs export` replays it into the tracker later. With `strict` (export) the first
failure is a `TrackingError` instead.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
from collections.abc import Iterable
from typing import Any

from dgalign.errors import ConfigError, DGAlignError
from dgalign.tracking.base import Logger, Point, RunInfo, record_point

LOG = logging.getLogger("dgalign.tracking")

# backend name -> (module of its Logger class, package it needs, pip extra of dgalign)
BACKENDS = {
    "tensorboard": ("dgalign.tracking.tensorboard_logger", "tensorboard", "tensorboard"),
    "mlflow": ("dgalign.tracking.mlflow_logger", "mlflow", "mlflow"),
    "wandb": ("dgalign.tracking.wandb_logger", "wandb", "wandb"),
}
LOGGERS = tuple(BACKENDS)


class TrackingError(DGAlignError):
    """A tracker failed while replaying runs into it (`dgalign runs export`)."""


def check_loggers(names: Iterable[str]) -> list[str]:
    """The backend names, each once; ConfigError (one line, naming the extra to install) for
    an unknown backend or one whose package is missing."""
    out: list[str] = []
    for name in names:
        if name not in BACKENDS:
            raise ConfigError(f"unknown --logger {name!r}; valid: {', '.join(LOGGERS)}")
        package, extra = BACKENDS[name][1:]
        if not _installed(package):
            raise ConfigError(
                f"--logger {name} needs the {package} package, which is not installed: "
                f"pip install 'dgalign[{extra}]'"
            )
        if name not in out:
            out.append(name)
    return out


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken install, or a module blocked in sys.modules
        return False


def make_logger(name: str) -> Logger:
    module = importlib.import_module(BACKENDS[name][0])
    return module.make()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Tracking:
    """Every backend of a run. `start(info, history)` once, then `log_record` per new
    results.jsonl record, then `finish(status)`. No backends: every call does nothing."""

    def __init__(self, names: Iterable[str] = (), strict: bool = False) -> None:
        self.names = check_loggers(names)
        self.strict = strict
        self.loggers: list[Logger] = []
        self.failed: dict[str, str] = {}  # backend -> the error that turned it off

    def __bool__(self) -> bool:
        return bool(self.names)

    def start(self, info: RunInfo, history: list[Point]) -> None:
        self.info = info
        for name in self.names:
            try:
                logger = make_logger(name)
            except Exception as exc:
                self._failed(name, exc)
                continue
            self.loggers.append(logger)
            self._call(logger, "start", info, history)

    def start_training(
        self,
        run_dir: str | os.PathLike,
        args: dict[str, Any],
        hparams: dict[str, Any],
        records: list[dict[str, Any]],
    ) -> None:
        """`start` for a training run in `run_dir` that already has `records` (resumed)."""
        if self.names:
            from dgalign.tracking.identity import train_run_info

            info = train_run_info(run_dir, args, hparams)
            self.start(info, [record_point(r) for r in records])

    def log_record(self, record: dict[str, Any]) -> None:
        """Log one results.jsonl record."""
        if self.loggers:
            self.log(record_point(record))

    def log(self, point: Point) -> None:
        for logger in self._live():
            self._call(logger, "log", point)

    def finish(self, status: str = "FINISHED") -> None:
        for logger in self._live():
            self._call(logger, "finish", status)
        self.loggers = []

    def _live(self) -> list[Logger]:
        return [lg for lg in self.loggers if lg.name not in self.failed]

    def _call(self, logger: Logger, method: str, *args: Any) -> None:
        try:
            getattr(logger, method)(*args)
        except Exception as exc:  # any failure of a tracker: never the run's
            self._failed(logger.name, exc)
            if method != "finish":
                with contextlib.suppress(Exception):
                    logger.finish("FAILED")

    def _failed(self, name: str, exc: Exception) -> None:
        self.failed[name] = _first_line(exc)
        info = getattr(self, "info", None)
        where = getattr(info, "source", None) or getattr(info, "log_dir", "RUN_DIR")
        if self.strict:
            raise TrackingError(f"{name} failed on {where}: {self.failed[name]}") from None
        LOG.warning(
            "warning: %s logging failed (%s) and is off for the rest of this run; the run goes "
            "on and results.jsonl keeps every record: `dgalign runs export %s --to %s` "
            "replays them later",
            name,
            self.failed[name],
            where,
            name,
        )
