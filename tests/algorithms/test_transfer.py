"""TRM's transfer risk and domain weights, the Neumann inverse-Hessian product, Transfer's
projected adversarial head."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dgalign.algorithms.transfer import neumann_inverse_hvp, project_to_ball


def test_neumann_series_matches_the_explicit_hessian():
    """Mutation caught: leaving out the k = 0 term v, or subtracting H v once too often."""
    torch.manual_seed(0)
    head = nn.Linear(3, 2, bias=False).double()
    z, y = 0.3 * torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    w0 = head.weight.detach().clone()

    def loss_of(w):
        return F.cross_entropy(z @ w.reshape(2, 3).T, y)

    hessian = torch.autograd.functional.hessian(loss_of, w0.reshape(-1))
    assert torch.linalg.eigvalsh(hessian).max() < 1  # the series converges
    v = 0.1 * torch.randn(6, dtype=torch.float64)  # stays below the divergence guard
    term, expected = v.clone(), v.clone()
    for _ in range(10):
        term = term - hessian @ term
        expected = expected + term
    torch.testing.assert_close(neumann_inverse_hvp(v, head, z, y), expected)


def test_trm_transfer_risk_and_domain_weights(tiny, tiny_data):
    """With cos_lambda 0 the transfer risk is (1/E) sum_Q sum_{i != Q} alpha_Qi CE_i(w_Q) with
    alpha = 1/(E-1), and alpha_Qi grows by exp(eta alpha_Qi CE_i(w_Q)). Mutation caught:
    weighting by CE_Q (the head's own domain) instead of CE_i."""
    data = tiny_data(num_domains=3)
    algorithm = tiny("TRM", num_domains=3, iters=0, cos_lambda=0.0, groupdro_eta=0.1)
    featurizer = copy.deepcopy(algorithm.featurizer)
    logs = algorithm.update(data)
    with torch.no_grad():
        zs = [featurizer(x) for x, _ in data]
        ce = [
            [F.cross_entropy(h(zs[i]), data[i][1]).item() for i in range(3)]
            for h in algorithm.heads
        ]
    expected = sum(ce[q][i] / 2 for q in range(3) for i in range(3) if i != q) / 3
    torch.testing.assert_close(float(logs["trm_loss"]), expected)
    for q in range(3):
        for i in range(3):
            want = 0.0 if i == q else 0.5 * torch.exp(torch.tensor(0.1 * 0.5 * ce[q][i])).item()
            torch.testing.assert_close(algorithm.alpha[q, i].item(), want)


def test_projection_onto_the_ball():
    torch.manual_seed(0)
    center, far = nn.Linear(3, 2), nn.Linear(3, 2)
    before = project_to_ball(far, center, 0.5)
    dist = torch.sqrt(
        sum(
            ((a - c) ** 2).sum() for a, c in zip(far.parameters(), center.parameters(), strict=True)
        )
    )
    assert before > 0.5 and abs(dist.item() - 0.5) < 1e-6
    near = copy.deepcopy(center)
    assert project_to_ball(near, center, 0.5) == 0.0


def test_transfer_adversary_stays_within_delta_of_the_head(tiny, tiny_data):
    """Mutation caught: ascent steps without the projection (the adversary drifts away)."""
    algorithm = tiny("Transfer", delta=0.05, lr_d=10.0, d_steps_per_g=5)
    logs = algorithm.update(tiny_data())
    pairs = zip(
        algorithm.adv_classifier.parameters(), algorithm.classifier.parameters(), strict=True
    )
    dist = torch.sqrt(sum(((a - c) ** 2).sum() for a, c in pairs))
    assert 0.049 < dist.item() <= 0.05 + 1e-9
    assert logs["gap"] >= 0.0
