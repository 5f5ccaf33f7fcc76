"""The arguments of one run, validated, and their DomainBed-compatible `args` record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dgalign.errors import ConfigError
from dgalign.utils.checks import check_count, check_seed
from dgalign.utils.runtime import PRECISIONS

DEVICES = ("auto", "cpu", "cuda")
TASKS = ("domain_generalization", "domain_adaptation")


@dataclass
class RunConfig:
    """Everything that defines a run. `steps` / `checkpoint_freq` of None mean the dataset's
    defaults. `hparams` is a JSON object string of overrides (DomainBed's `--hparams`).
    `swa` also keeps the running mean of the weights from step `swa_start` on
    (`dgalign.train.swa`) and evaluates it at every checkpoint; `swad` keeps SWAD's valley
    average (`dgalign.train.swad`) and evaluates it at the end. `task` "domain_adaptation"
    passes unlabelled minibatches of the test environments' `uda` splits (a fraction
    `uda_holdout_fraction` of their `in` splits) to `update`, as DomainBed.
    `hparams_grid` names a fixed grid (`dgalign.hparam_grids`) whose point `hparams_seed`
    replaces the random draw; `defaults` the DomainBed version whose defaults the run follows.
    `precision` (fp32, tf32, bf16) and `deterministic`: `dgalign.utils.runtime`. `autolr`:
    ERM++'s plateau lr schedule, then a full-data retrain (`dgalign.train.autolr`)."""

    dataset: str
    algorithm: str
    output_dir: str
    test_envs: list[int] = field(default_factory=lambda: [0])
    data_dir: str | None = None
    hparams: str | None = None
    hparams_seed: int = 0
    trial_seed: int = 0
    seed: int = 0
    steps: int | None = None
    checkpoint_freq: int | None = None
    holdout_fraction: float = 0.2
    device: str = "auto"
    skip_model_save: bool = False
    swa: bool = False
    swa_start: int = 100
    swad: bool = False
    task: str = "domain_generalization"
    uda_holdout_fraction: float = 0.0
    save_model_every_checkpoint: bool = False
    hparams_grid: str | None = None
    defaults: str = "domainbed-2020"
    precision: str = "fp32"
    deterministic: bool = False
    autolr: bool = False

    def validate(self, n_envs: int, env_names: tuple[str, ...] | list[str]) -> None:
        """Raise ConfigError with a one-line fix for any argument that cannot work."""
        if not str(self.output_dir).strip():
            raise ConfigError("--output-dir must be a non-empty path")
        for flag, seed in (
            ("--seed", self.seed),
            ("--hparams-seed", self.hparams_seed),
            ("--trial-seed", self.trial_seed),
        ):
            check_seed(flag, seed)
        if not self.test_envs:
            raise ConfigError("--test-envs needs at least one environment index")
        if len(set(self.test_envs)) != len(self.test_envs):
            raise ConfigError(f"--test-envs has duplicates: {self.test_envs}")
        for env in self.test_envs:
            if isinstance(env, bool) or not isinstance(env, int) or not 0 <= env < n_envs:
                names = ", ".join(f"{i}={n}" for i, n in enumerate(env_names))
                raise ConfigError(
                    f"test env {env} is out of range for {self.dataset}, which has "
                    f"{n_envs} environments ({names})"
                )
        if len(self.test_envs) >= n_envs:
            raise ConfigError(
                f"--test-envs {self.test_envs} leaves no training environment in {self.dataset}"
            )
        fraction = self.holdout_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ConfigError(f"--holdout-fraction must be a number in (0, 1), got {fraction!r}")
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"--holdout-fraction must be in (0, 1), got {fraction}")
        if self.steps is not None:
            check_count("--steps", self.steps)
        if self.checkpoint_freq is not None:
            check_count("--checkpoint-freq", self.checkpoint_freq)
        check_count("--swa-start", self.swa_start, 0)
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not 0.0 <= self.uda_holdout_fraction < 1.0:
            raise ConfigError(
                f"--uda-holdout-fraction must be in [0, 1), got {self.uda_holdout_fraction}"
            )
        if self.task == "domain_adaptation" and self.uda_holdout_fraction <= 0.0:
            raise ConfigError(
                "--task domain_adaptation needs unlabelled test data: pass "
                "--uda-holdout-fraction F with 0 < F < 1"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")

    def as_args(self) -> dict[str, Any]:
        """The `args` field of every record: our arguments plus DomainBed's extra keys, so
        DomainBed's `collect_results` can read our runs."""
        args = dataclasses.asdict(self)
        if not args["hparams_grid"]:
            args.pop("hparams_grid")
        if args["defaults"] == NEWER_DEFAULTS["defaults"]:
            args.pop("defaults")
        if not args["autolr"]:
            args.pop("autolr")
        return args

    def identity(self) -> dict[str, Any]:
        """The arguments that define the run's results (not where its files live or which
        device computes it): a run directory may only be resumed with the same identity."""
        ident = dataclasses.asdict(self)
        for key in ("output_dir", "data_dir", "device"):
            ident.pop(key)
        if not self.swa:  # runs without SWA keep the identity they had before SWA existed
            ident.pop("swa")
            ident.pop("swa_start")
        for key, default in NEWER_DEFAULTS.items():  # likewise for the later options
            if ident[key] == default:
                ident.pop(key)
        return ident


#: Options added after run directories existed, with the value that leaves a run as it was.
NEWER_DEFAULTS: dict[str, Any] = {
    "swad": False,
    "task": "domain_generalization",
    "uda_holdout_fraction": 0.0,
    "save_model_every_checkpoint": False,
    "hparams_grid": None,
    "defaults": "domainbed-2020",
    "precision": "fp32",
    "deterministic": False,
    "autolr": False,
}
