"""The matrix products that bound the closed-form head kernels, timed side by side.

On features Z [n, d] of one domain (default: a Colored MNIST training environment, 25,000 x
390), in one process and round-robin (every product once per round, in an order rotated per
round; medians and minima over rounds):

- `Z Gam` (Gam [d, d]): the head Hessian's contraction in the backward of HessianDiag-E150,
  CMA and Hutchinson, written chunk by chunk into a preallocated [n, d] output, for each of
  `--chunk-rows` (0: the whole domain in one product);
- `Z^T S Z`: the head Hessian itself, as the kernels build it (`moments.syrk_` in the forward
  pass's chunks: BLAS's syrk where torch's MKL has it, else the blocks on and above the
  diagonal) and as one full product; timed as
  Z^T Z (the kernels scale Z by s first, a separate elementwise pass), the same product shapes;
- `U^T Z` and `Z V` for k = 1, 2, 4 vectors (U [n, k], V [d, k]): the matrix-vector products of
  HGP, HessianDiag and Fishr (gradients, Hessian-vector products, row sums), in the forward
  pass's chunks; `U^T Z` (and `Z V` for one vector) both as one product per chunk and in row
  blocks, as the kernels run them (`_head.add_left_product`, `_head.right_product`);
- `V Z^T` and `U Z` with the vectors as rows [k, n], one product for the whole domain: the
  layout of the one-logit HGP kernel (`curvature._hgp_one_logit`).

Printed: milliseconds, GFLOP/s (2 n d d or 2 n d k per product; the upper-blocks and syrk
rows are counted as the full product, so their rate over the full product's is the saving) and
the rate at which Z is read (GB/s, one read of Z per product). The ratios between rows are what the
kernels' costs in docs/benchmarks.md are measured against: for instance, whether k = 2
vectors cost one read of Z or two.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence

import torch

from dgalign.bench import script_main, set_threads
from dgalign.curvature import _head, moments
from dgalign.errors import ConfigError
from dgalign.utils.runtime import clock, resolve_device

DEFAULT_CHUNK_ROWS = (670, 1344, 2688, 5376, 0)


def products(
    n: int, d: int, chunk_rows: Sequence[int], device: torch.device
) -> dict[str, tuple[Callable[[], None], float]]:
    """{name: (run once, FLOPs)} for the module docstring's products."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, n, d, generator=g).to(device)
    gam = torch.randn(1, d, d, generator=g).to(device)
    gam = gam + gam.mT
    out = torch.empty(1, n, d, device=device)
    h = torch.zeros(1, d, d, device=device)
    u = torch.randn(1, n, 4, generator=g).to(device)
    v = torch.randn(1, 4, d, generator=g).to(device)
    forward_rows = max(16, _head.CHUNK_ELEMENTS // (d + 1))

    def spans(rows: int) -> list[tuple[int, int]]:
        rows = rows or n
        return [(a, min(a + rows, n)) for a in range(0, n, rows)]

    def contraction(rows: int) -> Callable[[], None]:
        parts = spans(rows)

        def once() -> None:
            for a, b in parts:
                torch.bmm(z[:, a:b], gam, out=out[:, a:b])

        return once

    def hessian_syrk(blas: bool) -> Callable[[], None]:
        def once() -> None:
            h.zero_()
            for a, b in spans(forward_rows):
                moments.syrk_(h, z[:, a:b], blas=blas)

        return once

    def full_hessian() -> None:
        torch.bmm(z.mT, z, out=h)

    def left(k: int) -> Callable[[], None]:
        uk, acc = u[..., :k].contiguous(), torch.zeros(1, k, d, device=device)

        def once() -> None:
            for a, b in spans(forward_rows):
                acc.baddbmm_(uk[:, a:b].mT, z[:, a:b])

        return once

    def left_blocked(k: int) -> Callable[[], None]:
        uk, acc = u[..., :k].contiguous(), torch.zeros(1, k, d, device=device)

        def once() -> None:
            for a, b in spans(forward_rows):
                _head.add_left_product(acc, uk[:, a:b], z[:, a:b], blocked=True)

        return once

    def right(k: int) -> Callable[[], None]:
        vk, res = v[:, :k].contiguous(), torch.empty(1, n, k, device=device)

        def once() -> None:
            for a, b in spans(forward_rows):
                torch.bmm(z[:, a:b], vk.mT, out=res[:, a:b])

        return once

    def right_blocked() -> Callable[[], None]:
        v1, res, zero = v[:, :1].contiguous(), torch.empty(1, n, 1, device=device), u[0, :1, :1]

        def once() -> None:
            for a, b in spans(forward_rows):
                _head.right_product(res[:, a:b], zero, z[:, a:b], v1, blocked=True)

        return once

    def rows_right(k: int) -> Callable[[], None]:
        vk = v[:, :k].contiguous()
        return lambda: torch.bmm(vk, z.mT)  # [1, k, n]: the one-logit HGP kernel's layout

    def rows_left(k: int) -> Callable[[], None]:
        uk = u[..., :k].mT.contiguous()  # [1, k, n]
        return lambda: torch.bmm(uk, z)

    square = 2.0 * n * d * d
    table: dict[str, tuple[Callable[[], None], float]] = {}
    for rows in chunk_rows:
        label = f"all {n}" if rows == 0 else str(rows)
        table[f"Z Gam, chunks of {label} rows"] = (contraction(rows), square)
    table["Z^T S Z, upper blocks (syrk_)"] = (hessian_syrk(False), square)
    if moments.use_blas_syrk() and device.type == "cpu":
        table["Z^T S Z, BLAS syrk (syrk_)"] = (hessian_syrk(True), square)
    table["Z^T S Z, one full product"] = (full_hessian, square)
    for k in (1, 2, 4):
        table[f"U^T Z, k = {k}"] = (left(k), 2.0 * n * d * k)
    for k in (1, 2, 4):
        table[f"U^T Z, k = {k}, row blocks"] = (left_blocked(k), 2.0 * n * d * k)
    for k in (1, 2, 4):
        table[f"Z V, k = {k}"] = (right(k), 2.0 * n * d * k)
    table["Z V, k = 1, row blocks"] = (right_blocked(), 2.0 * n * d)
    for k in (1, 2, 4):
        table[f"V Z^T, whole domain, rows [k, n], k = {k}"] = (rows_right(k), 2.0 * n * d * k)
    for k in (2, 4):
        table[f"U Z, whole domain, U rows [k, n], k = {k}"] = (rows_left(k), 2.0 * n * d * k)
    return table


def run_products(
    n: int, d: int, chunk_rows: Sequence[int], repeats: int, device: str = "cpu"
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """({product: seconds per round}, {product: FLOPs}), round-robin."""
    if n < 1 or d < 1 or repeats < 1 or any(r < 0 for r in chunk_rows):
        raise ConfigError("--rows, --width and --repeats must be >= 1, --chunk-rows >= 0")
    dev = resolve_device(device)
    table = products(n, d, chunk_rows, dev)
    names = list(table)
    times: dict[str, list[float]] = {k: [] for k in names}
    for name in names:  # warm-up: first calls allocate and pick kernels
        table[name][0]()
    for rnd in range(repeats):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            start = clock(dev)
            table[name][0]()
            times[name].append(clock(dev) - start)
    return times, {k: f for k, (_, f) in table.items()}


def format_table(times: dict[str, list[float]], flops: dict[str, float], n: int, d: int) -> str:
    """Markdown: median and minimum ms, GFLOP/s and the read rate of Z at the median."""
    lines = [
        "| product | ms (median) | ms (min) | GFLOP/s | GB/s of Z |",
        "|---|---:|---:|---:|---:|",
    ]
    nbytes = 4.0 * n * d
    for name, t in times.items():
        med = statistics.median(t)
        lines.append(
            f"| {name} | {1e3 * med:.2f} | {1e3 * min(t):.2f} | "
            f"{flops[name] / med / 1e9:.1f} | {nbytes / med / 1e9:.1f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=25_000, help="rows n of Z (25,000)")
    parser.add_argument("--width", type=int, default=390, help="width d of Z (390)")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        nargs="+",
        default=list(DEFAULT_CHUNK_ROWS),
        metavar="R",
        help="chunk lengths of the Z Gam rows (0: one product; default 670 1344 2688 5376 0)",
    )
    parser.add_argument("--repeats", type=int, default=11, help="round-robin rounds (default 11)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:i] or auto (CUDA if present)")


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    times, flops = run_products(args.rows, args.width, args.chunk_rows, args.repeats, args.device)
    print(
        f"Z [{args.rows}, {args.width}] float32, device {resolve_device(args.device)}, "
        f"threads {torch.get_num_threads()}, {args.repeats} rounds"
    )
    print(format_table(times, flops, args.rows, args.width))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python benchmarks/head_products.py`."""
    return script_main(__doc__, add_arguments, run, argv)
