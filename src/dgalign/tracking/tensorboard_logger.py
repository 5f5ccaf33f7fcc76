"""TensorBoard: event files in the run's directory (`tensorboard --logdir SWEEP_DIR` shows every
run of a sweep, named by its directory), written with torch's `SummaryWriter`.

Resuming: TensorBoard's own reader (`EventAccumulator`, which applies earlier purges) says
which (tag, step) pairs the directory's event files hold; the writer opens with
`purge_step` = the first step of the history that is not wholly there, so TensorBoard discards
anything an interrupted attempt wrote from that step on, and logs the history from there.
Every point is flushed to disk before `log` returns. The identity and hyper-parameters go to
the HParams dashboard and to a text summary `run/identity`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dgalign.tracking.base import Point, RunInfo, flat_params


def held_points(log_dir: Path) -> set[tuple[str, int]]:
    """The (tag, step) scalar pairs TensorBoard shows for `log_dir`'s event files."""
    if not any(Path(log_dir).glob("events.out.tfevents.*")):
        return set()
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    # its purge notice is not news to the user: purging is how a resumed run stays exact
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {
        (tag, event.step)
        for tag in accumulator.Tags()[SCALARS]
        for event in accumulator.Scalars(tag)
    }


class TensorBoardLogger:
    name = "tensorboard"

    def start(self, info: RunInfo, history: list[Point]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        held = held_points(info.log_dir)
        missing = [p for p in history if any((t, p[0]) not in held for t in p[1])]
        purge = missing[0][0] if missing else (history[-1][0] + 1 if history else 0)
        self.writer = SummaryWriter(str(info.log_dir), purge_step=purge if held else None)
        for point in history:
            if point[0] >= purge:
                self._write(point)
        params = flat_params({**info.params, **info.tags})
        metrics = {t: 0.0 for t in sorted({t for _, s in history for t in s}) if "acc/" in t}
        for summary in hparams(params, metrics):
            self.writer.file_writer.add_summary(summary)
        rows = "\n".join(f"| {k} | {v} |" for k, v in info.tags.items())
        self.writer.add_text("run/identity", f"| tag | value |\n|---|---|\n{rows}")
        self.writer.flush()

    def _write(self, point: Point) -> None:
        step, scalars = point
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log(self, point: Point) -> None:
        self._write(point)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.close()


def make() -> TensorBoardLogger:
    return TensorBoardLogger()
