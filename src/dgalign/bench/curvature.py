"""Per-step time and peak memory of the curvature-alignment methods next to ERM.

Cases (random inputs of the right shape; penalties switched on from the first step):
    a  ColoredMNIST: DomainBed's MNIST CNN, 2 training domains x 64 images (2 x 28 x 28), C = 2.
    b  OfficeHome head: a 65-class linear head on fixed 2048-d random features (the ResNet-50
       factored out: the featurizer is the identity), 3 domains x 32.
Methods: ERM, HGP, Hutchinson (300 probes), HessianDiag, CMA-full, CMA-gram (default hparams).

Time: wall time of one `update`, median over `steps` rounds after `warmup` rounds; every round
runs every method once, in an order rotated per round, so changes in machine load hit all
methods alike. Memory: peak bytes of tensors alive during one extra (untimed) `update`, above
those alive before it: `torch.cuda.max_memory_allocated` on CUDA; on CPU the running sum of
the allocator's allocation / free events recorded by `torch.profiler` (profile_memory=True).
It counts autograd's saved tensors and temporaries, not allocator caching or Python objects.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams
from dgalign.bench import build_penalised, cma_tables, script_main, set_threads
from dgalign.errors import ConfigError
from dgalign.utils.runtime import clock, resolve_device, synchronize

METHODS = ("ERM", "HGP", "Hutchinson", "HessianDiag", "CMA-full", "CMA-gram")
TIME_TARGET = 1.05  # HessianDiag and CMA-gram at most 1.05x ERM's step time on case a
MEMORY_TARGET_MB = 100.0  # CMA-gram's extra peak memory on case b


@dataclass(frozen=True)
class Case:
    """One benchmark setting; `feature_dim` set = head only on fixed features."""

    key: str
    title: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    num_domains: int
    batch: int
    feature_dim: int | None = None


@dataclass
class Row:
    method: str
    step_ms: float | None = None
    peak_mb: float | None = None
    refused: str | None = None
    times: list[float] = field(default_factory=list)


@dataclass
class CaseResult:
    case: Case
    rows: list[Row]
    steps: int
    warmup: int
    device: str


def make_cases(quick: bool = False) -> dict[str, Case]:
    """The two cases; `quick` shrinks them (batches 2 and 8, 128-d features): a smoke test."""
    batch_a, batch_b, d = (2, 8, 128) if quick else (64, 32, 2048)
    return {
        "a": Case("a", "ColoredMNIST, MNIST CNN", "ColoredMNIST", (2, 28, 28), 2, 2, batch_a),
        "b": Case("b", f"65-class head on {d}-d features", "OfficeHome", (d,), 65, 3, batch_b, d),
    }


def build(method: str, case: Case, device: torch.device) -> algorithms.Algorithm:
    """`method` ("CMA-gram" = CMA with hessian_mode gram) with default hparams, no annealing.

    Head-only cases are built with an MLP featurizer of the feature width (so the head and
    CMA's budget check see d) that is then replaced by the identity."""
    name, _, mode = method.partition("-")
    hparams = default_hparams(name, case.dataset)
    if mode:
        hparams["hessian_mode"] = mode
    dims = (case.input_shape, case.num_classes, case.num_domains)
    return build_penalised(name, hparams, *dims, device, feature_dim=case.feature_dim)


def make_batches(case: Case, device: torch.device, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(case.num_domains):
        if case.feature_dim is None:
            x = torch.rand(case.batch, *case.input_shape, generator=g)
        else:
            x = torch.randn(case.batch, case.feature_dim, generator=g)
        y = torch.randint(0, case.num_classes, (case.batch,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop lines (file descriptor 2) while it runs."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(algorithm: algorithms.Algorithm, batches: list, device: torch.device) -> int:
    """Peak tensor bytes of one update above the bytes alive before it (module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        algorithm.update(batches)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        algorithm.update(batches)
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def run_case(case: Case, steps: int, warmup: int, device: torch.device) -> CaseResult:
    """Build every method, time them interleaved, then measure each one's peak memory."""
    rows = {m: Row(m) for m in METHODS}
    built: dict[str, algorithms.Algorithm] = {}
    for method in METHODS:
        torch.manual_seed(0)
        try:
            built[method] = build(method, case, device)
        except ConfigError as exc:
            rows[method].refused = str(exc)
    batches = make_batches(case, device)
    active = list(built)
    for r in range(warmup + steps):
        k = r % len(active)
        for method in active[k:] + active[:k]:
            start = clock(device)
            built[method].update(batches)
            if r >= warmup:
                rows[method].times.append(clock(device) - start)
            else:
                synchronize(device)
    for method, algorithm in built.items():
        rows[method].step_ms = 1e3 * statistics.median(rows[method].times)
        rows[method].peak_mb = peak_bytes(algorithm, batches, device) / 2**20
    return CaseResult(case, list(rows.values()), steps, warmup, str(device))


def run_benchmark(
    cases: Sequence[str] = ("a", "b"),
    steps: int = 20,
    warmup: int = 3,
    device: str = "cpu",
    quick: bool = False,
) -> list[CaseResult]:
    """Run the chosen cases; `quick` = reduced sizes and at most 2 steps after 1 warm-up."""
    all_cases = make_cases(quick)
    unknown = [c for c in cases if c not in all_cases]
    if unknown:
        raise ConfigError(f"unknown case(s) {', '.join(unknown)}; choose from a, b")
    if steps < 1 or warmup < 0:
        raise ConfigError(f"--steps must be >= 1 and --warmup >= 0, got {steps}, {warmup}")
    dev = resolve_device(device)
    if quick:
        steps, warmup = min(steps, 2), min(warmup, 1)
    return [run_case(all_cases[c], steps, warmup, dev) for c in cases]


def _row(method: str, *cells: str) -> str:
    return f"| {method:<11} | " + " | ".join(cells) + " |"


def format_result(result: CaseResult) -> str:
    """Markdown table for one case: step time, ratio to ERM, peak and extra peak memory."""
    case = result.case
    rows = {row.method: row for row in result.rows}
    erm = rows["ERM"]
    lines = [
        f"Case ({case.key}): {case.title}, {case.num_domains} domains x {case.batch}, "
        f"C = {case.num_classes} ({result.device}, {torch.get_num_threads()} threads; median of "
        f"{result.steps} steps after {result.warmup} warm-up rounds, methods interleaved)",
        "",
        _row("method", "step (ms)", "x ERM", "peak MB", "extra MB vs ERM"),
        _row("---", "---:", "---:", "---:", "---:"),
    ]
    for row in result.rows:
        if row.refused is not None:
            lines.append(_row(row.method, f"refused: {row.refused}", "", "", ""))
            continue
        assert row.step_ms is not None and row.peak_mb is not None
        assert erm.step_ms is not None and erm.peak_mb is not None
        lines.append(
            _row(
                row.method,
                f"{row.step_ms:.1f}",
                f"{row.step_ms / erm.step_ms:.2f}",
                f"{row.peak_mb:.1f}",
                f"{row.peak_mb - erm.peak_mb + 0.0:+.1f}".replace("-0.0", "+0.0"),
            )
        )
    lines += ["", *_summary(result, rows)]
    return "\n".join(lines)


def _summary(result: CaseResult, rows: dict[str, Row]) -> list[str]:
    out = []
    hd, hut, erm = rows["HessianDiag"], rows["Hutchinson"], rows["ERM"]
    if hd.step_ms and hut.step_ms:
        out.append(f"HessianDiag speed-up over Hutchinson: {hut.step_ms / hd.step_ms:.1f}x")
    if result.case.key == "a" and erm.step_ms:
        for name in ("HessianDiag", "CMA-gram"):
            ms = rows[name].step_ms
            if ms is not None:
                ratio = ms / erm.step_ms
                verdict = "met" if ratio <= TIME_TARGET else "MISSED"
                out.append(f"target {name} <= {TIME_TARGET}x ERM: {ratio:.2f}x, {verdict}")
    if result.case.key == "b":
        gram = rows["CMA-gram"]
        if gram.peak_mb is not None and erm.peak_mb is not None:
            extra = gram.peak_mb - erm.peak_mb
            verdict = "met" if extra < MEMORY_TARGET_MB else "MISSED"
            target = f"target CMA-gram extra peak < {MEMORY_TARGET_MB:g} MB"
            out.append(f"{target}: {extra:.1f} MB, {verdict}")
        verdict = "met" if rows["CMA-full"].refused is not None else "MISSED"
        out.append(f"target CMA-full refused under the default budget: {verdict}")
    return out


def format_results(results: Sequence[CaseResult]) -> str:
    return "\n\n".join(format_result(r) for r in results)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `benchmarks/curvature.py` and `dgalign bench curvature`."""
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:i] or auto (CUDA if present)")
    parser.add_argument("--cases", default="a,b", help="comma-separated subset of a,b")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (smoke test)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--cma-tables", action="store_true", help="the CMA cost tables instead")
    cma_tables.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    set_threads(args.threads)
    if args.cma_tables:
        return cma_tables.run(args)
    results = run_benchmark(cases, args.steps, args.warmup, args.device, args.quick)
    print(format_results(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python benchmarks/curvature.py`."""
    return script_main(__doc__, add_arguments, run, argv)
