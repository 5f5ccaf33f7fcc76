"""The `RunInfo` of a training run (ours or DomainBed's) and of a restart of a Colored MNIST
reproduction, from what their directories hold.

Identity tags: `run_hash` (a sweep job's directory name, which is the MD5 of its train
arguments as DomainBed names it; for any other directory the MD5 of the arguments that define
the run), `algorithm`, `dataset`, `test_envs`, `trial_seed`, `hparams_seed`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from dgalign.tracking.base import Point, RunInfo

_MD5 = re.compile(r"[0-9a-f]{32}")
_NOT_IDENTITY = {"output_dir", "data_dir", "device"}


def run_hash(run_dir: Path, args: dict[str, Any]) -> str:
    """The directory's name when it is an MD5 (a sweep job's), else the MD5 of `args` without
    where the run's files live or which device computes it."""
    if _MD5.fullmatch(run_dir.name):
        return run_dir.name
    ident = {k: v for k, v in args.items() if k not in _NOT_IDENTITY}
    return hashlib.md5(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def train_run_info(run_dir: str | Path, args: dict[str, Any], hparams: dict[str, Any]) -> RunInfo:
    """A training run in `run_dir` with its `args` record (DomainBed's or ours) and
    hyper-parameters. The group is the directory holding it (the sweep)."""
    run_dir = Path(run_dir).resolve()
    test_envs = ",".join(str(e) for e in args.get("test_envs", []))
    tags = {
        "run_hash": run_hash(run_dir, args),
        "algorithm": str(args.get("algorithm", "?")),
        "dataset": str(args.get("dataset", "?")),
        "test_envs": test_envs,
        "trial_seed": str(args.get("trial_seed", "?")),
        "hparams_seed": str(args.get("hparams_seed", "?")),
    }
    name = (
        f"{tags['algorithm']} {tags['dataset']} test {test_envs} "
        f"h{tags['hparams_seed']} t{tags['trial_seed']}"
    )
    params = {f"hp.{k}": v for k, v in hparams.items()}
    params.update({f"arg.{k}": v for k, v in args.items() if k not in _NOT_IDENTITY})
    return RunInfo(
        log_dir=run_dir,
        key=str(run_dir),
        name=name,
        group=run_dir.parent.name,
        store_dir=run_dir.parent,
        tags=tags,
        params=params,
    )


def restart_run_info(root: str | Path, restart_json: Path, identity: dict[str, Any]) -> RunInfo:
    """Restart k of a method of the reproduction in `root`, whose record is `restart_json`
    (`<root>/<method dir>/restart<k>.json`); `identity` is the reproduction's config identity.
    Its event and W&B files go to `<root>/<method dir>/restart<k>/`."""
    root = Path(root).resolve()
    record = json.loads(Path(restart_json).read_text())
    restart = int(record["restart"])
    method = str(record["method"])
    log_dir = root / Path(restart_json).parent.name / f"restart{restart}"
    ident = {"identity": identity, "method": method, "restart": restart}
    digest = hashlib.md5(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    data = identity.get("data", {})
    tags = {
        "run_hash": digest,
        "algorithm": method,
        "dataset": "ColoredMNIST-IRM" + ("-labelshift" if data.get("label_shift") else ""),
        "test_envs": "test",
        "trial_seed": str(restart),
        "hparams_seed": "protocol",
    }
    params = {"restart": restart, "quick": identity.get("quick")}
    params.update({f"protocol.{k}": v for k, v in identity.get("protocol", {}).items()})
    params.update({f"data.{k}": v for k, v in data.items()})
    params.update({k: identity.get(k) for k in ("seed", "mean", "dtype", "dynamics_every")})
    return RunInfo(
        log_dir=log_dir,
        key=str(log_dir),
        name=f"{method} restart {restart}",
        group=root.name,
        store_dir=root,
        tags=tags,
        params=params,
        source=root,
    )


def restart_points(record: dict[str, Any]) -> list[Point]:
    """A restart record's per-step values as points: `train/<key>` every step (training-env
    accuracies, NLL, penalty), `system/step_time` (the batch's wall time of that step),
    `eval/<key>` every `dynamics_every` steps (test and gray accuracy, test loss, the
    training envs' head-Hessian distance)."""
    points: dict[int, dict[str, float]] = {}
    for key, values in record.get("per_step", {}).items():
        for step, value in enumerate(values):
            points.setdefault(step, {})[f"train/{key}"] = float(value)
    for step, value in enumerate(record.get("step_times", [])):
        points.setdefault(step, {})["system/step_time"] = float(value)
    dynamics = record.get("dynamics", {})
    for key, values in dynamics.items():
        if key == "step":
            continue
        for step, value in zip(dynamics["step"], values, strict=True):
            points.setdefault(int(step), {})[f"eval/{key}"] = float(value)
    return sorted(points.items())
