"""`dgalign bench curvature`: step time and peak memory of the curvature-alignment methods
next to ERM (`dgalign.bench.curvature`); `dgalign bench cmnist-step`: the Colored MNIST rows'
training step against ERM and a preallocated-GEMM bound (`dgalign.bench.cmnist_step`);
`dgalign bench head-products`: the matrix products that bound the head kernels
(`dgalign.bench.head_products`); `dgalign bench head-profile`: where the one-logit head
kernels' time goes (`dgalign.bench.head_profile`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from types import ModuleType

from dgalign.bench import cmnist_step, curvature, head_products, head_profile


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark")
    benches = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    _add(
        benches,
        "curvature",
        curvature,
        "step time and peak memory of ERM, HGP, Hutchinson, HessianDiag, CMA",
        run_curvature,
    )
    _add(
        benches,
        "cmnist-step",
        cmnist_step,
        "Colored MNIST training step of every row vs ERM and the GEMM bound",
    )
    _add(
        benches,
        "head-products",
        head_products,
        "the matrix products that bound the closed-form head kernels, side by side",
    )
    _add(
        benches,
        "head-profile",
        head_profile,
        "torch.profiler of the one-logit head kernels on full-batch Colored MNIST shapes",
    )


def _add(
    benches: argparse._SubParsersAction,
    name: str,
    module: ModuleType,
    help_text: str,
    handler: Callable[[argparse.Namespace], int] | None = None,
) -> None:
    """One benchmark subcommand: its module's docstring, `add_arguments` and `run` (or
    `handler`)."""
    parser = benches.add_parser(
        name,
        help=help_text,
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.set_defaults(handler=handler or module.run)


def run_curvature(args: argparse.Namespace) -> int:
    """`curvature.run`, after a one-line error for a --device this machine cannot give."""
    from dgalign.utils.runtime import resolve_device

    resolve_device(args.device)
    return curvature.run(args)
