"""`dgalign reproduce cmnist`: the Hessian-alignment paper's Colored MNIST results (IRM protocol,
Tables 2, 3, 5, 7, 8, Figs 3-5); `dgalign reproduce cmnist-fig4 BALANCED LABELSHIFT`: the
Hessian distances of two finished runs side by side; `dgalign reproduce cmnist-table BALANCED
LABELSHIFT`: their accuracies in one table beside the paper's. See docs/reproduction.md."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dgalign.cli.ranges import integer, nonempty_path, number, seed
from dgalign.cli.train_cmd import add_logger_option
from dgalign.experiments.cmnist_data import SPLITS, VARIANTS, DataConfig, variant
from dgalign.experiments.cmnist_rows import ABLATIONS, CORE, MEAN_TERMS, METHODS
from dgalign.experiments.cmnist_select import RULES
from dgalign.utils.progress import add_progress_flag

DEFAULT_EPS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]
#: The reduced-protocol options: the field they set, the part of `ReproduceConfig` holding it,
#: their least value, what the field is and its default.
REDUCED = (
    ("hidden", "protocol", 1, "hidden width of the MLP", "the protocol's 390"),
    ("pool", "data", 2, "training images of both envs together", "50,000"),
    ("steps", "protocol", 2, "training steps", "the protocol's 501"),
    ("anneal_iters", "protocol", 0, "step of the penalty switch", "the protocol's 190"),
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("reproduce", help="reproduce a paper's experiment")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    cm = targets.add_parser(
        "cmnist",
        help="Colored MNIST (IRM protocol) of the Hessian-alignment paper, all methods",
        description=__doc__,
    )
    cm.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="M",
        help=f"methods to run (default: all main rows; with --quick {', '.join(CORE)}): "
        f"{', '.join(METHODS)}",
    )
    cm.add_argument(
        "--ablations",
        action="store_true",
        help=f"also run the alpha/beta ablations: {', '.join(ABLATIONS)}",
    )
    cm.add_argument("--restarts", type=integer(1), default=10, help="restarts (default 10)")
    cm.add_argument("--seed", type=seed(), default=0, help="seed, set once before all restarts")
    cm.add_argument("--label-shift", action="store_true", help="the imbalanced variant")
    cm.add_argument(
        "--majority", type=number(0.5, 1.0), default=0.97, help="label-shift ratio (0.97)"
    )
    cm.add_argument(
        "--label-shift-split",
        choices=SPLITS,
        default="script",
        help="cut points: the authors' script (default) or per-class counts",
    )
    cm.add_argument(
        "--variant",
        choices=list(VARIANTS),
        default="paper",
        help="the shift: "
        + "; ".join(f"{v.name}: {v.description}" for v in VARIANTS.values()).replace("%", "%%")
        + " (docs/reproduction.md)",
    )
    cm.add_argument(
        "--select",
        choices=RULES,
        default=None,
        help="also the row HessianDiag-sel(RULE): curv_weight chosen per restart on held-out "
        "parts of the training envs only (docs/reproduction.md)",
    )
    for name, _, low, what, default in REDUCED:
        cm.add_argument(
            "--" + name.replace("_", "-"),
            type=integer(low),
            default=None,
            help=f"{what} (reduced protocol; default {default})",
        )
    cm.add_argument(
        "--quick",
        action="store_true",
        help="QUICK look: restart 0 of the full protocol for the core rows "
        f"({', '.join(CORE)}); the full run can continue its directory",
    )
    cm.add_argument(
        "--output-dir",
        default=None,
        type=nonempty_path,
        help="default runs/reproduce-cmnist[-labelshift][-quick]",
    )
    cm.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N"
    )
    cm.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    cm.add_argument(
        "--precision",
        choices=("fp32", "tf32"),
        default="fp32",
        help="fp32 (default, the paper's tables) or tf32 (TensorFloat-32 CUDA matmuls); bf16 "
        "is `dgalign train` only (the step's backward is written by hand)",
    )
    cm.add_argument(
        "--dynamics-every",
        type=integer(1),
        default=5,
        help="test acc/loss, gray acc and Hessian distance every K steps (and the last)",
    )
    cm.add_argument(
        "--fgsm-eps",
        type=number(0.0),
        nargs="+",
        default=DEFAULT_EPS,
        help="FGSM epsilons for the robustness table/plot",
    )
    cm.add_argument(
        "--batch-restarts",
        type=integer(0),
        default=0,
        help="restarts trained together (default 0: all missing ones)",
    )
    cm.add_argument(
        "--mean-term",
        choices=MEAN_TERMS,
        default="envs",
        help="mean terms from the mean of env losses (scripts) or the pooled loss",
    )
    cm.add_argument(
        "--data-dir",
        default=None,
        type=nonempty_path,
        help="MNIST location (default $DGALIGN_DATA)",
    )
    cm.add_argument(
        "--report-only",
        action="store_true",
        help="only (re)write the report from the saved restarts",
    )
    add_progress_flag(cm)
    add_logger_option(cm)
    cm.set_defaults(handler=run)
    fig4 = targets.add_parser("cmnist-fig4", help="Fig 4: Hessian distance, balanced vs shift")
    fig4.add_argument("balanced", help="run dir of `reproduce cmnist`")
    fig4.add_argument("labelshift", help="run dir of `reproduce cmnist --label-shift`")
    fig4.add_argument("--out", default=None, help="PNG path (default BALANCED/fig4.png)")
    fig4.add_argument("--methods", nargs="+", default=None, help="default: HGP Hutchinson")
    fig4.set_defaults(handler=run_fig4)
    table = targets.add_parser(
        "cmnist-table", help="accuracies of a balanced and a label-shift run in one table"
    )
    table.add_argument("balanced", help="run dir of `reproduce cmnist`")
    table.add_argument("labelshift", help="run dir of `reproduce cmnist --label-shift`")
    table.add_argument(
        "--methods", nargs="+", default=None, metavar="M", help="default: main rows + ablations"
    )
    table.set_defaults(handler=run_table)


def config_from_args(args: argparse.Namespace):
    """The `ReproduceConfig` described by the parsed arguments."""
    from dgalign.experiments.cmnist_run import ReproduceConfig, quick_config
    from dgalign.utils.runtime import resolve_device

    asked = list(args.methods or ([] if args.quick else METHODS))
    methods = list(dict.fromkeys(asked + (list(ABLATIONS) if args.ablations else [])))
    out = args.output_dir or "runs/reproduce-cmnist" + ("-labelshift" if args.label_shift else "")
    if args.output_dir is None and args.quick:
        out += "-quick"
    data = variant(args.variant).apply(
        DataConfig(args.label_shift, args.majority, args.label_shift_split)
    )
    if args.variant != "paper" and args.output_dir is None:
        out += f"-{args.variant}"
    config = ReproduceConfig(
        output_dir=out,
        methods=methods,
        restarts=args.restarts,
        seed=args.seed,
        data=data,
        mean=args.mean_term,
        device=str(resolve_device(args.device)),
        dtype=args.dtype,
        precision=args.precision,
        dynamics_every=args.dynamics_every,
        chunk=args.batch_restarts,
        fgsm_eps=list(args.fgsm_eps),
        data_dir=args.data_dir,
        progress=args.progress,
        loggers=list(args.logger),
        select=args.select,
        variant=args.variant,
    )
    config = quick_config(config, methods) if args.quick else dataclasses.replace(config)
    for name, part, *_ in REDUCED:
        if getattr(args, name) is not None:
            replaced = dataclasses.replace(getattr(config, part), **{name: getattr(args, name)})
            setattr(config, part, replaced)
    return config


def run(args: argparse.Namespace) -> int:
    from dgalign.experiments.cmnist_report import write_report
    from dgalign.experiments.cmnist_run import check_config, claim, run_reproduction

    config = config_from_args(args)
    if args.report_only:
        check_config(config)
        path = write_report(claim(config), config)
    else:
        path = run_reproduction(config)
    print(Path(path) / "report.md")
    return 0


def _require_run_dirs(*paths: str) -> None:
    """RunDirError (one line) unless every path is a `dgalign reproduce cmnist` run dir."""
    from dgalign.errors import RunDirError
    from dgalign.runs import is_reproduction

    for path in paths:
        if not is_reproduction(path):
            raise RunDirError(
                f"{path} is not a `dgalign reproduce cmnist` run dir (no config.json)"
            )


def run_fig4(args: argparse.Namespace) -> int:
    from dgalign.experiments.cmnist_report import plot_fig4

    _require_run_dirs(args.balanced, args.labelshift)
    out = Path(args.out) if args.out else Path(args.balanced) / "fig4.png"
    plot_fig4(Path(args.balanced), Path(args.labelshift), out, args.methods)
    print(out)
    return 0


def run_table(args: argparse.Namespace) -> int:
    from dgalign.experiments.cmnist_report import combined_table

    _require_run_dirs(args.balanced, args.labelshift)
    print(
        combined_table(
            Path(args.balanced), Path(args.labelshift), args.methods or [*METHODS, *ABLATIONS]
        )
    )
    return 0
