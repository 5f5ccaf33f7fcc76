"""Transferability attack (Zhang et al. 2021; the Hessian paper's Fig 2).

For a trained model with head theta* and fixed features of the source domains S_1..S_K and the
target T: for every delta, starting at theta = theta*, repeat `rounds` times
    pick i = argmax_k L_Sk(theta), j = argmin_k L_Sk(theta);
    `steps` times: theta += eta delta grad / ||grad|| with grad = d(L_Si - L_Sj)/d theta
    (normalised ascent, eta = `step_frac`), then project theta onto ||theta - theta*|| <= delta;
and report the target accuracy at the theta with the largest gap L_Si - L_Sj seen (the
worst case found). theta is all head parameters, flattened together; L is the head loss of
`curvature.risk.mean_loss` (cross-entropy, or BCE for one logit). A model whose source
Hessians are aligned keeps its target accuracy as delta grows.

Models: DomainBed-style run dirs (model.pt; rebuilt by `analysis.loading`, sources = the
training envs' `in` splits, target = each test env's `in` + `out`) and `dgalign reproduce
cmnist` run dirs (every method and restart found; sources env0, env1, target the test env,
regenerated from the run's seed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dgalign.curvature.risk import mean_loss
from dgalign.errors import ConfigError, RunDirError
from dgalign.runs.directory import RunDirectory
from dgalign.runs.identity import REPRODUCTION, is_reproduction, read_identity
from dgalign.utils.io import atomic_write_json
from dgalign.utils.plotting import pyplot, save_png
from dgalign.utils.tensors import flatten

Domain = tuple[Tensor, Tensor]  # features [n, d], labels


def head_accuracy(logits: Tensor, y: Tensor) -> float:
    """Accuracy of argmax (C >= 2) or of logit > 0 (one logit)."""
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return float((pred == y.reshape(-1).long()).float().mean())


def project_(params: list[Tensor], star: list[Tensor], delta: float) -> float:
    """In place: theta <- theta* + (theta - theta*) min(1, delta / ||theta - theta*||);
    returns the distance after projecting."""
    with torch.no_grad():
        dist = float(flatten([p - s for p, s in zip(params, star, strict=True)]).norm())
        if dist > delta:
            scale = delta / dist
            for p, s in zip(params, star, strict=True):
                p.copy_(s + (p - s) * scale)
            dist = delta
    return dist


@dataclass
class AttackResult:
    """Target accuracy / loss at the worst-case head for one delta, with the gap and distance."""

    delta: float
    target_acc: float
    target_loss: float
    gap: float
    distance: float


def attack_head(
    head: nn.Module,
    sources: list[Domain],
    target: Domain,
    delta: float,
    rounds: int = 5,
    steps: int = 20,
    step_frac: float = 0.2,
) -> AttackResult:
    """The projected gradient-ascent attack of the module docstring on a copy of `head`."""
    if len(sources) < 2:
        raise ConfigError(f"the attack needs at least 2 source domains, got {len(sources)}")
    if delta < 0:
        raise ConfigError(f"delta must be >= 0, got {delta}")
    work = copy.deepcopy(head).eval()
    params = [p for p in work.parameters() if p.requires_grad]
    star = [p.detach().clone() for p in params]

    def losses() -> list[Tensor]:
        return [mean_loss(work(z), y) for z, y in sources]

    with torch.no_grad():
        first = losses()
    best_gap = float(max(first) - min(first))
    best = [p.detach().clone() for p in params]
    for _ in range(rounds if delta > 0 else 0):
        with torch.no_grad():
            vals = torch.stack(losses())
        i, j = int(vals.argmax()), int(vals.argmin())
        for _ in range(steps):
            gap = mean_loss(work(sources[i][0]), sources[i][1]) - mean_loss(
                work(sources[j][0]), sources[j][1]
            )
            grads = torch.autograd.grad(gap, params)
            norm = float(flatten(list(grads)).norm())
            if norm == 0.0:
                break
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.add_(g, alpha=step_frac * delta / norm)
            project_(params, star, delta)
            with torch.no_grad():
                vals = torch.stack(losses())
            if float(vals[i] - vals[j]) > best_gap:
                best_gap = float(vals[i] - vals[j])
                best = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, b in zip(params, best, strict=True):
            p.copy_(b)
        logits = work(target[0])
        dist = float(flatten([p - s for p, s in zip(params, star, strict=True)]).norm())
        return AttackResult(
            delta,
            head_accuracy(logits, target[1]),
            float(mean_loss(logits, target[1])),
            best_gap,
            dist,
        )


@torch.no_grad()
def _features(featurizer: nn.Module, x: Tensor, batch: int = 512) -> Tensor:
    return torch.cat([featurizer(x[i : i + batch]) for i in range(0, len(x), batch)])


def domainbed_models(run_dir: Path, data_dir: str | None, max_samples: int | None):
    """[(label, head, sources, targets)] of a DomainBed-style run dir (model.pt)."""
    from dgalign.analysis.loading import load_run, run_data, take

    run = load_run(run_dir)
    alg = run.algorithm
    if not (hasattr(alg, "featurizer") and hasattr(alg, "classifier")):
        raise RunDirError(f"{run.name} has no featurizer/classifier pair to attack")
    data = run_data(run, data_dir)

    def domain(split) -> Domain:
        x, y = take(split, max_samples)
        return _features(alg.featurizer, x), y

    sources = [domain(data.in_splits[i]) for i in data.train_envs]
    targets = {}
    for t in data.test_envs:
        a, b = domain(data.in_splits[t]), domain(data.out_splits[t])
        targets[f"env{t}"] = (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
    return [(run.name, alg.classifier, sources, targets)]


def reproduction_models(run_dir: Path, data_dir: str | None):
    """[(label, head, sources, targets)] for every saved restart of a `reproduce cmnist` dir
    (or of one method's folder inside it)."""
    from dgalign.experiments.cmnist_data import DataConfig
    from dgalign.experiments.cmnist_model import RestartMLP
    from dgalign.experiments.cmnist_run import ReproduceConfig, generate
    from dgalign.experiments.cmnist_train import Protocol

    root = run_dir if is_reproduction(run_dir) else run_dir.parent
    ident = read_identity(root, REPRODUCTION)
    files = sorted(run_dir.glob("restart*.pt") if root != run_dir else root.glob("*/restart*.pt"))
    if not files:
        raise RunDirError(f"{run_dir} holds no saved restarts (restart*.pt)")
    saved = [torch.load(f, weights_only=True) for f in files]
    config = ReproduceConfig(
        output_dir=str(root),
        seed=ident["seed"],
        data=DataConfig(**ident["data"]),
        protocol=Protocol(**ident["protocol"]),
        data_dir=data_dir,
    )
    data, _ = generate(config, max(s["restart"] for s in saved) + 1)
    out = []
    for s in saved:
        model = RestartMLP(s["state"]).eval()
        env = data[s["restart"]]

        def domain(name: str, env=env, model=model) -> Domain:
            return _features(model.featurizer, env[name].inputs()), env[name].labels.long()

        out.append(
            (
                s["method"],
                model.classifier,
                [domain("env0"), domain("env1")],
                {"test": domain("test")},
            )
        )
    return out


@dataclass
class Curve:
    """Target accuracy after the attack at each delta, over the models of one label."""

    accuracies: list[list[float]]  # one row per model (restart), one column per delta
    head_norms: list[float]

    def summary(self) -> dict:
        return {
            "mean": np.mean(self.accuracies, 0).tolist(),
            "std": np.std(self.accuracies, 0).tolist(),
            "runs": len(self.accuracies),
            "head_norm": float(np.mean(self.head_norms)),
        }


def find_models(run_dir: Path, data_dir: str | None, max_samples: int | None):
    """The models of a DomainBed-style run dir (model.pt) or of a reproduction dir."""
    if RunDirectory(run_dir).model.exists() or run_dir.suffix == ".pt":
        return domainbed_models(run_dir, data_dir, max_samples)
    if is_reproduction(run_dir) or is_reproduction(run_dir.parent):
        return reproduction_models(run_dir, data_dir)
    raise RunDirError(
        f"{run_dir} is neither a run dir with model.pt nor a `dgalign reproduce cmnist` dir"
    )


def transferability(
    run_dir: Path,
    deltas: list[float],
    rounds: int = 5,
    steps: int = 20,
    step_frac: float = 0.2,
    max_samples: int | None = 5000,
    data_dir: str | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> dict[str, Curve]:
    """Attack every model found in `run_dir` for every delta: {"label (target)": Curve}.
    `report` gets one line per model and target."""
    if not deltas or any(d < 0 for d in deltas):
        raise ConfigError(f"deltas must be a non-empty list of radii >= 0, got {deltas}")
    if rounds < 1 or steps < 1 or step_frac <= 0:
        raise ConfigError("rounds and steps must be at least 1 and step_frac positive")
    curves: dict[str, Curve] = {}
    for label, head, sources, targets in find_models(run_dir, data_dir, max_samples):
        norm = float(flatten([p.detach() for p in head.parameters()]).norm())
        for tname, target in targets.items():
            key = f"{label} ({tname})"
            curve = curves.setdefault(key, Curve([], []))
            accs = [attack_head(head, sources, target, d, rounds, steps, step_frac) for d in deltas]
            curve.accuracies.append([a.target_acc for a in accs])
            curve.head_norms.append(norm)
            report(
                f"{key}, ||theta*|| = {norm:.3g}: "
                + ", ".join(f"delta {a.delta:g}: {a.target_acc:.3f}" for a in accs)
            )
    return curves


def analyze_transferability(
    run_dir: str | Path,
    deltas: list[float],
    rounds: int = 5,
    steps: int = 20,
    step_frac: float = 0.2,
    max_samples: int = 5000,
    data_dir: str | None = None,
    out: str | Path | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Curve], Path]:
    """`transferability` of `run_dir` (`max_samples` 0: every row), written by
    `write_transferability` into `out` (default: the run directory); returns the curves and
    the PNG's path."""
    if max_samples < 0:
        raise ConfigError(f"--max-samples must be 0 (all) or positive, got {max_samples}")
    run_dir = Path(run_dir)
    curves = transferability(
        run_dir, deltas, rounds, steps, step_frac, max_samples or None, data_dir, report
    )
    folder = Path(out) if out else (run_dir if run_dir.is_dir() else run_dir.parent)
    folder.mkdir(parents=True, exist_ok=True)
    return curves, write_transferability(curves, deltas, folder, str(run_dir))


def write_transferability(curves: dict[str, Curve], deltas: list[float], out: Path, title: str):
    """transferability.json (mean, std over models per delta) and transferability.png in
    `out`; returns the PNG's path."""
    summary = {k: c.summary() for k, c in curves.items()}
    atomic_write_json(out / "transferability.json", {"deltas": list(deltas), **summary})
    _plot(summary, list(deltas), out / "transferability.png", title)
    return out / "transferability.png"


def _plot(summary: dict, deltas: list[float], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, s in summary.items():
        ax.errorbar(
            deltas,
            np.array(s["mean"]) * 100,
            yerr=np.array(s["std"]) * 100,
            marker="o",
            ms=3,
            capsize=2,
            label=f"{key}, ||theta*|| = {s['head_norm']:.2g}",
        )
    ax.set_xlabel("delta (radius of the head ball)")
    ax.set_ylabel("target accuracy after attack (%)")
    ax.set_title(f"Transferability attack: {title}", fontsize=8)
    ax.legend(fontsize=7)
    save_png(fig, path)
    plt.close(fig)
