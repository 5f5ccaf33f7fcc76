"""IB-ERM / IB-IRM penalties and the CAD / CondCAD bottlenecks against brute-force formulas."""

import math

import numpy as np
import torch

from dgalign.algorithms.bottleneck import cad_bottleneck, ib_penalty
from dgalign.curvature.risk import irm_penalty


def test_ib_penalty_is_the_mean_unbiased_feature_variance():
    """Mutation caught: the biased variance (ddof 0) or the variance over feature dims."""
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(6, 3, generator=g, dtype=torch.float64) * (e + 1) for e in range(2)]
    expected = np.mean([np.var(z.numpy(), axis=0, ddof=1).mean() for z in zs])
    torch.testing.assert_close(ib_penalty(zs).item(), float(expected))


def test_ib_erm_weight_is_zero_before_annealing_and_lambda_after(tiny, tiny_data):
    """Mutation caught: weight 1 (IRM's convention) before the switch."""
    data = tiny_data()
    before = tiny("IB_ERM", ib_lambda=7.0, ib_penalty_anneal_iters=5).update(data)
    assert before["loss"] == before["nll"]
    after = tiny("IB_ERM", ib_lambda=7.0, ib_penalty_anneal_iters=0).update(data)
    torch.testing.assert_close(after["loss"], after["nll"] + 7.0 * after["IB_penalty"])


def test_ib_irm_adds_the_irm_penalty(tiny, tiny_data):
    """Mutation caught: dropping the IRM term (IB-IRM = IB-ERM)."""
    data = tiny_data()
    algorithm = tiny("IB_IRM", ib_penalty_anneal_iters=5, irm_penalty_anneal_iters=5)
    with torch.no_grad():
        logits = [algorithm.predict(x) for x, _ in data]
    irm = irm_penalty(torch.cat(logits), torch.cat([y for _, y in data]), [len(y) for _, y in data])
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["IRM_penalty"]), irm.item())
    torch.testing.assert_close(logs["loss"], logs["nll"] + 1.0 * logs["IRM_penalty"])


def _reference(z, y, d, t, conditional):
    """The flipped losses by loops: -(t / 0.07) log(mass of the softmax on other domains)."""
    n, total, count = len(z), 0.0, 0
    s = (z @ z.T / t).tolist()
    for i in range(n):
        pool = [j for j in range(n) if j != i and (not conditional or y[j] == y[i])]
        if not any(y[j] == y[i] for j in range(n) if j != i):
            continue
        other = [j for j in pool if d[j] != d[i]]
        if not other:
            continue
        den = sum(math.exp(s[i][j]) for j in pool)
        num = sum(math.exp(s[i][j]) for j in other)
        total += -(t / 0.07) * math.log(num / den)
        count += 1
    return total / count


def test_cad_and_condcad_match_their_definitions():
    """Mutation caught: contrasting same-domain samples (CAD), or the full softmax in CondCAD."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 2, 0, 1, 2, 2, 0])
    d = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    for conditional in (False, True):
        got = cad_bottleneck(z, y, d, 0.1, conditional)
        torch.testing.assert_close(
            got.item(), _reference(z, y.tolist(), d.tolist(), 0.1, conditional)
        )


def test_cad_is_smallest_when_features_ignore_the_domain():
    """Domain-free features (the same two points in both domains) beat domain-coded ones."""
    y = torch.tensor([0, 1, 0, 1])
    d = torch.tensor([0, 0, 1, 1])
    free = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    coded = free + torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0], [3.0, 3.0]]).double()
    assert cad_bottleneck(free, y, d, 0.5, False) < cad_bottleneck(coded, y, d, 0.5, False)
