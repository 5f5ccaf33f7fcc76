"""dgalign.losses inside a PyTorch Lightning module (`pip install "dgalign[lightning]"`): the
same synthetic task as plain_loop.py, one batch per domain per step.

    python examples/lightning_module.py --penalty hgp --steps 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dgalign import losses

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import make_domains


class AlignedClassifier(L.LightningModule):
    """Featurizer + linear head trained on the pooled cross-entropy plus a dgalign penalty
    over the per-domain features (a `dgalign.losses` module taking features, labels, head)."""

    def __init__(self, penalty: nn.Module | None, lr: float = 1e-2) -> None:
        super().__init__()
        self.featurizer = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 2)
        self.penalty = penalty
        self.lr = lr

    def training_step(self, batch, batch_idx):
        # `batch`: one (x, y) per domain (CombinedLoader of one loader per domain)
        zs = [self.featurizer(x) for x, _ in batch]
        ys = [y for _, y in batch]
        loss = F.cross_entropy(self.head(torch.cat(zs)), torch.cat(ys))
        if self.penalty is not None:
            value, terms = self.penalty(zs, ys, self.head)
            self.log_dict({f"penalty/{k}": v.detach() for k, v in terms.items()})
            loss = loss + value
        self.log("train_loss", loss.detach())
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def domain_loaders(domains, batch_size: int = 64) -> list[DataLoader]:
    return [DataLoader(TensorDataset(x, y), batch_size, shuffle=True) for x, y in domains]


def fit(penalty_name: str = "hgp", steps: int = 50, seed: int = 0) -> float:
    """Train for `steps` steps; return the test-domain accuracy."""
    from lightning.pytorch.utilities import CombinedLoader

    L.seed_everything(seed, verbose=False)
    *train_domains, (x_test, y_test) = make_domains(seed=seed)
    kinds = {"hgp": "hgp", "hutchinson": "hutchinson", "diag": "diag"}
    penalty = losses.HessianAlignment(kinds[penalty_name]) if penalty_name in kinds else None
    model = AlignedClassifier(penalty)
    loader = CombinedLoader(domain_loaders(train_domains), mode="max_size_cycle")
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    with torch.no_grad():
        logits = model.head(model.featurizer(x_test))
    return (logits.argmax(1) == y_test).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--penalty", choices=["none", "hgp", "hutchinson", "diag"], default="hgp")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    print(f"test_acc {fit(args.penalty, args.steps):.4f}")


if __name__ == "__main__":
    main()
