"""Training-step cost of the Colored MNIST rows against ERM and a fair matrix-product bound.

Shapes: the full protocol (`--rows` 50,000 training images = 2 envs x 25,000, MLP
392-390-390-1, `--restarts` R batched), random images through the real environment builder.
Each method's step is timed by `cmnist_train.train_restarts` itself (`step_times`: forward,
losses, penalty, backward, Adam; 3 steps per call with the penalty weight on from step 1, the
first step dropped). The bound is the step's eight matrix products alone, same shapes and
folded biases as `cmnist_model.Body`, writing into preallocated outputs (as the model's
buffers are): forward X~W1, H1~W2, H2~w3; backward dw3 = H2~^T g, dH2 = g w3^T,
dW2 = H1~^T G2, dH1 = G2 W2^T, dW1 = X~^T G1.

Round-robin: `--repeats` rounds; in each, every method runs once and the bound twice, in an
order rotated per round, so load from other processes hits all of them alike. Medians over
rounds; ratios are of medians. On CUDA every timing is synchronised. The load average is
printed before and after (the CPU is shared).

Fused kernels (`dgalign.curvature.fused`): `--fused auto|on|off` sets the mode of every row;
a method named "M+fused" or "M+eager" runs with them on or off whatever `--fused` says, and
`--fused both` times every method with a fused kernel both ways in the same rounds (`UNFUSED`
rows run once). Each method's first step, which pays any compilation, is
dropped with the others' first steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Sequence

import torch

from dgalign.bench import script_main, set_threads
from dgalign.curvature import fused
from dgalign.errors import ConfigError
from dgalign.experiments import cmnist_model as M
from dgalign.experiments.cmnist_data import COLOR_FLIP, RestartData, make_environment
from dgalign.experiments.cmnist_rows import METHODS, all_rows
from dgalign.experiments.cmnist_train import Protocol, train_restarts
from dgalign.utils import runtime
from dgalign.utils.runtime import clock, resolve_device

#: targets of the issue: method -> largest step-time ratio to ERM (ERM: to the GEMM bound)
TARGETS = {
    "ERM": 1.10,
    "IRM": 1.05,
    "VREx": 1.05,
    "Fishr": 1.05,
    "HGP": 1.05,
    "HessianDiag": 1.05,
    "HessianDiag-E150": 1.35,
    "CMA": 1.35,
    "Hutchinson": 1.35,
}
BOUND = "GEMM bound"


def synthetic(rows: int, gen: torch.Generator) -> RestartData:
    """Four environments from random 28x28 images (two training envs of rows / 2)."""

    def env(n: int, e: float, gray: bool = False):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        digits = torch.randint(0, 10, (n,), generator=gen)
        return make_environment(images, digits, e, gen, grayscale=gray)

    half = rows // 2
    return RestartData(
        (
            env(half, COLOR_FLIP["env0"]),
            env(rows - half, COLOR_FLIP["env1"]),
            env(10, 0.9),
            env(10, 0.9, True),
        )
    )


def gemm_bound(restarts: int, rows: int, device: torch.device) -> Callable[[], float]:
    """A function timing one round of the step's matrix products into preallocated outputs."""
    g = torch.Generator().manual_seed(1)
    r, n, h, d = restarts, rows, M.HIDDEN, M.IN_DIM

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device)

    x, w1, w2, w3 = (
        rand(r, n, d + 1),
        rand(r, d + 1, h + 1),
        rand(r, h + 1, h + 1),
        rand(r, h + 1, 1),
    )
    h1, h2, g3, g2, g1 = (
        rand(r, n, h + 1),
        rand(r, n, h + 1),
        rand(r, n, 1),
        rand(r, n, h + 1),
        rand(r, n, h + 1),
    )
    out = {
        "h1": torch.empty_like(h1),
        "h2": torch.empty_like(h2),
        "l": torch.empty_like(g3),
        "dw3": torch.empty_like(w3),
        "dh2": torch.empty_like(h2),
        "dw2": torch.empty_like(w2),
        "dh1": torch.empty_like(h1),
        "dw1": torch.empty_like(w1),
    }

    def once() -> float:
        start = clock(device)
        torch.bmm(x, w1, out=out["h1"])
        torch.bmm(h1, w2, out=out["h2"])
        torch.bmm(h2, w3, out=out["l"])
        torch.bmm(h2.transpose(1, 2), g3, out=out["dw3"])
        torch.bmm(g3, w3.transpose(1, 2), out=out["dh2"])
        torch.bmm(h1.transpose(1, 2), g2, out=out["dw2"])
        torch.bmm(g2, w2.transpose(1, 2), out=out["dh1"])
        torch.bmm(x.transpose(1, 2), g1, out=out["dw1"])
        return clock(device) - start

    once()
    return once


SUFFIXES = {"+fused": "on", "+eager": "off"}
#: rows that run no fused kernel (penalties of the logits; HGP's kernel is eager), timed once
UNFUSED = ("ERM", "IRM", "VREx", "HGP")
FUSED_CHOICES = ("auto", "on", "off", "both")


def split_name(name: str, default: str = "auto") -> tuple[str, str]:
    """("HGP+fused", ...) -> ("HGP", "on"): the row and the fused-kernel mode it runs with."""
    for suffix, mode in SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], mode
    return name, default


def expand(names: Sequence[str], fused_mode: str) -> list[str]:
    """The timed names: with "both", every method but the `UNFUSED` ones as "M+eager" and
    "M+fused"."""
    if fused_mode != "both":
        return list(names)
    out = []
    for name in names:
        base, _ = split_name(name)
        out += [name] if base in UNFUSED or base != name else [f"{base}+eager", f"{base}+fused"]
    return out


def method_steps(
    data, inits, name: str, device: torch.device, steps: int = 3, fused_mode: str = "auto"
) -> list[float]:
    """Step times of `name` (the penalty on from step 1; a "+fused"/"+eager" suffix sets the
    fused-kernel mode, else `fused_mode`), the first step dropped."""
    row, mode = split_name(name, fused_mode)
    with fused.fused_kernels(mode):
        out = train_restarts(
            data,
            inits,
            all_rows()[row],
            Protocol(steps=steps, anneal_iters=1),
            device=device,
            progress=False,
            dynamics_every=10**9,
        )
    return out.step_times[1:]


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run_benchmark(
    names: Sequence[str],
    restarts: int,
    rows: int,
    repeats: int,
    device: str = "cpu",
    fused_mode: str = "auto",
) -> dict[str, list[float]]:
    """{method or BOUND: step times}, measured round-robin (module docstring)."""
    dev = resolve_device(device)
    if fused_mode not in FUSED_CHOICES:
        raise ConfigError(f"--fused must be one of {', '.join(FUSED_CHOICES)}, got {fused_mode!r}")
    names = expand(names, fused_mode)
    default = "auto" if fused_mode == "both" else fused_mode
    unknown = [n for n in names if split_name(n)[0] not in all_rows()]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(all_rows())}")
    if restarts < 1 or rows < 4 or repeats < 1:
        raise ConfigError("--restarts and --repeats must be >= 1 and --rows >= 4")
    gen = torch.Generator().manual_seed(0)
    data = [synthetic(rows, gen) for _ in range(restarts)]
    inits = [M.init_restart(gen) for _ in range(restarts)]
    bound = gemm_bound(restarts, rows, dev)
    order = ["ERM", *[n for n in names if n != "ERM"], BOUND]
    times: dict[str, list[float]] = {k: [] for k in order}
    for rnd in range(repeats):
        k = rnd % len(order)
        for name in order[k:] + order[:k]:
            if name == BOUND:
                times[name] += [bound(), bound()]
            else:
                times[name] += method_steps(data, inits, name, dev, fused_mode=default)
    return times


def format_table(times: dict[str, list[float]]) -> str:
    """Markdown: median ms per step, ratio to ERM, ERM's ratio to the bound, target."""
    med = {k: statistics.median(v) for k, v in times.items()}
    erm, bound = med["ERM"], med[BOUND]
    lines = [
        "| method | ms / step | x ERM | x GEMM bound | target | |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, t in med.items():
        target = TARGETS.get(split_name(name)[0])
        ratio = t / bound if name in ("ERM", BOUND) else t / erm
        if target is None:
            cells = ["-", ""]
        else:
            what = "x bound" if name == "ERM" else "x ERM"
            cells = [f"<= {target:.2f} {what}", "met" if ratio <= target else "MISSED"]
        lines.append(
            f"| {name} | {1e3 * t:.1f} | {t / erm:.3f} | {t / bound:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--methods",
        nargs="*",
        default=None,
        metavar="M",
        help=f"rows to time (default: {', '.join(METHODS)})",
    )
    parser.add_argument("--restarts", type=int, default=1, help="restarts batched (default 1)")
    parser.add_argument("--rows", type=int, default=50_000, help="training rows (50,000)")
    parser.add_argument("--repeats", type=int, default=5, help="round-robin rounds (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:i] or auto (CUDA if present)")
    parser.add_argument(
        "--fused",
        default="auto",
        choices=FUSED_CHOICES,
        help="fused curvature kernels: auto (default), on, off, or both (each method both ways)",
    )


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    names = args.methods or list(METHODS)
    before = load()
    device = str(resolve_device(args.device))  # `auto` named as what it resolved to
    runtime.keep_freed_memory()  # else fresh 78 MB tensors fault their pages in at every step
    times = run_benchmark(names, args.restarts, args.rows, args.repeats, device, args.fused)
    print(
        f"restarts {args.restarts}, rows {args.rows}, hidden {M.HIDDEN}, device {device}, "
        f"threads {torch.get_num_threads()}, {args.repeats} rounds, fused kernels {args.fused}; "
        f"load average before {before}, after {load()}"
    )
    print(format_table(times))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python benchmarks/cmnist_step.py`."""
    return script_main(__doc__, add_arguments, run, argv)
