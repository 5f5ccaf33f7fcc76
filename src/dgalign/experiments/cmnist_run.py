"""`dgalign reproduce cmnist`: train every method's restarts, resumably, and write the report.

Run directory layout (all JSON written atomically):
    config.json                  what defines the results (protocol, data, seed)
    <method>/restart<k>.json     final accuracies, per-step traces, dynamics, step times
    <method>/restart<k>.pt       restart k's weights (`nn.Linear` layout, see cmnist_model)
    <method>/results.json        all requested restarts of the method (written when complete)
    report.md, summary.json, *.png   (`cmnist_report`)
A restart whose JSON exists is never trained again, so an interrupted run resumes where it
stopped; the missing restarts of a method are trained together as batches (`chunk` at a time;
restarts whose training envs differ in size, which happens only with label shift on a
sub-sampled pool, go in separate batches).
Restart k's data and initial weights depend only on (seed, k): all restarts' environments and
weights are drawn in order from one seeded stream before training. Hutchinson's probes come
from torch's global RNG, seeded per batch by (seed, method, restarts in the batch). Each
method is a table row of `cmnist_rows`: a registered algorithm and its overrides. `--select`
adds the row of HessianDiag's curvature weight chosen on the training envs
(`cmnist_select`; its candidates under selection/).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgalign.errors import ConfigError, RunDirError
from dgalign.experiments.cmnist_data import DataConfig, RestartData, generate_restarts
from dgalign.experiments.cmnist_layout import method_dir, restart_paths
from dgalign.experiments.cmnist_report import write_report
from dgalign.experiments.cmnist_rows import CORE, MEAN_TERMS, METHODS, Row, all_rows
from dgalign.experiments.cmnist_train import Protocol, train_restarts
from dgalign.tracking import check_loggers
from dgalign.train.config import check_count, check_seed
from dgalign.utils.io import atomic_torch_save, atomic_write_json
from dgalign.utils.runtime import configure_precision, resolve_device
from dgalign.utils.seeding import seed_hash

LOG = logging.getLogger("dgalign.reproduce")
QUICK_RESTARTS = 1


@dataclass
class ReproduceConfig:
    """Everything `dgalign reproduce cmnist` needs; `identity()` must match to resume a dir."""

    output_dir: str
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    restarts: int = 10
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    protocol: Protocol = field(default_factory=Protocol)
    quick: bool = False
    mean: str = "envs"
    device: str = "cpu"
    dtype: str = "float32"
    precision: str = "fp32"  # fp32 or tf32 (`dgalign.utils.runtime.configure_precision`)
    dynamics_every: int = 5
    chunk: int = 0  # restarts per batch; 0 = all missing ones at once
    fgsm_eps: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.05, 0.1, 0.2])
    data_dir: str | None = None
    progress: bool | None = None
    loggers: list[str] = field(default_factory=list)  # trackers of each restart (`--logger`)
    select: str | None = None  # `--select RULE`: also the row of the selected curv_weight
    variant: str = "paper"  # the name of `data`'s shift (`cmnist_data.VARIANTS`), for reports

    @property
    def reduced(self) -> bool:
        """Whether this is not the paper's protocol (QUICK aside): another width, pool or
        schedule."""
        return self.protocol != Protocol() or self.data.pool != DataConfig().pool

    @property
    def report_methods(self) -> list[str]:
        """The rows of the report: the methods asked for and the selected row, if any."""
        if self.select is None:
            return list(self.methods)
        from dgalign.experiments.cmnist_select import selected_name

        return [*self.methods, selected_name(self.select)]

    def identity(self) -> dict:
        """The settings that define the numbers (not the methods or restart count asked for)."""
        return {
            "seed": self.seed,
            "data": self.data.identity(),
            "protocol": dataclasses.asdict(self.protocol),
            "mean": self.mean,
            "dtype": self.dtype,
            "dynamics_every": self.dynamics_every,
        } | ({} if self.precision == "fp32" else {"precision": self.precision})


def quick_config(config: ReproduceConfig, methods: list[str] | None = None) -> ReproduceConfig:
    """The QUICK run: restart 0 of the full protocol (same data, model and schedule) for the
    core rows `CORE` (or `methods`). No reduced protocol keeps the paper's ranking (narrower
    MLPs and smaller pools were measured: docs/reproduction.md), so QUICK only cuts restarts
    and rows; its directory is a valid start of the full run, which adds the other restarts."""
    return dataclasses.replace(
        config,
        quick=True,
        restarts=min(config.restarts, QUICK_RESTARTS),
        methods=list(methods or CORE),
    )


def check_config(config: ReproduceConfig) -> None:
    """ConfigError (one line) for arguments that cannot work."""
    known = all_rows()
    for name in config.methods:
        if name not in known:
            raise ConfigError(f"unknown method {name!r}; valid: {', '.join(known)}")
    if not str(config.output_dir).strip():
        raise ConfigError("--output-dir must be a non-empty path")
    check_seed("--seed", config.seed)
    check_count("--restarts", config.restarts)
    check_count("--dynamics-every", config.dynamics_every)
    check_count("--batch-restarts", config.chunk, 0)
    for eps in config.fgsm_eps:
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < math.inf:
            raise ConfigError(f"--fgsm-eps values must be finite numbers >= 0, got {eps!r}")
    if config.mean not in MEAN_TERMS:
        raise ConfigError(f"--mean-term must be one of {MEAN_TERMS}, got {config.mean!r}")
    if config.dtype not in ("float32", "float64"):
        raise ConfigError(f"--dtype must be float32 or float64, got {config.dtype!r}")
    if config.precision not in ("fp32", "tf32"):
        raise ConfigError(f"--precision must be fp32 or tf32, got {config.precision!r}")
    resolve_device(str(config.device))  # ConfigError for a bad device or CUDA without a GPU
    check_loggers(config.loggers)
    config.data.validate()
    if config.select is not None:
        from dgalign.experiments.cmnist_select import check_rule

        check_rule(config.select)


def claim(config: ReproduceConfig) -> Path:
    """Create or reuse the run dir; RunDirError if it holds results of other settings."""
    root = Path(config.output_dir)
    path = root / "config.json"
    ident = config.identity()
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("identity") != ident:
            raise RunDirError(
                f"{root} holds results of other settings (see {path}); use another --output-dir"
            )
    else:
        atomic_write_json(path, {"identity": ident, "quick": config.quick})
    return root


def generate(config: ReproduceConfig, count: int) -> tuple[list[RestartData], list[dict]]:
    """Environments and initial weights of restarts 0..count-1 (`generate_restarts`)."""
    return generate_restarts(
        config.seed, config.data, config.protocol.hidden, config.data_dir, count
    )


def batches(todo: list[int], data: list[RestartData], chunk: int) -> list[list[int]]:
    """Restarts trained together: equal training-env sizes (stacking needs them; they differ
    only with label shift on a sub-sampled pool), at most `chunk` (0: no limit) per batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k in todo:
        groups.setdefault(tuple(len(e) for e in data[k].envs), []).append(k)
    out = []
    for ks in groups.values():
        size = chunk or len(ks)
        out += [ks[i : i + size] for i in range(0, len(ks), size)]
    return out


def train_method(config: ReproduceConfig, root: Path, method: Row, data, inits) -> list[dict]:
    """Train the missing restarts of `method` (in chunks) and return all requested records."""
    todo = [
        k for k in range(config.restarts) if not restart_paths(root, method.name, k)[0].exists()
    ]
    dtype = getattr(torch, config.dtype)
    for ks in batches(todo, data, config.chunk):
        torch.manual_seed(seed_hash(config.seed, method.name, tuple(ks)))
        LOG.info("%s: training restarts %s", method.name, ks)
        trained = train_restarts(
            [data[k] for k in ks],
            [inits[k] for k in ks],
            method,
            config.protocol,
            label_shift=config.data.label_shift,
            mean=config.mean,
            dtype=dtype,
            device=resolve_device(str(config.device)),  # `auto` -> CUDA when present
            dynamics_every=config.dynamics_every,
            progress=config.progress,
            desc=f"{method.name} restarts {ks[0]}-{ks[-1]}",
        )
        step_time = float(np.median(trained.step_times))
        for k, record, state in zip(ks, trained.records, trained.states, strict=True):
            record.update(
                restart=k,
                batch_restarts=len(ks),
                step_time=step_time,
                step_times=trained.step_times,
                device=str(config.device),
                quick=config.quick,
            )
            json_path, pt_path = restart_paths(root, method.name, k)
            atomic_torch_save(pt_path, {"state": state, "restart": k, "method": method.name})
            atomic_write_json(json_path, record)
        if config.loggers:  # each restart as a tracker run, once its record is on disk
            from dgalign.tracking.replay import log_restarts

            log_restarts(
                config.loggers,
                root,
                config.identity(),
                [restart_paths(root, method.name, k)[0] for k in ks],
            )
    records = [
        json.loads(restart_paths(root, method.name, k)[0].read_text())
        for k in range(config.restarts)
    ]
    atomic_write_json(method_dir(root, method.name) / "results.json", {"restarts": records})
    return records


def run_reproduction(config: ReproduceConfig) -> Path:
    """Train (resuming) every requested method, then write the report; returns the run dir."""
    check_config(config)
    configure_precision(config.precision)
    root = claim(config)
    methods = all_rows()
    missing = [
        m
        for m in config.methods
        if any(not restart_paths(root, m, k)[0].exists() for k in range(config.restarts))
    ]
    if config.select is not None:
        from dgalign.experiments.cmnist_select import selected_name

        name = selected_name(config.select)
        if any(not restart_paths(root, name, k)[0].exists() for k in range(config.restarts)):
            missing.append(name)
    if missing:
        data, inits = generate(config, config.restarts)
        for name in missing:
            if name in methods:
                train_method(config, root, methods[name], data, inits)
            else:
                from dgalign.experiments.cmnist_select import run_selection

                run_selection(config, root, data, inits, config.select)
    return write_report(root, config)
