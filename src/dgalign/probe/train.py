"""The linear-probing protocol: a linear head on frozen features, trained by a registered
algorithm, selected by worst-group validation accuracy.

Protocol (defaults follow the CMA authors' linear-probing code; every choice is an option):
    head        one nn.Linear(D, C) with bias (softmax cross-entropy, C >= 2 logits), on the
                features after the optional PCA / ISR-Mean projection (`projection.py`);
    algorithm   a registered dgalign algorithm whose featurizer is replaced by the identity,
                so its own penalty code runs unchanged on the feature vectors; every
                algorithm's optimizer becomes plain SGD (lr 1e-3, no momentum, no weight decay),
                including the optimizers re-created when an annealed penalty switches on;
    batches     every epoch, each training domain's rows are shuffled and cut into
                ceil(N / 500) chunks, and step s trains on chunk s of every domain: about 500
                rows a step with each domain in proportion to its size (a plain shuffle would
                give the same proportions on average, but could leave a small domain out of a
                step, which per-domain penalties cannot take); a domain with fewer rows than
                two a step is cycled;
    domains     the dataset's environments (`environment`: the values of the spurious
                attribute, the protocol's, except for Colored MNIST), the attribute values
                (`attribute`) or the groups (label, attribute) (`group`); ISR-Mean always uses
                the dataset's environments;
    epochs      300 (Waterbirds), 50 (CelebA), 3 (MultiNLI), 50 (raw-pixel Colored MNIST: 80
                steps an epoch, 4,000 steps);
    selection   after every epoch, accuracy of every group on val and test; the epoch with the
                best worst-group validation accuracy (the first on ties) gives the reported
                worst-group and average test accuracy (average = plain accuracy over the split).
Per-domain gradients and curvature terms come from each domain's own minibatch (the registered
algorithms take one minibatch per domain), never from the pooled batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams, override
from dgalign.errors import ConfigError, TrainingDiverged
from dgalign.probe.features import FeatureSet
from dgalign.probe.projection import ProjectionConfig, fit_projection
from dgalign.utils.runtime import resolve_device

EPOCHS = {"waterbirds": 300, "celeba": 50, "multinli": 3, "cmnist": 50}
DOMAINS = ("environment", "attribute", "group")
BASE_ALGORITHMS = (
    "ERM",
    "GroupDRO",
    "IRM",
    "VREx",
    "Fishr",
    "CORAL",
    "HGP",
    "Hutchinson",
    "HessianDiag",
    "CMA",
)
#: named variants: a registered algorithm with fixed hyper-parameters
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "HessianDiag-expected": ("HessianDiag", {"expected_probes": 300}),
    "CMA-full": ("CMA", {"hessian_mode": "full"}),
    "CMA-gram": ("CMA", {"hessian_mode": "gram"}),
    "CMA-diag": ("CMA", {"hessian_mode": "diag"}),
    "CMA-kfac": ("CMA", {"hessian_mode": "kfac"}),
    "CMA-order3": ("CMA", {"order": 3}),
}
ALGORITHMS = BASE_ALGORITHMS + tuple(VARIANTS)
EVAL_CHUNK = 8192


@dataclass(frozen=True)
class ProbeConfig:
    """One probing configuration (everything but the seed)."""

    algorithm: str
    hparams: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int = 500
    lr: float = 1e-3
    domains: str = "environment"
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    device: str = "cpu"


class FrozenFeatures(nn.Identity):
    """The identity featurizer: the inputs are the features (`n_outputs` wide)."""

    def __init__(self, n_outputs: int) -> None:
        super().__init__()
        self.n_outputs = n_outputs


def _sgd(self: algorithms.Algorithm) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        self.network.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
    )


def resolve(name: str, overrides: dict[str, Any], lr: float) -> tuple[str, dict[str, Any]]:
    """(registered algorithm, hyper-parameters): defaults, the protocol's optimizer, the
    variant's fixed values, then the user's `overrides`."""
    if name not in ALGORITHMS:
        raise ConfigError(
            f"unknown probing algorithm {name!r}; choose from {', '.join(ALGORITHMS)}"
        )
    base, fixed = VARIANTS.get(name, (name, {}))
    hparams = default_hparams(base, "probe")
    hparams.update(lr=float(lr), weight_decay=0.0, nonlinear_classifier=False)
    missing = sorted(set(fixed) - set(hparams))
    if missing:
        raise ConfigError(f"{name} needs {base} hyper-parameters {', '.join(missing)}")
    hparams.update(fixed)
    return base, override(base, "probe", hparams, overrides)


def build_algorithm(
    base: str, hparams: dict[str, Any], dim: int, num_classes: int, num_domains: int
) -> algorithms.Algorithm:
    """`base` with SGD and an identity featurizer over `dim` features (module docstring)."""
    cls = algorithms.get(base)
    probe_cls = type(cls.__name__, (cls,), {"make_optimizer": _sgd, "__module__": __name__})
    built = dict(hparams, backbone="mlp", mlp_width=dim, mlp_depth=2, mlp_dropout=0.0)
    algorithm = probe_cls((dim,), num_classes, num_domains, built)
    algorithm.featurizer = FrozenFeatures(dim)
    algorithm.network = nn.Sequential(algorithm.featurizer, algorithm.classifier)
    algorithm.optimizer = algorithm.make_optimizer()
    return algorithm


def epoch_batches(
    domain_of_row: np.ndarray, num_domains: int, batch_size: int, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    """One epoch of stratified batches: step s holds chunk s of every domain's shuffled rows."""
    steps = max(1, math.ceil(len(domain_of_row) / batch_size))
    chunks = []
    for e in range(num_domains):
        rows = rng.permutation(np.flatnonzero(domain_of_row == e))
        if len(rows) == 0:
            raise ConfigError(f"training domain {e} has no rows; choose other --domains")
        if len(rows) < 2 * steps:
            rows = np.resize(rows, 2 * steps)
        chunks.append(np.array_split(rows, steps))
    return [[chunks[e][s] for e in range(num_domains)] for s in range(steps)]


def group_accuracies(
    pred: np.ndarray, label: np.ndarray, group: np.ndarray, num_groups: int
) -> dict[str, Any]:
    """Accuracy of every group present, the worst of them, and the plain average."""
    correct = pred == label
    groups = {
        str(g): float(correct[group == g].mean()) for g in range(num_groups) if (group == g).any()
    }
    return {"worst": min(groups.values()), "avg": float(correct.mean()), "groups": groups}


def _predict(algorithm: algorithms.Algorithm, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = [
            algorithm.predict(x[a : a + EVAL_CHUNK]).argmax(1) for a in range(0, len(x), EVAL_CHUNK)
        ]
    return torch.cat(out).cpu().numpy()


def run_seed(fs: FeatureSet, config: ProbeConfig, seed: int) -> dict[str, Any]:
    """Train one head with `seed` (head init, batch order, probes) and select its epoch."""
    if config.domains not in DOMAINS:
        raise ConfigError(f"--domains must be one of {DOMAINS}, got {config.domains!r}")
    if config.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {config.batch_size}")
    dataset = fs.meta["dataset"]["name"]
    epochs = config.epochs if config.epochs is not None else EPOCHS.get(dataset, 50)
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    base, hparams = resolve(config.algorithm, config.hparams, config.lr)
    train, val, test = fs.rows("train"), fs.rows("val"), fs.rows("test")
    for split, rows in (("train", train), ("val", val), ("test", test)):
        if len(rows) == 0:
            raise ConfigError(f"the features hold no {split} rows")
    num_groups = fs.num_classes * fs.num_attributes
    domain, num_domains = {
        "environment": (fs.environment, fs.num_environments),
        "attribute": (fs.attribute, fs.num_attributes),
        "group": (fs.group, num_groups),
    }[config.domains]
    present = np.unique(domain[train])
    domain = np.searchsorted(present, domain)  # training domains numbered 0..K-1
    num_domains = len(present)
    envs, env_of_row = np.unique(fs.environment[train], return_inverse=True)
    projection = fit_projection(
        config.projection, fs.features[train], fs.label[train], env_of_row, len(envs)
    )
    device = resolve_device(config.device)
    x = torch.from_numpy(projection.apply(fs.features)).to(device)
    y = torch.from_numpy(fs.label).to(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    algorithm = build_algorithm(base, hparams, x.shape[1], fs.num_classes, num_domains).to(device)
    history, start = [], time.time()
    for epoch in range(1, epochs + 1):
        algorithm.train()
        losses = []
        for batch in epoch_batches(domain[train], num_domains, config.batch_size, rng):
            rows = [torch.from_numpy(train[idx]).to(device) for idx in batch]
            values = algorithm.update([(x[r], y[r]) for r in rows])
            if not all(math.isfinite(v) for v in values.values()):
                raise TrainingDiverged(
                    f"{config.algorithm} diverged in epoch {epoch} (seed {seed}): {values}; "
                    "lower the penalty weights or the learning rate"
                )
            losses.append(values["loss"])
        algorithm.eval()
        entry: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses))}
        for split, rows in (("val", val), ("test", test)):
            pred = _predict(algorithm, x[torch.from_numpy(rows).to(device)])
            entry[split] = group_accuracies(pred, fs.label[rows], fs.group[rows], num_groups)
        history.append(entry)
    best = max(history, key=lambda h: (h["val"]["worst"], -h["epoch"]))
    return {
        "seed": seed,
        "algorithm": config.algorithm,
        "hparams": hparams,
        "epochs": epochs,
        "selected_epoch": best["epoch"],
        "val_worst": best["val"]["worst"],
        "val_avg": best["val"]["avg"],
        "test_worst": best["test"]["worst"],
        "test_avg": best["test"]["avg"],
        "test_groups": best["test"]["groups"],
        "last_test_worst": history[-1]["test"]["worst"],
        "last_test_avg": history[-1]["test"]["avg"],
        "seconds": time.time() - start,
        "history": history,
    }


def config_key(fs: FeatureSet, config: ProbeConfig) -> dict[str, Any]:
    """What makes two runs comparable (stored with each record; checked on resume)."""
    base, hparams = resolve(config.algorithm, config.hparams, config.lr)
    epochs = (
        config.epochs if config.epochs is not None else EPOCHS.get(fs.meta["dataset"]["name"], 50)
    )
    protocol = asdict(config)
    protocol.update(hparams=hparams, epochs=epochs, base=base)
    protocol.pop("device")
    return {
        "features": {"dataset": fs.meta["dataset"], "extractor": fs.meta["extractor"]},
        "protocol": protocol,
    }


def parse_seeds(text: str) -> list[int]:
    """`0,1,2`, `0-4` or a mix (`0-2,7`); ConfigError otherwise."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: use a list such as 0,1,2 or a range 0-4") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r}: give distinct non-negative integers")
    return seeds


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population std over seeds of the selected test and val accuracies (percent)."""
    out: dict[str, Any] = {"seeds": len(records)}
    for key in ("test_worst", "test_avg", "val_worst", "last_test_worst"):
        values = 100 * np.array([r[key] for r in records], dtype=np.float64)
        out[key] = (float(values.mean()), float(values.std()))
    out["selected_epoch"] = float(np.median([r["selected_epoch"] for r in records]))
    out["seconds"] = float(np.mean([r["seconds"] for r in records]))
    return out
