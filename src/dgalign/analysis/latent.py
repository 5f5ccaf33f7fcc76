"""Latent codes of a trained model (FGMix paper Figs. 4 and 9): the featurizer's codes of every
environment, embedded in 2-D and coloured by domain and by class; for FGMix runs also the
mixes its trained policy generates (interpolations and extrapolations) next to random
Dirichlet(1) interpolations of the same tuples (variant A, the paper's Fig. 4b).

Numbers behind the plot (in the latent space itself, not the embedding): the fraction of
extrapolated mixes, and how well the training codes cover the test domain: the mean distance
from each test code to its nearest training code, and to its nearest training-or-mixed code,
next to the mean nearest-neighbour distance among training codes (the scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgalign.algorithms.fgmix_policy import dirichlet_weights, gather
from dgalign.analysis.loading import LoadedRun, RunData, load_source, run_data, take
from dgalign.analysis.objective import policy_mixes
from dgalign.analysis.output import output_dir, write_numbers
from dgalign.analysis.plotting import embed_2d
from dgalign.data import get_dataset_class
from dgalign.errors import ConfigError
from dgalign.utils.plotting import pyplot


@dataclass
class LatentCodes:
    """Codes [n, d] with their env and class; mixes [m, d] per kind ("FGMix", "random")."""

    codes: np.ndarray
    envs: np.ndarray
    labels: np.ndarray
    test_envs: list[int]
    mixes: dict[str, np.ndarray] = field(default_factory=dict)
    extrapolated: np.ndarray | None = None  # per FGMix mix: any negative weight


def _host_array(t: torch.Tensor) -> np.ndarray:
    """A tensor of any device as a numpy array (copied to the host first)."""
    return t.detach().cpu().numpy()


@torch.no_grad()
def collect_codes(
    run: LoadedRun, data: RunData, per_env: int, n_mix: int = 0, seed: int = 0
) -> LatentCodes:
    """`per_env` codes of each environment's `in` split; `n_mix` mixes for FGMix runs."""
    algorithm = run.algorithm.eval()
    if not hasattr(algorithm, "featurizer"):
        raise ValueError(f"{run.name} has no featurizer: nothing to embed")
    xs, ys = zip(*[take(split, per_env) for split in data.in_splits], strict=True)
    codes = [algorithm.featurizer(x) for x in xs]
    out = LatentCodes(
        _host_array(torch.cat(codes)),
        np.concatenate([np.full(len(y), i) for i, y in enumerate(ys)]),
        _host_array(torch.cat(ys)),
        data.test_envs,
    )
    if n_mix > 0 and hasattr(algorithm, "mix_weights"):
        train = data.train_envs
        plan, weights = policy_mixes(
            run, [xs[i] for i in train], [ys[i] for i in train], n_mix, seed
        )
        tuples = gather([codes[i] for i in train], plan)
        out.mixes["FGMix"] = _host_array((weights[..., None] * tuples).sum(1))
        out.extrapolated = _host_array(((weights < 0) & plan.mask).any(1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random_w = dirichlet_weights(plan.mask, 1.0).to(tuples.dtype)
        out.mixes["random interpolation"] = _host_array((random_w[..., None] * tuples).sum(1))
    return out


def coverage(latent: LatentCodes) -> dict[str, float]:
    """Mean distance of each test code to the nearest training code, and to the nearest
    training or mixed code (smaller = the mixes reach towards the test domain); the mean
    nearest-neighbour distance among training codes gives the scale (codes of different runs
    differ in scale, so compare ratios across runs)."""
    is_test = np.isin(latent.envs, latent.test_envs)
    test, train = torch.from_numpy(latent.codes[is_test]), torch.from_numpy(latent.codes[~is_test])
    within = torch.cdist(train, train).fill_diagonal_(float("inf"))
    result = {
        "train -> nearest other train code (scale)": float(within.min(1).values.mean()),
        "test -> nearest train code": float(torch.cdist(test, train).min(1).values.mean()),
    }
    for kind, mixes in latent.mixes.items():
        pool = torch.cat([train, torch.from_numpy(mixes)])
        result[f"test -> nearest train or {kind} code"] = float(
            torch.cdist(test, pool).min(1).values.mean()
        )
    return result


def plot_latent(
    latent: LatentCodes, env_names: list[str], path: Path, method: str = "auto", seed: int = 0
) -> tuple[Path, str]:
    """Panels: codes by domain, by class, and (FGMix) original vs generated codes. One joint
    embedding of codes and mixes (t-SNE has no out-of-sample transform)."""
    plt = pyplot()
    kinds = list(latent.mixes)
    stacked = np.concatenate([latent.codes, *latent.mixes.values()])
    emb, used = embed_2d(stacked, method, seed)
    n = len(latent.codes)
    orig, offset, mixed = emb[:n], n, {}
    for kind in kinds:
        mixed[kind] = emb[offset : offset + len(latent.mixes[kind])]
        offset += len(latent.mixes[kind])
    n_panels = 2 + len(kinds)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.0 * n_panels, 3.9), squeeze=False)
    ax = axes[0, 0]
    for e, name in enumerate(env_names):
        sel = latent.envs == e
        marker = "x" if e in latent.test_envs else "o"
        tag = " (test)" if e in latent.test_envs else ""
        ax.scatter(*orig[sel].T, s=6, marker=marker, alpha=0.6, label=f"{name}{tag}")
    ax.set_title("codes by domain", fontsize=9)
    ax.legend(fontsize=6, markerscale=2)
    ax = axes[0, 1]
    sc = ax.scatter(*orig.T, s=6, c=latent.labels, cmap="tab10", alpha=0.7)
    ax.set_title("codes by class", fontsize=9)
    fig.colorbar(sc, ax=ax)
    train = ~np.isin(latent.envs, latent.test_envs)
    for k, kind in enumerate(kinds):
        ax = axes[0, 2 + k]
        ax.scatter(*orig[train].T, s=5, color="lightgray", label="training codes")
        ax.scatter(*orig[~train].T, s=5, color="tab:pink", alpha=0.5, label="test codes")
        pts = mixed[kind]
        if kind == "FGMix" and latent.extrapolated is not None:
            ext = latent.extrapolated
            ax.scatter(*pts[~ext].T, s=7, color="tab:blue", label="interpolated")
            ax.scatter(*pts[ext].T, s=9, marker="^", color="tab:red", label="extrapolated")
            ax.set_title(f"FGMix mixes ({ext.mean():.0%} extrapolated)", fontsize=9)
        else:
            ax.scatter(*pts.T, s=7, color="tab:blue", label="mixes")
            ax.set_title(kind + " mixes", fontsize=9)
        ax.legend(fontsize=6, markerscale=2)
    note = "" if used == "t-SNE" else " (scikit-learn not installed: PCA instead of t-SNE)"
    fig.suptitle(f"Latent codes, {used}{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path, used


@dataclass
class LatentAnalysis:
    """What `analyze_latent` computed and wrote."""

    label: str  # of the weight source
    codes: int  # how many codes were embedded
    embedding: str  # "t-SNE" or "PCA"
    numbers: dict[str, float | str]  # the embedding, `coverage` and the extrapolated fraction
    png: Path
    json: Path


def analyze_latent(
    source: str,
    per_env: int = 300,
    n_mix: int = 300,
    embedding: str = "auto",
    out: str | Path | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> LatentAnalysis:
    """Embed the codes of weight source `source` (`loading.load_source`) and, for FGMix runs,
    its mixes: latent.png, with the numbers in latent.json, in `out` (default: analysis/ beside
    the run)."""
    if per_env < 2:
        raise ConfigError(f"--per-env must be at least 2, got {per_env}")
    run, _, label = load_source(source, data_dir)
    data = run_data(run, data_dir)
    latent = collect_codes(run, data, per_env, n_mix, seed)
    names = list(get_dataset_class(run.args["dataset"]).ENVIRONMENTS)
    folder = output_dir(out, source)
    png, used = plot_latent(latent, names, folder / "latent.png", embedding, seed)
    numbers: dict[str, float | str] = {"embedding": used, **coverage(latent)}
    if latent.extrapolated is not None:
        numbers["extrapolated fraction"] = float(latent.extrapolated.mean())
    write_numbers(folder / "latent.json", numbers)
    return LatentAnalysis(label, len(latent.codes), used, numbers, png, folder / "latent.json")
