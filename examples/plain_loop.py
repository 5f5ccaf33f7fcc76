"""dgalign.losses in a plain PyTorch loop: a tiny synthetic task with three training domains
whose spurious feature flips in the test domain. Runs in seconds on a CPU:

    python examples/plain_loop.py --penalty hgp --steps 200
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from dgalign import losses


def make_domains(n: int = 256, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Domains with x = [invariant + noise, spurious, noise...]; the spurious coordinate
    agrees with the label with probability 0.9, 0.8, 0.7 (train) and 0.1 (test)."""
    gen = torch.Generator().manual_seed(seed)
    domains = []
    for agree in (0.9, 0.8, 0.7, 0.1):
        y = torch.randint(0, 2, (n,), generator=gen)
        sign = 2.0 * y - 1.0
        keep = torch.rand(n, generator=gen) < agree
        x = torch.randn(n, 6, generator=gen)
        x[:, 0] += 0.8 * sign
        x[:, 1] += 2.0 * torch.where(keep, sign, -sign)
        domains.append((x, y))
    return domains


PENALTIES = {
    "none": lambda: None,
    "hgp": lambda: losses.HessianAlignment("hgp"),
    "hutchinson": lambda: losses.HessianAlignment("hutchinson", n_probes=20),
    "diag": lambda: losses.HessianAlignment("diag"),
    "cma": lambda: losses.CMA(),
    "fishr": lambda: losses.Fishr(),
    "irm": lambda: losses.IRM(),
    "vrex": lambda: losses.VREx(),
    "coral": lambda: losses.CORAL(),
}


def train(penalty_name: str = "hgp", steps: int = 200, seed: int = 0) -> dict[str, float]:
    """Train featurizer + linear head on the three training domains; return the final
    training loss, the penalty's value and the test-domain accuracy."""
    torch.manual_seed(seed)
    *train_domains, (x_test, y_test) = make_domains(seed=seed)
    featurizer = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
    head = nn.Linear(8, 2)
    optimizer = torch.optim.Adam([*featurizer.parameters(), *head.parameters()], lr=1e-2)
    penalty_fn = PENALTIES[penalty_name]()
    log: dict[str, float] = {}
    for _ in range(steps):
        zs = [featurizer(x) for x, _ in train_domains]
        ys = [y for _, y in train_domains]
        loss = F.cross_entropy(head(torch.cat(zs)), torch.cat(ys))
        value = torch.zeros(())
        if isinstance(penalty_fn, losses.IRM | losses.VREx):
            value, _ = penalty_fn([head(z) for z in zs], ys)
        elif isinstance(penalty_fn, losses.CORAL):
            value, _ = penalty_fn(zs)
        elif penalty_fn is not None:
            value, _ = penalty_fn(zs, ys, head)
        optimizer.zero_grad()
        (loss + value).backward()
        optimizer.step()
        log = {"loss": loss.item(), "penalty": value.item()}
    with torch.no_grad():
        accuracy = (head(featurizer(x_test)).argmax(1) == y_test).float().mean().item()
    return {**log, "test_acc": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--penalty", choices=sorted(PENALTIES), default="hgp")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = train(args.penalty, args.steps, args.seed)
    print(", ".join(f"{k} {v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
