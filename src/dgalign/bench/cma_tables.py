"""CMA cost tables (`dgalign bench curvature --cma-tables`): step time and peak memory of the
CMA Hessian modes, Hutchinson and the K-FAC and third-order variants on the head shapes of the
CMA paper's datasets, and the K-FAC approximation error on the same shapes.

Shapes: a linear head on fixed random features (the featurizer is the identity; the backbone
is factored out), batch 32 per training domain, C classes and K training domains of
ColoredMNIST (C 2, K 2), VLCS (5, 3), PACS (7, 3), TerraIncognita (10, 3), OfficeHome (65, 3),
features d = 2048 (ResNet-50) and 384 (ViT-S). Methods, default hyper-parameters with the
penalties on from the first step:
    ERM           reference;
    CMA-full      CMA, hessian_mode full (refused above `hessian_memory_mb`, see cma.py);
    CMA-gram      CMA, hessian_mode gram (the same penalty, no Hessian built);
    Hutchinson    300 Rademacher probes (the generic autograd algorithm);
    CMA-kfac      CMA, hessian_mode kfac;
    CMA-order3    CMA-gram plus the third-order term.
Time: the median over `steps` rounds after `warmup` rounds of one `update`, every round running
every method of the shape in an order rotated per round, each as two back-to-back updates of
which the second is timed (a step timed right after CMA-full's 100 MB+ of temporaries ran
measurably slower: 8.7 vs 4.9 ms of CPU for CMA-gram on the VLCS head at d = 384). On CPU
both the process CPU time (`time.process_time`, all threads) and the wall time are kept: on a
shared, oversubscribed machine a step of a few milliseconds of work can wait tens of
milliseconds for a core, so the CPU time measures the work and the wall time adds the wait;
on CUDA, wall time after synchronising. Memory as `dgalign.bench.curvature` measures it: peak
tensor bytes of one extra `update` above those alive before it (CUDA: max_memory_allocated;
CPU: the profiler's allocation events).
K-FAC error: on the same features, with the head at its initialisation and with a head whose
logits have standard deviation 3 (confident predictions, as after training), the relative
error ||H - A (x) B||_F / ||H||_F (mean over domains) and |P_kfac - P| / P of the penalty.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dgalign.algorithms.spaces import default_hparams
from dgalign.bench import build_penalised
from dgalign.errors import ConfigError
from dgalign.utils.runtime import resolve_device, synchronize

SHAPES = (
    ("ColoredMNIST", 2, 2),
    ("VLCS", 5, 3),
    ("PACS", 7, 3),
    ("TerraIncognita", 10, 3),
    ("OfficeHome", 65, 3),
)
WIDTHS = (2048, 384)
BATCH = 32
METHODS = ("ERM", "CMA-full", "CMA-gram", "Hutchinson", "CMA-kfac", "CMA-order3")
VARIANTS = {
    "CMA-full": {"hessian_mode": "full"},
    "CMA-gram": {"hessian_mode": "gram"},
    "CMA-kfac": {"hessian_mode": "kfac"},
    "CMA-order3": {"hessian_mode": "gram", "order": 3},
}


@dataclass(frozen=True)
class Shape:
    dataset: str
    num_classes: int
    num_domains: int
    dim: int
    batch: int = BATCH


@dataclass
class Cell:
    method: str
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    refused: str | None = None

    @property
    def step_ms(self) -> float | None:
        """Median wall time of a step (ms)."""
        return 1e3 * statistics.median(self.times) if self.times else None

    @property
    def cpu_ms(self) -> float | None:
        """Median process CPU time of a step (ms)."""
        return 1e3 * statistics.median(self.cpu_times) if self.cpu_times else None


@dataclass
class ShapeResult:
    shape: Shape
    cells: list[Cell]
    kfac_error: dict[str, tuple[float, float]]


def shapes(quick: bool = False) -> list[Shape]:
    """Every (dataset head, width) pair; `quick`: two tiny shapes (a smoke test)."""
    if quick:
        return [Shape("ColoredMNIST", 2, 2, 16, 4), Shape("OfficeHome", 65, 3, 24, 4)]
    return [Shape(name, c, k, d) for d in WIDTHS for name, c, k in SHAPES]


def build(method: str, shape: Shape, device: torch.device, budget_mb: float) -> nn.Module:
    """`method` with default hparams on the identity featurizer, penalties from step 0."""
    name = "CMA" if method.startswith("CMA") else method
    hparams = default_hparams(name, "probe")
    hparams.update(VARIANTS.get(method, {}))
    if name == "CMA":
        hparams["hessian_memory_mb"] = budget_mb
    dims = ((shape.dim,), shape.num_classes, shape.num_domains)
    return build_penalised(name, hparams, *dims, device, feature_dim=shape.dim)


def batches(shape: Shape, device: torch.device, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in range(shape.num_domains):
        z = torch.randn(shape.batch, shape.dim, generator=g) + 0.3 * e
        y = torch.randint(0, shape.num_classes, (shape.batch,), generator=g)
        out.append((z.to(device), y.to(device)))
    return out


def kfac_errors(shape: Shape, data: list, classifier: nn.Linear) -> dict[str, tuple[float, float]]:
    """(mean Hessian error, penalty error) at the head's init and with logit std 3."""
    from dgalign.curvature.kfac import kfac_hessian_error, kfac_penalty_error

    zs = [z.double() for z, _ in data]
    w, b = classifier.weight.detach().double(), classifier.bias.detach().double()
    out = {}
    for label, scale in (("init", None), ("logit std 3", 3.0)):
        if scale is not None:
            g = torch.Generator(device=w.device).manual_seed(1)
            w = torch.randn(w.shape, generator=g, dtype=w.dtype, device=w.device)
            w = w * scale / zs[0].std() / shape.dim**0.5
        logits = [z @ w.T + b for z in zs]
        h_err = statistics.mean(
            float(kfac_hessian_error(z, lg)) for z, lg in zip(zs, logits, strict=True)
        )
        out[label] = (h_err, float(kfac_penalty_error(zs, logits)))
    return out


def run_shape(
    shape: Shape, steps: int, warmup: int, device: torch.device, budget_mb: float
) -> ShapeResult:
    from dgalign.bench.curvature import peak_bytes

    cells = {m: Cell(m) for m in METHODS}
    built = {}
    for method in METHODS:
        torch.manual_seed(0)
        try:
            built[method] = build(method, shape, device, budget_mb)
        except ConfigError as exc:
            cells[method].refused = str(exc).split(";")[0]
    data = batches(shape, device)
    active = list(built)
    for r in range(warmup + steps):
        k = r % len(active)
        for method in active[k:] + active[:k]:
            built[method].update(data)  # untimed: the timed step never follows another method
            synchronize(device)
            start, cpu = time.perf_counter(), time.process_time()
            built[method].update(data)
            synchronize(device)
            if r >= warmup:
                cells[method].times.append(time.perf_counter() - start)
                cells[method].cpu_times.append(time.process_time() - cpu)
    for method, algorithm in built.items():
        cells[method].peak_mb = peak_bytes(algorithm, data, device) / 2**20
    errors = kfac_errors(shape, data, built["ERM"].classifier)
    return ShapeResult(shape, list(cells.values()), errors)


def run_tables(
    steps: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    quick: bool = False,
    budget_mb: float = 1024,
) -> list[ShapeResult]:
    if steps < 1 or warmup < 0:
        raise ConfigError(f"--steps must be >= 1 and --warmup >= 0, got {steps}, {warmup}")
    dev = resolve_device(device)
    if quick:
        steps, warmup = min(steps, 1), 0
    return [run_shape(s, steps, warmup, dev, budget_mb) for s in shapes(quick)]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _time_table(results: Sequence[ShapeResult], title: str, attr: str) -> list[str]:
    head = ["head (dataset: C, K x batch, d)", *METHODS, "Hutchinson / CMA-gram"]
    lines = [title, "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for res in results:
        cells = {c.method: c for c in res.cells}
        gram, hut = getattr(cells["CMA-gram"], attr), getattr(cells["Hutchinson"], attr)
        ratio = f"{hut / gram:.0f}x" if gram and hut else "-"
        row = [("refused" if c.refused else _fmt(getattr(c, attr))) for c in res.cells]
        lines.append(f"| {_label(res.shape)} | " + " | ".join(row) + f" | {ratio} |")
    return lines


def _label(s: Shape) -> str:
    return f"{s.dataset}: {s.num_classes}, {s.num_domains} x {s.batch}, {s.dim}"


def format_tables(results: Sequence[ShapeResult], device: str, steps: int, warmup: int) -> str:
    """Markdown tables: step time in ms by shape and method (CPU: process CPU time, then wall
    time), peak memory in MB, then the K-FAC errors."""
    how = (
        f"{device}, {torch.get_num_threads()} threads; median of {steps} steps after {warmup} "
        "warm-up rounds, methods interleaved; refused: over the full budget"
    )
    lines: list[str] = []
    if device.startswith("cpu"):
        lines += [*_time_table(results, f"Step CPU time in ms ({how})", "cpu_ms"), ""]
    lines += _time_table(results, f"Step wall time in ms ({how})", "step_ms")
    head = ["head (dataset: C, K x batch, d)", *METHODS]
    lines += [
        "",
        "Peak memory of one step in MB (tensor bytes above those alive before it)",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for res in results:
        row = [("refused" if c.refused else _fmt(c.peak_mb)) for c in res.cells]
        lines.append(f"| {_label(res.shape)} | " + " | ".join(row) + " |")
    lines += [
        "",
        "K-FAC approximation error: mean_e ||H_e - A_e (x) B_e|| / ||H_e|| and |P_kfac - P| / P",
        "",
        "| head | Hessian error (init) | penalty error (init) | Hessian error (logit std 3) "
        "| penalty error (logit std 3) |",
        "|---|---:|---:|---:|---:|",
    ]
    for res in results:
        e0, e3 = res.kfac_error["init"], res.kfac_error["logit std 3"]
        lines.append(
            f"| {_label(res.shape)} | {e0[0]:.3f} | {e0[1]:.3f} | {e3[0]:.3f} | {e3[1]:.3f} |"
        )
    refusals = {c.refused for r in results for c in r.cells if c.refused}
    lines += ["", *(f"refused: {text}" for text in sorted(refusals))]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only the CMA tables read (the shared ones are curvature's)."""
    parser.add_argument(
        "--full-budget-mb",
        type=float,
        default=1024,
        help="--cma-tables: hessian_memory_mb of CMA-full (default 1024, CMA's default)",
    )


def run(args: argparse.Namespace) -> int:
    device = str(resolve_device(args.device))  # `auto` named as what it resolved to
    results = run_tables(args.steps, args.warmup, device, args.quick, args.full_budget_mb)
    steps, warmup = (min(args.steps, 1), 0) if args.quick else (args.steps, args.warmup)
    print(format_tables(results, device, steps, warmup))
    return 0
