"""The job grid of a sweep, with DomainBed's semantics.

Jobs = trials x datasets x algorithms x test-env sets x hyper-parameter seeds, in DomainBed's
order. Each job's directory is named by the MD5 of the JSON (sorted keys) of its train
arguments, as DomainBed names it, except that `data_dir` is not part of the hash: moving the
data does not orphan a sweep.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgalign.errors import ConfigError
from dgalign.utils.seeding import seed_hash

PROTOCOLS = ("domainbed", "swad")


def held_out_sets(n_envs: int, single_only: bool) -> list[list[int]]:
    """Every single test env, and (unless `single_only`) every pair, in DomainBed's order:
    [0], [0, 1], [0, 2], [1], [1, 2], [2]. Pairs need at least 3 environments."""
    sets: list[list[int]] = []
    for i in range(n_envs):
        sets.append([i])
        if not single_only and n_envs >= 3:
            sets.extend([i, j] for j in range(i + 1, n_envs))
    return sets


@dataclass(frozen=True)
class Job:
    """One training run of a sweep: its train arguments and its run directory."""

    train_args: dict[str, Any]
    output_dir: Path
    data_dir: str | None = None
    loggers: tuple[str, ...] = ()  # tracker backends (not part of the hash, as data_dir)
    plugins: tuple[str, ...] = ()  # `--plugin`s every process running it loads (not hashed)

    @property
    def name(self) -> str:
        """The directory name (the hash of the train arguments)."""
        return self.output_dir.name

    def describe(self) -> str:
        a = self.train_args
        return (
            f"{a['dataset']} {a['algorithm']} test_envs={a['test_envs']} "
            f"hparams_seed={a['hparams_seed']} trial_seed={a['trial_seed']}"
        )

    def train_argv(self) -> list[str]:
        """The arguments of `dgalign train` that run this job (no progress bar), after the
        `--plugin`s it needs."""
        argv = [arg for plugin in self.plugins for arg in ("--plugin", plugin)] + ["train"]
        for key, value in sorted(self.train_args.items()):
            if isinstance(value, bool):  # store_true flags
                if value:
                    argv.append("--" + key.replace("_", "-"))
                continue
            argv.append("--" + key.replace("_", "-"))
            if isinstance(value, list):
                argv.extend(str(v) for v in value)
            else:
                argv.append(str(value))
        argv += ["--output-dir", str(self.output_dir)]
        if self.data_dir is not None:
            argv += ["--data-dir", self.data_dir]
        for logger in self.loggers:
            argv += ["--logger", logger]
        return [*argv, "--no-progress"]

    def command(self, python: str | None = None) -> list[str]:
        """The full command line: `python -m dgalign train ...`."""
        return [python or sys.executable, "-m", "dgalign", *self.train_argv()]

    def command_str(self) -> str:
        return shlex.join(self.command("python"))

    def config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `dgalign.train.RunConfig` for this job."""
        kwargs = dict(self.train_args)
        kwargs["test_envs"] = list(kwargs["test_envs"])
        return {**kwargs, "output_dir": str(self.output_dir), "data_dir": self.data_dir}


def job_hash(train_args: dict[str, Any]) -> str:
    """DomainBed's directory name: MD5 of the key-sorted JSON of the train arguments."""
    return hashlib.md5(json.dumps(train_args, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass
class SweepSpec:
    """The arguments of `dgalign sweep`: the grid and the options every job shares.

    `n_hparams` is an exclusive upper bound, as DomainBed's: seeds n_hparams_from .. n_hparams-1
    (seed 0 is the default configuration). `seed` 0 gives DomainBed's per-job seeds; any other
    value is mixed into them.

    `protocol` "swad" is Cha et al.'s protocol (the FGMix paper's): the 18 points of the fixed
    grid `hparam_grids.GRIDS["swad"]` instead of random draws (hparams seeds 1..18 name the
    points; `n_hparams*` are ignored), SWAD on in every run, single test environments only
    (training-domain validation needs no pairs).

    `precision`, `deterministic` and `autolr` are every job's `--precision`, `--deterministic`
    and `--autolr`; they enter a job's arguments (and so its directory name) only when not the
    defaults, so a sweep without them keeps DomainBed's job hashes."""

    output_dir: str
    datasets: list[str]
    algorithms: list[str]
    n_hparams_from: int = 0
    n_hparams: int = 20
    n_trials: int = 3
    single_test_envs: bool = False
    steps: int | None = None
    checkpoint_freq: int | None = None
    hparams: str | None = None
    holdout_fraction: float = 0.2
    data_dir: str | None = None
    seed: int = 0
    loggers: list[str] = field(default_factory=list)  # every job's `--logger`s
    plugins: list[str] = field(default_factory=list)  # every job's `--plugin`s
    protocol: str = "domainbed"
    defaults: str = "domainbed-2020"
    precision: str = "fp32"  # every job's `--precision` (`dgalign.utils.runtime`)
    deterministic: bool = False  # every job's `--deterministic`
    autolr: bool = False  # every job's `--autolr` (ERM++'s lr schedule + full-data retrain)
    env_counts: dict[str, int] = field(default_factory=dict, repr=False)

    def validate(self) -> None:
        """Raise ConfigError (one line) for anything that cannot make a sweep."""
        from dgalign import algorithms
        from dgalign.algorithms.spaces import resolve_hparams
        from dgalign.data import get_dataset_class
        from dgalign.tracking import check_loggers
        from dgalign.utils.checks import check_count, check_seed
        from dgalign.utils.runtime import PRECISIONS

        if not str(self.output_dir).strip():
            raise ConfigError("--output-dir must be a non-empty path")
        check_seed("--seed", self.seed)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.autolr and self.protocol == "swad":
            raise ConfigError(
                "--autolr cannot be combined with --protocol swad (its runs use --swad, which "
                "--autolr does not support); use --protocol domainbed"
            )
        if not self.datasets:
            raise ConfigError("--datasets needs at least one dataset name")
        if not self.algorithms:
            raise ConfigError("--algorithms needs at least one algorithm name")
        for name, value in (("--n-trials", self.n_trials), ("--n-hparams", self.n_hparams)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if not 0 <= self.n_hparams_from < self.n_hparams:
            raise ConfigError(
                f"--n-hparams-from {self.n_hparams_from} must be in [0, --n-hparams "
                f"{self.n_hparams}) (hyper-parameter seeds n_hparams_from .. n_hparams-1)"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"--holdout-fraction must be in (0, 1), got {self.holdout_fraction}")
        for name, value in (("--steps", self.steps), ("--checkpoint-freq", self.checkpoint_freq)):
            if value is not None:
                check_count(name, value)
        for dataset in self.datasets:
            self.env_counts[dataset] = len(get_dataset_class(dataset).ENVIRONMENTS)
        check_loggers(self.loggers)  # the extras are checked here, not in every job
        for algorithm in self.algorithms:
            algorithms.get(algorithm)
            for dataset in self.datasets:  # bad --hparams fail here, before any job starts
                resolve_hparams(algorithm, dataset, 0, 0, self.hparams)

    def n_envs(self, dataset: str) -> int:
        if dataset not in self.env_counts:
            from dgalign.data import get_dataset_class

            self.env_counts[dataset] = len(get_dataset_class(dataset).ENVIRONMENTS)
        return self.env_counts[dataset]

    def hparams_seeds(self) -> range:
        """The hyper-parameter seeds of every (dataset, algorithm, test envs): the random
        draws, or the points of the protocol's grid."""
        if self.protocol == "swad":
            from dgalign.hparam_grids import GRIDS

            return range(1, len(GRIDS["swad"]) + 1)
        return range(self.n_hparams_from, self.n_hparams)

    def iter_train_args(self) -> Iterator[dict[str, Any]]:
        """Train arguments of every job, in DomainBed's order."""
        single = self.single_test_envs or self.protocol == "swad"
        for trial_seed in range(self.n_trials):
            for dataset in self.datasets:
                for algorithm in self.algorithms:
                    for test_envs in held_out_sets(self.n_envs(dataset), single):
                        for hparams_seed in self.hparams_seeds():
                            yield self._train_args(
                                dataset, algorithm, test_envs, hparams_seed, trial_seed
                            )

    def _train_args(self, dataset, algorithm, test_envs, hparams_seed, trial_seed) -> dict:
        key = (dataset, algorithm, test_envs, hparams_seed, trial_seed)
        args: dict[str, Any] = {
            "dataset": dataset,
            "algorithm": algorithm,
            "test_envs": test_envs,
            "holdout_fraction": self.holdout_fraction,
            "hparams_seed": hparams_seed,
            "trial_seed": trial_seed,
            "seed": seed_hash(*key) if self.seed == 0 else seed_hash(self.seed, *key),
        }
        optional = {"steps": self.steps, "checkpoint_freq": self.checkpoint_freq}
        optional["hparams"] = self.hparams
        args.update({k: v for k, v in optional.items() if v is not None})
        if self.protocol == "swad":
            args.update(hparams_grid="swad", swad=True)
        if self.defaults != "domainbed-2020":  # the default keeps DomainBed's job hashes
            args["defaults"] = self.defaults
        if self.precision != "fp32":  # likewise for the precision switches
            args["precision"] = self.precision
        if self.deterministic:
            args["deterministic"] = True
        if self.autolr:
            args["autolr"] = True
        return args

    def jobs(self) -> list[Job]:
        """Every job of the sweep, with its run directory under `output_dir`."""
        root = Path(self.output_dir).resolve()
        loggers, plugins = tuple(self.loggers), tuple(self.plugins)
        return [
            Job(args, root / job_hash(args), self.data_dir, loggers, plugins)
            for args in self.iter_train_args()
        ]

    def shape(self) -> str:
        """The grid as a product, e.g. `2 trials x 1 dataset x 2 algorithms x ...`."""
        single = self.single_test_envs or self.protocol == "swad"
        env_sets = sorted({len(held_out_sets(self.n_envs(d), single)) for d in self.datasets})
        sets = "/".join(map(str, env_sets))
        n_h = len(self.hparams_seeds())
        return (
            f"{self.n_trials} trial(s) x {len(self.datasets)} dataset(s) x "
            f"{len(self.algorithms)} algorithm(s) x {sets} test-env set(s) x {n_h} hparams seed(s)"
        )
