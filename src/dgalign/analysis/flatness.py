"""Local flatness of a trained model (FGMix paper Fig. 5, after Izmailov et al. / SWAD):

    F(r) = E_d [ L(theta + r d) - L(theta) ],

L the training loss (original training data, or original + FGMix mixes), theta the network's
weights (featurizer + classifier), d a random direction:
- "unit" (default): Gaussian, normalised to unit norm over all weights, so r is the Euclidean
  distance moved in weight space (the definition the paper and SWAD use);
- "filter": filter-normalised (Li et al., 2018): each row (output unit / filter) of every
  weight tensor with >= 2 dims is rescaled to the norm of the same row of theta, biases and
  normalisation parameters are not moved, so r is relative to the weights' own scale.
The same directions are used at every radius; each direction's curve is kept (the paper
plots them next to their mean).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dgalign.algorithms import Algorithm
from dgalign.analysis.loading import load_source, run_data, trained_policy, unique_labels
from dgalign.analysis.objective import (
    Objective,
    build_objective,
    get_vector,
    set_vector,
    weight_params,
)
from dgalign.analysis.output import output_dir, write_numbers
from dgalign.errors import ConfigError
from dgalign.utils.plotting import pyplot

DIRECTIONS = ("unit", "filter")


def random_direction(algorithm: Algorithm, kind: str, generator: torch.Generator) -> torch.Tensor:
    """One direction over the weights of `algorithm` as a flat vector (see module docstring),
    on the weights' device. It is drawn from `generator` on the CPU and copied over, so a seed
    gives the same directions on every device."""
    if kind not in DIRECTIONS:
        raise ValueError(f"direction kind must be one of {', '.join(DIRECTIONS)}, got {kind!r}")
    parts = []
    for p in weight_params(algorithm):
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        d = d.to(device=p.device, dtype=p.dtype)
        if kind == "filter":
            if p.dim() < 2:
                d = torch.zeros_like(d)
            else:
                rows_d = d.reshape(p.shape[0], -1)
                rows_p = p.detach().reshape(p.shape[0], -1)
                scale = rows_p.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True)
                d = (rows_d * scale).reshape(p.shape)
        parts.append(d.reshape(-1))
    vector = torch.cat(parts)
    return vector / vector.norm() if kind == "unit" else vector


@dataclass
class FlatnessResult:
    """`gaps[i, j]` = L(theta + radii[j] d_i) - L(theta); `base` = L(theta)."""

    label: str
    radii: np.ndarray
    gaps: np.ndarray
    base: float

    @property
    def mean(self) -> np.ndarray:
        return self.gaps.mean(0)


@torch.no_grad()
def flatness_curves(
    algorithm: Algorithm,
    objective: Objective,
    radii: Sequence[float],
    n_directions: int,
    kind: str = "unit",
    seed: int = 0,
    label: str = "",
) -> FlatnessResult:
    """Loss increase at each radius along `n_directions` random directions (on a copy; the
    algorithm itself is not modified)."""
    model = copy.deepcopy(algorithm).eval()
    theta = get_vector(model)
    base = objective.loss(model)
    generator = torch.Generator().manual_seed(seed)
    gaps = np.zeros((n_directions, len(radii)))
    for i in range(n_directions):
        d = random_direction(model, kind, generator)
        for j, r in enumerate(radii):
            set_vector(model, theta + float(r) * d)
            gaps[i, j] = objective.loss(model) - base
    set_vector(model, theta)
    return FlatnessResult(label, np.asarray(radii, dtype=float), gaps, base)


def plot_flatness(results: list[FlatnessResult], path: Path, kind: str, data_note: str) -> Path:
    """One panel per run (every direction thin, the mean thick) and one panel of all means."""
    plt = pyplot()
    n = len(results)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.3 * (n + 1), 3.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xlabel = "radius r" + (" (filter-normalised)" if kind == "filter" else "")
    low = min(float(r.gaps.min()) for r in results)
    high = max(float(r.gaps.max()) for r in results)
    pad = 0.05 * max(high - low, 1e-12)
    for k, res in enumerate(results):
        ax, color = axes[0, k], colors[k % len(colors)]
        for row in res.gaps:
            ax.plot(res.radii, row, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(res.radii, res.mean, color="black", linewidth=2)
        ax.set_title(res.label, fontsize=9)
        ax.set_ylim(low - pad, high + pad)  # one scale for every run's panel
        ax.set_xlabel(xlabel)
        ax.set_ylabel("L(theta + r d) - L(theta)")
        axes[0, n].plot(res.radii, res.mean, color=color, linewidth=2, label=res.label)
    axes[0, n].set_title("mean over directions", fontsize=9)
    axes[0, n].set_xlabel(xlabel)
    axes[0, n].legend(fontsize=7)
    fig.suptitle(f"Local flatness ({data_note})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_table(results: list[FlatnessResult]) -> str:
    """Markdown table: mean +- std of the loss increase per radius and run."""
    head = "| radius | " + " | ".join(r.label for r in results) + " |"
    lines = [head, "|" + "---|" * (len(results) + 1)]
    lines.append("| L(theta) | " + " | ".join(f"{r.base:.4f}" for r in results) + " |")
    for j, radius in enumerate(results[0].radii):
        cells = [f"{r.gaps[:, j].mean():.4f} +- {r.gaps[:, j].std():.4f}" for r in results]
        lines.append(f"| {radius:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_radii(kind: str) -> list[float]:
    """Radii of the curves: relative ones for filter-normalised directions, else Euclidean."""
    if kind == "filter":
        return [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    return [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]


@dataclass
class FlatnessAnalysis:
    """What `analyze_flatness` computed and wrote."""

    results: list[FlatnessResult]
    note: str  # directions and data, as in the plot's title
    png: Path
    json: Path


def analyze_flatness(
    sources: Sequence[str],
    radii: Sequence[float] | None = None,
    n_directions: int = 20,
    kind: str = "unit",
    data: str = "auto",
    n_mix: int = 1000,
    max_samples: int = 2000,
    out: str | Path | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> FlatnessAnalysis:
    """Flatness curves of every weight source (`loading.load_source`) on its training data
    (`data` "original"; "mixed": original + the mixes of the run's trained FGMix policy; "auto":
    mixed for FGMix runs, as the paper), plotted to flatness.png with the numbers in
    flatness.json, in `out` (default: analysis/ beside the first run)."""
    if n_directions < 1:
        raise ConfigError(f"--n-directions must be at least 1, got {n_directions}")
    radii = list(radii or default_radii(kind))
    results, notes = [], set()
    data_cache: dict = {}
    for spec in sources:
        run, algorithm, label = load_source(spec, data_dir)
        key = (run.args["dataset"], tuple(run.test_envs), run.args["trial_seed"])
        if key not in data_cache:
            data_cache[key] = run_data(run, data_dir)
        mixed = data == "mixed" or (data == "auto" and hasattr(algorithm, "mix_weights"))
        policy = trained_policy(spec) if mixed else None
        objective = build_objective(data_cache[key], max_samples, policy, n_mix, seed)
        notes.add("original + mixed data" if mixed else "original data")
        results.append(
            flatness_curves(algorithm, objective, radii, n_directions, kind, seed, label)
        )
    for result, label in zip(results, unique_labels([r.label for r in results]), strict=True):
        result.label = label
    folder = output_dir(out, sources[0])
    note = f"{kind} directions, {' / '.join(sorted(notes))}"
    png = plot_flatness(results, folder / "flatness.png", kind, note)
    write_numbers(
        folder / "flatness.json",
        {
            "directions": kind,
            "data": sorted(notes),
            "runs": {
                r.label: {"radii": r.radii.tolist(), "base": r.base, "gaps": r.gaps.tolist()}
                for r in results
            },
        },
    )
    return FlatnessAnalysis(results, note, png, folder / "flatness.json")
