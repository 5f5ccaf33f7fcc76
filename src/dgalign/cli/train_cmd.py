"""`dgalign train`: one training run with DomainBed's arguments (underscore spellings too)."""

from __future__ import annotations

import argparse

from dgalign.cli.ranges import integer, nonempty_path, number, seed
from dgalign.hparam_grids import DEFAULTS
from dgalign.tracking import LOGGERS
from dgalign.train import RunConfig, run_training
from dgalign.train.config import DEVICES, TASKS
from dgalign.utils.progress import add_progress_flag
from dgalign.utils.runtime import PRECISIONS


def _option(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add `--name-with-dashes` with DomainBed's `--name_with_underscores` as an alias."""
    spellings = [f"--{name}"]
    if "-" in name:
        spellings.append(f"--{name.replace('-', '_')}")
    parser.add_argument(*spellings, **kwargs)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train one model (DomainBed protocol)",
        description="Train one algorithm on one dataset with some environments held out. "
        "Rerunning the same command on an unfinished output directory resumes it.",
    )
    _option(parser, "dataset", required=True, help="dataset name (e.g. ColoredMNIST)")
    _option(parser, "algorithm", required=True, help="algorithm name (see `dgalign algorithms`)")
    _option(
        parser,
        "test-envs",
        type=integer(0),
        nargs="+",
        default=[0],
        metavar="I",
        help="indices of held-out test environments (default: 0)",
    )
    _option(parser, "output-dir", required=True, type=nonempty_path, help="run directory")
    _option(
        parser,
        "data-dir",
        default=None,
        type=nonempty_path,
        help="data directory (default: $DGALIGN_DATA, else the user cache dir)",
    )
    _option(parser, "hparams", default=None, help="JSON object of hyper-parameter overrides")
    _option(
        parser,
        "hparams-seed",
        type=seed(),
        default=0,
        help="0 = default hyper-parameters, else a random draw",
    )
    _option(
        parser,
        "trial-seed",
        type=seed(),
        default=0,
        help="seed of the in/out splits (shared across hyper-parameter draws)",
    )
    _option(parser, "seed", type=seed(), default=0, help="seed of everything else")
    _option(
        parser, "steps", type=integer(1), default=None, help="number of steps (default: dataset's)"
    )
    _option(
        parser,
        "checkpoint-freq",
        type=integer(1),
        default=None,
        help="evaluate and checkpoint every N steps (default: dataset's)",
    )
    _option(
        parser,
        "holdout-fraction",
        type=number(0.0, 1.0, lo_open=True, hi_open=True),
        default=0.2,
        help="fraction of each environment held out as its `out` split",
    )
    _option(parser, "device", choices=DEVICES, default="auto", help="compute device")
    _option(parser, "skip-model-save", action="store_true", help="do not write model.pt")
    _option(
        parser,
        "swa",
        action="store_true",
        help="also average the weights (SWA / moving average, from --swa-start) and evaluate "
        "the average at every checkpoint (swa_env*_acc, model_swa.pt)",
    )
    _option(
        parser,
        "swa-start",
        type=integer(0),
        default=100,
        help="first step whose weights enter the average (default: 100, as Arpit et al.)",
    )
    _option(
        parser,
        "swad",
        action="store_true",
        help="also keep SWAD's dense average over the validation-loss valley (Cha et al.) and "
        "evaluate it after the last step (swad_env*_acc in the last record, model_swad.pt)",
    )
    _option(
        parser,
        "autolr",
        action="store_true",
        help="ERM++'s automatic lr (DomainBed's train_autolr): lower the lr 10x when the "
        "training envs' out-split loss plateaus (after linear_steps), stop at the third "
        "decrease, then retrain on their in+out data with that schedule and merge its "
        "fd_env*_in_acc into the records (for --selection autolr); model.pt is the retrain. "
        "Not with --swa, --swad or --task domain_adaptation",
    )
    _option(
        parser,
        "task",
        choices=TASKS,
        default="domain_generalization",
        help="domain_adaptation also passes unlabelled test-environment data to update",
    )
    _option(
        parser,
        "uda-holdout-fraction",
        type=number(0.0, 1.0, hi_open=True),
        default=0.0,
        help="fraction of each test environment's in split held out as unlabelled uda split",
    )
    _option(
        parser,
        "save-model-every-checkpoint",
        action="store_true",
        help="also write model_step{N}.pt at every checkpoint",
    )
    _option(
        parser,
        "hparams-grid",
        default=None,
        help="fixed grid (e.g. swad) whose point --hparams-seed replaces the random draw",
    )
    _option(
        parser,
        "defaults",
        choices=DEFAULTS,
        default="domainbed-2020",
        help="whose defaults: domainbed-2020 (the paper's: torchvision ResNet-50, frozen "
        "BatchNorm) or domainbed-main (AugMix ResNet-50 resnet50_augmix, freeze_bn false)",
    )
    add_precision_options(parser)
    add_logger_option(parser)
    _option(
        parser,
        "restart-from-scratch",
        action="store_true",
        help="discard the directory's checkpoint, records and models (a damaged checkpoint, "
        "a finished run to redo) and train from step 0; never another run's directory",
    )
    add_progress_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = RunConfig(
        dataset=args.dataset,
        algorithm=args.algorithm,
        output_dir=args.output_dir,
        test_envs=list(args.test_envs),
        data_dir=args.data_dir,
        hparams=args.hparams,
        hparams_seed=args.hparams_seed,
        trial_seed=args.trial_seed,
        seed=args.seed,
        steps=args.steps,
        checkpoint_freq=args.checkpoint_freq,
        holdout_fraction=args.holdout_fraction,
        device=args.device,
        skip_model_save=args.skip_model_save,
        swa=args.swa,
        swa_start=args.swa_start,
        swad=args.swad,
        task=args.task,
        uda_holdout_fraction=args.uda_holdout_fraction,
        save_model_every_checkpoint=args.save_model_every_checkpoint,
        hparams_grid=args.hparams_grid,
        defaults=args.defaults,
        precision=args.precision,
        deterministic=args.deterministic,
        autolr=args.autolr,
    )
    run_training(
        config,
        progress=args.progress,
        loggers=args.logger,
        restart_from_scratch=args.restart_from_scratch,
    )
    return 0


def add_logger_option(parser: argparse.ArgumentParser) -> None:
    """`--logger NAME`, repeatable: the experiment trackers that also get the run's records."""
    parser.add_argument(
        "--logger",
        action="append",
        default=[],
        choices=LOGGERS,
        help="also log to this tracker (repeatable; needs the extra of the same name, e.g. "
        "pip install 'dgalign[tensorboard]'); see docs/tracking.md",
    )


def add_precision_options(parser: argparse.ArgumentParser) -> None:
    """`--precision {fp32,tf32,bf16}` and `--deterministic` (`dgalign.utils.runtime`)."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default, the reference of every table); tf32: TensorFloat-32 CUDA "
        "matmuls; bf16: the training step under bfloat16 autocast (see docs/precision.md)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="torch.use_deterministic_algorithms(True) and CUBLAS_WORKSPACE_CONFIG=:4096:8: "
        "bitwise-exact resume on GPU; ops without a deterministic kernel then fail",
    )
