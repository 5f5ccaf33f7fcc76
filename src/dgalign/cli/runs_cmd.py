"""`dgalign runs export DIR --to tensorboard|mlflow|wandb`: replay finished or interrupted run
directories (ours or DomainBed's; a run, a sweep, or a `reproduce cmnist` directory) into an
experiment tracker after the fact. See docs/tracking.md."""

from __future__ import annotations

import argparse

from dgalign.tracking import LOGGERS


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("runs", help="work with run directories (export to a tracker)")
    commands = parser.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="replay run directories into TensorBoard, MLflow or W&B",
        description=__doc__,
    )
    export.add_argument("dir", metavar="DIR", help="a run, sweep or reproduction directory")
    export.add_argument(
        "--to",
        action="append",
        required=True,
        choices=LOGGERS,
        help="tracker to replay into (repeatable)",
    )
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from dgalign.tracking.replay import export_dir

    done = export_dir(args.dir, list(args.to))
    print(
        f"exported {done.runs} run(s), {done.points} record(s) from {args.dir} to "
        f"{', '.join(dict.fromkeys(args.to))}"
    )
    for line in done.skipped or []:
        print(f"skipped {line}")
    return 0
