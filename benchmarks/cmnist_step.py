"""ERM training step of the batched Colored MNIST MLP vs its bare matrix products.

Usage: python benchmarks/cmnist_step.py [--restarts R] [--rows N] [--repeats K] [--threads T]
       python benchmarks/cmnist_step.py --methods [M ...]   (Table 5: every method vs ERM)

The ERM step is the one `dgalign reproduce cmnist` times, measured by
`cmnist_train.train_restarts` itself (its `step_times`): forward of the R restarts on
N = 50,000 training rows, mean BCE, L2 of all parameters, backward, Adam. "Bare GEMMs" are
the same-shaped batched products alone on preallocated inputs: forward X W1, H1 W2, H2 W3 and
backward dW3 = H2^T g, dH2 = g W3^T, dW2 = H1^T G2, dH1 = G2 W2^T, dW1 = X^T G1 (no dX: the
input needs no gradient). The two alternate (K runs of 3 ERM steps, the last 2 timed, each
followed by 2 bare rounds), so load from other processes hits both alike; the ratio of the
medians is printed (target: at most 1.1).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from dgalign.experiments.cmnist_penalties import METHODS

from dgalign.experiments import cmnist_model as M
from dgalign.experiments.cmnist_data import COLOR_FLIP, RestartData, make_environment
from dgalign.experiments.cmnist_train import Protocol, train_restarts


def synthetic(rows: int, gen: torch.Generator) -> RestartData:
    def env(n: int, e: float, gray: bool = False):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        return make_environment(
            images, torch.randint(0, 10, (n,), generator=gen), e, gen, grayscale=gray
        )

    half = rows // 2
    return RestartData(
        (
            env(half, COLOR_FLIP["env0"]),
            env(rows - half, COLOR_FLIP["env1"]),
            env(10, 0.9),
            env(10, 0.9, True),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--methods",
        nargs="*",
        default=None,
        help="instead: step time of these methods (no names: all main rows) "
        "as ratios to ERM, round-robin, the penalties switched on",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r, n, h = args.restarts, args.rows, M.HIDDEN
    gen = torch.Generator().manual_seed(0)
    data = [synthetic(n, gen) for _ in range(r)]
    inits = [M.init_restart(gen) for _ in range(r)]
    steps = 3  # the first step of a run allocates the buffers: timed are steps 1 and 2

    def erm_steps() -> list[float]:
        out = train_restarts(
            data, inits, METHODS["ERM"], Protocol(steps=steps), progress=False, dynamics_every=10**9
        )
        return out.step_times[1:]

    if args.methods is not None:
        return method_costs(data, inits, args.methods or list(METHODS), args.repeats)
    x = torch.rand(r, n, M.IN_DIM, generator=gen)
    w = {k: v.detach() for k, v in M.stack_restarts(inits, torch.float32, "cpu").items()}
    h1, h2 = torch.rand(r, n, h), torch.rand(r, n, h)
    g3, g2, g1 = torch.rand(r, n, 1), torch.rand(r, n, h), torch.rand(r, n, h)

    def bare_gemms() -> None:
        torch.bmm(x, w["w1"])
        torch.bmm(h1, w["w2"])
        torch.bmm(h2, w["w3"])
        torch.bmm(h2.transpose(1, 2), g3)
        torch.bmm(g3, w["w3"].transpose(1, 2))
        torch.bmm(h1.transpose(1, 2), g2)
        torch.bmm(g2, w["w2"].transpose(1, 2))
        torch.bmm(x.transpose(1, 2), g1)

    bare_gemms()  # warm-up
    times: dict[str, list[float]] = {"erm": [], "bare": []}
    for _ in range(args.repeats):
        times["erm"] += erm_steps()
        for _ in range(steps - 1):
            start = time.perf_counter()
            bare_gemms()
            times["bare"].append(time.perf_counter() - start)
    erm, bare = statistics.median(times["erm"]), statistics.median(times["bare"])
    ratios = [a / b for a, b in zip(times["erm"], times["bare"], strict=True)]
    print(f"restarts {r}, rows {n}, hidden {h}, threads {torch.get_num_threads()}")
    print(f"ERM step   median {erm * 1000:8.1f} ms")
    print(f"bare GEMMs median {bare * 1000:8.1f} ms")
    print(
        f"ratio ERM / bare GEMMs: {erm / bare:.3f} (median of pairwise ratios "
        f"{statistics.median(ratios):.3f})"
    )


def method_costs(data, inits, names: list[str], repeats: int) -> None:
    """Median training-step time of each method (`train_restarts`' own timing, 3 steps per
    round with the penalty on from step 1, first step dropped), K rounds round-robin."""
    names = ["ERM", *[m for m in names if m != "ERM"]]
    times: dict[str, list[float]] = {m: [] for m in names}
    for _ in range(repeats):
        for name in names:
            out = train_restarts(
                data,
                inits,
                METHODS[name],
                Protocol(steps=3, anneal_iters=1),
                progress=False,
                dynamics_every=10**9,
            )
            times[name] += out.step_times[1:]
    base = statistics.median(times["ERM"])
    print(f"restarts {len(data)}, threads {torch.get_num_threads()}, {repeats} rounds")
    print("| method | s / step | ratio to ERM |\n|---|---|---|")
    for name in names:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.3f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
