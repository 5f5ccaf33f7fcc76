"""One training run: arguments, loop, evaluation, checkpoints, records, SWA / SWAD. Its run
directory (files, lock, identity) is `dgalign.runs`."""

from dgalign.train.config import RunConfig
from dgalign.train.loop import run_training

__all__ = ["RunConfig", "run_training"]
