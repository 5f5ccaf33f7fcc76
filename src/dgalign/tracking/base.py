"""What every tracker backend gets: the run's identity (`RunInfo`), its scalars as points
(step, {name: value}), and the `Logger` protocol the backends implement.

Metric names group the record's keys the way the trackers' UIs group tags (by the part before
the first `/`):
    env{i}_{in,out}_acc      -> acc/env{i}_{in,out}
    swa_env{i}_{in,out}_acc  -> swa_acc/env{i}_{in,out}
    hess_dist, grad_dist     -> curvature/hess_dist, curvature/grad_dist
    step_time, mem_gb, epoch -> system/step_time, system/mem_gb, system/epoch
    any other number (the values `update` returns: loss, penalties, ...) -> train/<key>
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

Scalars = dict[str, float]
Point = tuple[int, Scalars]  # (step, {metric name: value})

_ACC = re.compile(r"(swa_)?(env\d+_(?:in|out))_acc")
_GROUPS = {
    "hess_dist": "curvature",
    "grad_dist": "curvature",
    "step_time": "system",
    "mem_gb": "system",
    "epoch": "system",
}
_NOT_SCALARS = {"step", "args", "hparams"}


def metric_name(key: str) -> str:
    """The tracker's name of a results.jsonl key (module docstring)."""
    match = _ACC.fullmatch(key)
    if match:
        return ("swa_acc/" if match.group(1) else "acc/") + match.group(2)
    return f"{_GROUPS.get(key, 'train')}/{key}"


def record_point(record: dict[str, Any]) -> Point:
    """A results.jsonl record as (step, scalars): every number of the record but the step."""
    scalars = {
        metric_name(k): float(v)
        for k, v in record.items()
        if k not in _NOT_SCALARS and isinstance(v, int | float) and not isinstance(v, bool)
    }
    return int(record["step"]), scalars


@dataclass
class RunInfo:
    """One run as the trackers see it.

    `log_dir`: where TensorBoard event files and W&B's files go. `key`: what identifies the
    run across attempts (its absolute directory): W&B's run id and MLflow's `dgalign.run_key`
    tag derive from it, so a resumed run continues the same tracker run. `group`: the sweep or
    reproduction it belongs to (W&B group, default MLflow experiment). `store_dir`: where the
    default MLflow file store (`store_dir/mlruns`) lives. `tags`: the identity (run hash,
    algorithm, dataset, test envs, trial seed, hparams seed); `params`: hyper-parameters and
    arguments. `source`: the directory `dgalign runs export` replays the run from."""

    log_dir: Path
    key: str
    name: str
    group: str
    store_dir: Path
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # what `dgalign runs export` replays (default: log_dir)


class Logger(Protocol):
    """A tracker backend. `start` gets the points the run already has (a resumed run's records
    or a finished run's, for export) and logs those the tracker does not hold yet; `log` adds
    one new point; `finish` closes the tracker's run ("FINISHED", "FAILED" or "KILLED")."""

    name: str

    def start(self, info: RunInfo, history: list[Point]) -> None: ...

    def log(self, point: Point) -> None: ...

    def finish(self, status: str) -> None: ...


def flat_params(params: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Parameters as scalars (lists, dicts and None as their JSON text), as trackers store
    them."""
    import json

    out: dict[str, str | int | float | bool] = {}
    for key, value in sorted(params.items()):
        if isinstance(value, bool | int | float | str):
            out[key] = value
        else:
            out[key] = json.dumps(value, sort_keys=True)
    return out
