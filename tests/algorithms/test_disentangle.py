"""ADRMX: the domain-weighted supervised contrastive loss and the same-class remix."""

import math

import torch
import torch.nn.functional as F

from dgalign.algorithms.disentangle import supcon_lambda


def _reference(z, y, d, lam=0.5, t=0.07):
    z = F.normalize(z, dim=1)
    s = (z @ z.T / t).tolist()
    n, total, skipped = len(y), 0.0, 0
    for i in range(n):
        w = [lam if d[j] == d[i] else 1 - lam for j in range(n)]
        den = sum(w[j] * math.exp(s[i][j]) for j in range(n) if j != i) + 1e-5
        pos = [j for j in range(n) if j != i and y[j] == y[i]]
        if not pos:
            skipped += 1
            continue
        total += sum(math.log(w[j] * math.exp(s[i][j]) / den + 1e-5) for j in pos) / len(pos)
    return -total / (n - skipped + 1)


def test_supcon_lambda_matches_its_definition():
    """Mutation caught: weighting positives of the anchor's own domain by 1 - lambda."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y, d = [0, 1, 0, 2, 1, 0, 1, 0, 3], [0, 0, 0, 0, 1, 1, 1, 1, 1]
    got = supcon_lambda(z, torch.tensor(y), torch.tensor(d), lam=0.8)
    torch.testing.assert_close(got.item(), _reference(z, y, d, lam=0.8))


def test_remix_pairs_come_from_one_class(tiny):
    """Each class has two samples: the remix is the mean of CE(h1(z_inv_i + z_d_j), y_i) over
    classes for one of the orders (i, j). Mutation caught: DomainBed's slip of indexing the
    whole batch with the class's positions."""
    algorithm = tiny("ADRMX", num_classes=2)
    g = torch.Generator().manual_seed(2)
    z_inv, z_d = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(2))
    y = torch.tensor([1, 1, 0, 0])  # positions 0, 1 hold class 1: a batch-wide slip mixes classes
    h1 = algorithm.classifier_label_1

    def ce(i, j):
        return F.cross_entropy(h1((z_inv[i] + z_d[j])[None]), y[i][None]).item()

    options = {(a + b) / 2 for a in (ce(2, 3), ce(3, 2)) for b in (ce(0, 1), ce(1, 0))}
    for seed in range(4):
        torch.manual_seed(seed)
        got = algorithm.remix_loss(z_inv, z_d, y).item()
        assert min(abs(got - o) for o in options) < 1e-12
