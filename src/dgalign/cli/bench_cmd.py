"""`dgalign bench curvature`: step time and peak memory of the curvature-alignment methods
next to ERM (`dgalign.bench.curvature`); `dgalign bench cmnist-step`: the Colored MNIST rows'
training step against ERM and a preallocated-GEMM bound (`dgalign.bench.cmnist_step`);
`dgalign bench head-products`: the matrix products that bound the head kernels
(`dgalign.bench.head_products`)."""

from __future__ import annotations

import argparse

from dgalign.bench import cmnist_step, curvature, head_products


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
    step = benches.add_parser(
        "cmnist-step",
        help="Colored MNIST training step of every row vs ERM and the GEMM bound",
        description=cmnist_step.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmnist_step.add_arguments(step)
    step.set_defaults(handler=cmnist_step.run)
    prods = benches.add_parser(
        "head-products",
        help="the matrix products that bound the closed-form head kernels, side by side",
        description=head_products.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    head_products.add_arguments(prods)
    prods.set_defaults(handler=head_products.run)


def run_curvature(args: argparse.Namespace) -> int:
    """`curvature.run`, after a one-line error for a --device this machine cannot give."""
    from dgalign.utils.runtime import resolve_device

    resolve_device(args.device)
    return curvature.run(args)
