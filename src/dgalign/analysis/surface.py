"""2-D loss and accuracy surfaces on the plane through three weight vectors, with optimisation
paths projected onto it (FGMix paper Fig. 6 and its Appendix D, after Izmailov et al.):

    u = w1 - w0,  v = (w2 - w0) - (<w2 - w0, u> / ||u||^2) u,  u^ = u / ||u||,  v^ = v / ||v||,
    a point w has coordinates (<w - w0, u^>, <w - w0, v^>); the grid point (a, b) is the weight
    vector w0 + a u^ + b v^ (w = the featurizer + classifier weights).

At every grid point: the training loss (original training data; and, with an FGMix run among
the weights, original + that run's mixes), and the accuracy on the test environment.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgalign.algorithms import Algorithm
from dgalign.analysis.loading import load_source, run_data, trained_policy, unique_labels
from dgalign.analysis.objective import Objective, build_objective, get_vector, set_vector
from dgalign.analysis.output import output_dir, write_numbers
from dgalign.errors import ConfigError
from dgalign.utils.plotting import pyplot


@dataclass
class Plane:
    """Origin w0 and orthonormal basis (u^, v^) of the plane through three weight vectors."""

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    @classmethod
    def through(cls, w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> Plane:
        w0, w1, w2 = w0.double(), w1.double(), w2.double()
        u, v = w1 - w0, w2 - w0
        if u.norm() == 0:
            raise ConfigError("the first two weight vectors are equal: they span no plane")
        v = v - (v @ u) / (u @ u) * u
        if v.norm() <= 1e-6 * u.norm():
            raise ConfigError("the three weight vectors are collinear: they span no plane")
        return cls(w0, u / u.norm(), v / v.norm())

    def coordinates(self, w: torch.Tensor) -> tuple[float, float]:
        d = w.double() - self.origin
        return float(d @ self.u), float(d @ self.v)

    def point(self, a: float, b: float) -> torch.Tensor:
        return self.origin + a * self.u + b * self.v


@dataclass
class Surface:
    """Values on the grid `alphas` x `betas` (index [j, i] = (betas[j], alphas[i]))."""

    alphas: np.ndarray
    betas: np.ndarray
    values: dict[str, np.ndarray]
    points: dict[str, tuple[float, float]]
    paths: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def extremes(self) -> list[tuple[str, str, float, float, float]]:
        """(quantity, "max" or "min", value, u, v): the best grid point of each quantity (the
        highest accuracy, the lowest loss)."""
        out = []
        for name, grid in self.values.items():
            best = "max" if "accuracy" in name else "min"
            flat = np.argmax(grid) if best == "max" else np.argmin(grid)
            j, i = np.unravel_index(flat, grid.shape)
            out.append((name, best, float(grid[j, i]), float(self.alphas[i]), float(self.betas[j])))
        return out


def grid_range(coords: Sequence[tuple[float, float]], margin: float) -> tuple[tuple, tuple]:
    """Axis ranges containing every point, widened by `margin` times the span."""
    xs, ys = np.array([c[0] for c in coords]), np.array([c[1] for c in coords])
    span = max(xs.max() - xs.min(), ys.max() - ys.min(), 1e-8)
    return (
        (xs.min() - margin * span, xs.max() + margin * span),
        (ys.min() - margin * span, ys.max() + margin * span),
    )


def load_path(spec: str, data_dir: str | None = None) -> tuple[str, list[torch.Tensor]]:
    """An optimisation path: the weight vectors of the `.pt` files (checkpoint copies, or model
    files) in folder `spec` (`DIR:swa` for the weight averages inside the checkpoints), in
    the order of their steps, and a label."""
    swa = spec.endswith(":swa")
    folder = Path(spec[: -len(":swa")] if swa else spec)
    if not folder.is_dir():
        raise ConfigError(f"--path {folder} is not a folder of checkpoint copies")
    loaded, name = [], ""
    for file in sorted(folder.glob("*.pt")):
        run, algorithm, label = load_source(str(file) + (":swa" if swa else ""), data_dir)
        step = run.step if run.step is not None else len(loaded)
        loaded.append((step, get_vector(algorithm)))
        name = label.split(" @")[0]
    if not loaded:
        raise ConfigError(f"--path {folder} holds no .pt files")
    loaded.sort(key=lambda item: item[0])
    return f"{name} path", [w for _, w in loaded]


@torch.no_grad()
def compute_surface(
    model: Algorithm,
    plane: Plane,
    objectives: dict[str, Objective],
    points: dict[str, torch.Tensor],
    paths: dict[str, list[torch.Tensor]],
    grid: int = 11,
    margin: float = 0.2,
) -> Surface:
    """Evaluate `objectives` (name -> training objective) and the test accuracy (of the
    first objective's test data) at `grid` x `grid` points covering all points and paths."""
    model = copy.deepcopy(model).eval()
    dtype = get_vector(model).dtype
    point_coords = {k: plane.coordinates(w) for k, w in points.items()}
    path_coords = {k: [plane.coordinates(w) for w in ws] for k, ws in paths.items()}
    every = list(point_coords.values()) + [c for cs in path_coords.values() for c in cs]
    (a0, a1), (b0, b1) = grid_range(every, margin)
    alphas, betas = np.linspace(a0, a1, grid), np.linspace(b0, b1, grid)
    values = {f"{name} loss": np.zeros((grid, grid)) for name in objectives}
    values["test accuracy"] = np.zeros((grid, grid))
    test = next(iter(objectives.values()))
    for j, b in enumerate(betas):
        for i, a in enumerate(alphas):
            set_vector(model, plane.point(float(a), float(b)).to(dtype))
            for name, objective in objectives.items():
                values[f"{name} loss"][j, i] = objective.loss(model)
            values["test accuracy"][j, i] = test.test_accuracy(model)
    return Surface(alphas, betas, values, point_coords, path_coords)


def plot_surface(surface: Surface, path: Path, title: str) -> Path:
    """One contour panel per quantity (shared axes), with points and paths on each."""
    plt = pyplot()
    names = list(surface.values)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    loss_levels = None
    losses = [surface.values[n] for n in names if n.endswith("loss")]
    if losses:  # the same (log-spaced) contour levels on every loss panel, to compare flatness
        top = max(float(np.percentile(v, 90)) for v in losses)
        low = max(min(float(v.min()) for v in losses), 1e-6)
        loss_levels = np.geomspace(low, max(top, low * 1.01), 15)
    for ax, name in zip(axes[0], names, strict=True):
        grid = surface.values[name]
        if name.endswith("loss"):
            cs = ax.contourf(
                surface.alphas,
                surface.betas,
                grid,
                levels=loss_levels,
                cmap="viridis",
                extend="max",
            )
        else:
            cs = ax.contourf(surface.alphas, surface.betas, grid, levels=15, cmap="magma")
        fig.colorbar(cs, ax=ax)
        for k, (label, coords) in enumerate(surface.paths.items()):
            xs, ys = zip(*coords, strict=True)
            ax.plot(
                xs,
                ys,
                "-o",
                color=colors[k % len(colors)],
                markersize=2.5,
                linewidth=1.2,
                label=label,
            )
        for label, (x, y) in surface.points.items():
            ax.plot([x], [y], "w*", markersize=10, markeredgecolor="black")
            ax.annotate(
                label,
                (x, y),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0},
            )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("u")
        ax.set_ylabel("v")
        if surface.paths:
            ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_points(surface: Surface, values_at: dict[str, dict[str, float]]) -> str:
    """Markdown table: each named point's plane coordinates and its values."""
    names = list(next(iter(values_at.values())))
    lines = ["| point | u | v | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 3)]
    for label, (a, b) in surface.points.items():
        cells = " | ".join(f"{values_at[label][n]:.4f}" for n in names)
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {cells} |")
    return "\n".join(lines)


@dataclass
class SurfaceAnalysis:
    """What `analyze_surface` computed and wrote."""

    surface: Surface
    labels: list[str]  # of the three weight sources, made unique
    at_points: dict[str, dict[str, float]]  # each source's losses and test accuracy
    png: Path
    json: Path


def analyze_surface(
    weights: Sequence[str],
    paths: Sequence[str] = (),
    grid: int = 11,
    margin: float = 0.2,
    n_mix: int = 1000,
    max_samples: int = 2000,
    out: str | Path | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> SurfaceAnalysis:
    """The surface through three weight sources (`loading.load_source`) of one network and one
    dataset split, with the optimisation paths of `paths` (`load_path`): the training loss,
    also with the mixes of the first trained FGMix source, and the test accuracy, plotted to
    surface.png with the numbers in surface.json, in `out` (default: analysis/ beside the
    first trained source)."""
    if grid < 2:
        raise ConfigError(f"--grid must be at least 2, got {grid}")
    sources = [load_source(spec, data_dir) for spec in weights]
    vectors = [get_vector(alg) for _, alg, _ in sources]
    if len({v.numel() for v in vectors}) != 1:
        raise ConfigError("the three weight vectors have different sizes: use runs of one network")
    runs = [run for run, _, _ in sources]
    if len({(r.args["dataset"], tuple(r.test_envs)) for r in runs}) != 1:
        raise ConfigError("the weight sources come from different datasets or test envs")
    data = run_data(runs[0], data_dir)
    objectives = {"train": build_objective(data, max_samples)}
    for spec, (run, alg, _) in zip(weights, sources, strict=True):
        if hasattr(alg, "mix_weights") and not spec.startswith("init:"):
            objectives[f"train + {run.name} mixes"] = build_objective(
                data, max_samples, trained_policy(spec), n_mix, seed
            )
            break
    plane = Plane.through(*vectors)
    labels = unique_labels([label for _, _, label in sources])
    points = dict(zip(labels, vectors, strict=True))
    path_vectors = dict(load_path(spec, data_dir) for spec in paths)
    model = sources[-1][1]
    surface = compute_surface(model, plane, objectives, points, path_vectors, grid, margin)
    trained = [w for w in weights if not w.startswith("init:")]
    folder = output_dir(out, (trained or list(weights))[0])
    title = f"{runs[0].args['dataset']}, test env {data.test_envs[0]}"
    png = plot_surface(surface, folder / "surface.png", title)
    at_points = {}
    for (_, alg, _), label in zip(sources, labels, strict=True):
        at_points[label] = {f"{n} loss": o.loss(alg) for n, o in objectives.items()}
        at_points[label]["test accuracy"] = objectives["train"].test_accuracy(alg)
    write_numbers(
        folder / "surface.json",
        {
            "alphas": surface.alphas.tolist(),
            "betas": surface.betas.tolist(),
            "values": {k: v.tolist() for k, v in surface.values.items()},
            "points": surface.points,
            "paths": surface.paths,
            "at_points": at_points,
        },
    )
    return SurfaceAnalysis(surface, labels, at_points, png, folder / "surface.json")
