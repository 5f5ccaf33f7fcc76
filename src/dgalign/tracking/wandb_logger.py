"""Weights & Biases: one W&B run per dgalign run, in project $WANDB_PROJECT (default
"dgalign"), grouped by the sweep or reproduction (`group`), its files under the run's
directory (`<log dir>/wandb/`).

Offline unless an API key is set ($WANDB_API_KEY or a `wandb login` entry in ~/.netrc), so
it never waits on a login prompt or the network; `wandb sync <log dir>/wandb/offline-run-*`
uploads later. $WANDB_MODE=offline|disabled is honoured. The run id derives from the run's
key (its absolute directory), and `resume="allow"` continues that run after a crash: online,
W&B knows the last step it holds (`run.step`) and the history is logged from there; offline,
every attempt is a new local run of the same id, so a resumed attempt logs the whole history
again (the newest offline run of a directory is always complete, and `wandb sync` keeps each
step once: W&B drops steps that do not increase).
"""

from __future__ import annotations

import hashlib
import netrc
import os
from urllib.parse import urlparse

from dgalign.tracking.base import Point, RunInfo, flat_params


def has_api_key() -> bool:
    """An API key in $WANDB_API_KEY or in ~/.netrc for W&B's host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def mode() -> str:
    """ "offline" without an API key or when $WANDB_MODE asks; "disabled" when it asks; else
    "online"."""
    asked = os.environ.get("WANDB_MODE", "").lower()
    if asked in ("offline", "dryrun", "disabled"):
        return "disabled" if asked == "disabled" else "offline"
    return "online" if has_api_key() else "offline"


def run_id(key: str) -> str:
    """A W&B run id (hex, 32 characters) from the run's key."""
    return hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).hexdigest()[:32]


class WandbLogger:
    name = "wandb"

    def start(self, info: RunInfo, history: list[Point]) -> None:
        import wandb

        info.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "dgalign"),
            id=run_id(info.key),
            resume="allow",
            mode=mode(),
            dir=str(info.log_dir),
            name=info.name,
            group=info.group,
            job_type=info.tags.get("algorithm"),
            tags=[f"{k}={v}" for k, v in info.tags.items() if k != "run_key"][:64],
            config=flat_params({**info.params, **info.tags}),
            settings=wandb.Settings(console="off", quiet=True, silent=True),
            reinit="create_new",
        )
        first = self.run.step if self.run.resumed else 0
        for point in history:
            if point[0] >= first:
                self.log(point)

    def log(self, point: Point) -> None:
        step, scalars = point
        self.run.log(scalars, step=step)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def make() -> WandbLogger:
    return WandbLogger()
