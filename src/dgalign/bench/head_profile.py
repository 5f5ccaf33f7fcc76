"""Where a closed-form head kernel's time goes: torch.profiler over its forward and backward.

On full-batch Colored MNIST shapes (default: features Z [50,000, 390] of two domains of
25,000 rows, one logit, random ReLU features and 0/1 labels), each `--kernel` runs as the
training step runs it, forward and `backward()` of its penalty plus the head's BCE:

- ERM: the plain autograd head z w^T + b (the Colored MNIST ERM row's head);
- HGP: `penalties.hgp_alignment` (the one-logit kernel `curvature._hgp_one_logit`);
- HessianDiag, Fishr: `penalties.diag_alignment` and `gradient_variances` (`head_moments`);
- Hessian: `head_moments(hessian=True)`, the head Hessian of HessianDiag-E150, CMA and
  Hutchinson, with a penalty on its spread over the domains.

After `--warmup` untimed calls of each (which also pay any compilation of the fused kernels),
the kernels are timed round-robin, `--calls` rounds, one call of each per round in an order
rotated per round, then each is profiled over `--calls` more. Printed: the median wall ms per
call of each kernel and, per kernel, the profiler's ops by self CPU time with their input
shapes, divided by the number of profiled calls (each row is "ms per call"). The profiler adds
its own overhead to small ops; the medians are taken without it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from dgalign.bench import script_main, set_threads
from dgalign.curvature import penalties
from dgalign.curvature.moments import head_moments
from dgalign.errors import ConfigError

KERNELS = ("ERM", "HGP", "HessianDiag", "Fishr", "Hessian")


def _loss(kind: str, z: Tensor, w: Tensor, b: Tensor, y: Tensor, sizes: list[int]) -> Tensor:
    """The kernel's penalty plus the BCE of its logits (module docstring)."""
    if kind == "ERM":
        logits = (z @ w.mT)[..., 0] + b
        return F.binary_cross_entropy_with_logits(logits, y)
    if kind == "Hessian":
        logits, grads, hs = head_moments(z, w, b, y, sizes, hessian=True)
        penalty = (hs - hs.mean(1, keepdim=True)).square().sum() + grads.square().sum()
    elif kind == "Fishr":
        logits, variances = penalties.gradient_variances(z, w, b, y, sizes)
        penalty = penalties.fishr_penalty(variances).sum()
    else:
        fn = penalties.hgp_alignment if kind == "HGP" else penalties.diag_alignment
        logits, terms = fn(z, w, b, y, sizes)
        penalty = sum(t.sum() for t in terms.values())
    return F.binary_cross_entropy_with_logits(logits[..., 0], y) + penalty


def make_call(kind: str, rows: int, width: int, domains: int) -> Callable[[], None]:
    """One forward and backward of `kind` on fresh leaf copies of fixed random inputs."""
    if kind not in KERNELS:
        raise ConfigError(f"unknown kernel {kind!r}; valid: {', '.join(KERNELS)}")
    if domains < 1 or rows < 2 * domains or width < 1:
        raise ConfigError("--rows must be >= 2 x --domains, --domains and --width >= 1")
    g = torch.Generator().manual_seed(0)
    z0 = torch.relu(torch.randn(1, rows, width, generator=g))
    w0 = 0.05 * torch.randn(1, 1, width, generator=g)
    y = (torch.rand(1, rows, generator=g) > 0.5).float()
    sizes = [rows // domains] * domains
    sizes[-1] += rows - sum(sizes)

    def call() -> None:
        z = z0.detach().requires_grad_()
        w, b = w0.clone().requires_grad_(), torch.zeros(1, 1, requires_grad=True)
        _loss(kind, z, w, b, y, sizes).backward()

    return call


def time_round_robin(calls: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each call, one of each per round, the order rotated per round."""
    names = list(calls)
    times: dict[str, list[float]] = {k: [] for k in names}
    for rnd in range(rounds):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def profile_table(call: Callable[[], None], calls: int, top: int) -> str:
    """Markdown: the `top` ops of `calls` profiled calls by self CPU time, per call."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(calls):
            call()
    events = prof.key_averages(group_by_input_shape=True)
    lines = ["| op | ms per call | calls per call | input shapes |", "|---|---:|---:|---|"]
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    for event in ranked[:top]:
        shapes = str(event.input_shapes).replace("|", "/")
        lines.append(
            f"| {event.key[:60]} | {event.self_cpu_time_total / 1e3 / calls:.2f} | "
            f"{event.count / calls:g} | {shapes[:90]} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernels", nargs="+", default=["ERM", "HGP", "HessianDiag"], choices=KERNELS
    )
    parser.add_argument("--rows", type=int, default=50_000, help="feature rows N (50,000)")
    parser.add_argument("--width", type=int, default=390, help="feature width d (390)")
    parser.add_argument("--domains", type=int, default=2, help="domains N is split into (2)")
    parser.add_argument("--calls", type=int, default=5, help="timed and profiled calls (5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first calls (3)")
    parser.add_argument("--top", type=int, default=15, help="ops listed per kernel (15)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.calls < 1 or args.warmup < 0 or args.top < 1:
        raise ConfigError("--calls and --top must be >= 1, --warmup >= 0")
    calls = {k: make_call(k, args.rows, args.width, args.domains) for k in args.kernels}
    print(
        f"Z [{args.rows}, {args.width}] float32, {args.domains} domains, one logit, CPU, "
        f"threads {torch.get_num_threads()}, {args.calls} rounds after {args.warmup} warm-up calls"
    )
    for call in calls.values():
        for _ in range(args.warmup):
            call()
    times = time_round_robin(calls, args.calls)
    for kind, t in times.items():
        print(f"{kind}: {1e3 * statistics.median(t):.1f} ms per call (median)")
    for kind, call in calls.items():
        print(
            f"\n{kind}, torch.profiler, self CPU time:\n{profile_table(call, args.calls, args.top)}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python benchmarks/head_profile.py`."""
    return script_main(__doc__, add_arguments, run, argv)
