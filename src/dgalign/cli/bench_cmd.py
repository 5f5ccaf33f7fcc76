"""`dgalign bench curvature`: step time and peak memory of the curvature-alignment methods
next to ERM (see `dgalign.bench.curvature`)."""

from __future__ import annotations

import argparse

from dgalign.bench import curvature


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark")
    benches = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    cur = benches.add_parser(
        "curvature",
        help="step time and peak memory of ERM, HGP, Hutchinson, HessianDiag, CMA",
        description=curvature.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    curvature.add_arguments(cur)
    cur.set_defaults(handler=run_curvature)


def run_curvature(args: argparse.Namespace) -> int:
    """`curvature.run`, after a one-line error for a --device torch does not know."""
    import torch

    from dgalign.errors import ConfigError

    try:
        torch.device(args.device)
    except RuntimeError:
        raise ConfigError(
            f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    return curvature.run(args)
