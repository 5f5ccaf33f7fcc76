"""L2A-OT: the Sinkhorn cost against exact optimal transport, and a generator step that moves
its novel domains away from the sources."""

import itertools

import pytest
import torch

from dgalign.algorithms.novel_domains import sinkhorn_cost


def _exact_ot(a, b):
    """Uniform measures of equal size: OT = the best assignment's mean cost (brute force)."""
    cost = torch.cdist(a, b).pow(2)
    n = len(a)
    return min(sum(cost[i, p[i]] for i in range(n)) / n for p in itertools.permutations(range(n)))


def test_sinkhorn_approaches_exact_ot():
    """Mutation caught: the plan's entropy term in the cost, or the transposed plan."""
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        a = torch.randn(5, 3, generator=g, dtype=torch.float64)
        b = torch.randn(5, 3, generator=g, dtype=torch.float64) + 1.0
        exact = _exact_ot(a, b)
        approx = sinkhorn_cost(a, b, eps=0.005, steps=500)
        assert abs(approx - exact) < 0.01 * exact  # eps small: near the exact plan's cost
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    assert sinkhorn_cost(x, x, eps=0.005, steps=500) < 0.05 * sinkhorn_cost(x, x + 2, eps=0.005)


def test_generator_step_moves_novel_domains_away(tiny, tiny_data):
    """With only the OT term, one generator step raises the novelty of the generated domains.
    Mutation caught: minimising the OT distance (the sign of the novelty term)."""
    data = tiny_data(n=12)
    algorithm = tiny("L2AOT", l2aot_lambda_cycle=0.0, l2aot_lambda_cls=0.0, l2aot_lr_g=1e-2)

    def novelty():
        with torch.no_grad():
            sources = [algorithm._features(x) for x, _ in data]
            novel = [algorithm._features(g) for g in algorithm.generate(data)]
            return algorithm.novelty(sources, novel).item()

    before = novelty()
    algorithm.optimizer = torch.optim.SGD(algorithm.network.parameters(), lr=0.0)  # freeze f, h
    logs = algorithm.update(data)
    assert logs["ot_novelty"] == pytest.approx(before, rel=1e-6)
    assert novelty() > before
