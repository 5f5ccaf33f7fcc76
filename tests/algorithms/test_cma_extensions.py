"""CMA's K-FAC Hessian mode and third-order term (`hessian_mode="kfac"`, `order=3`): values
against explicit tensors in float64, gradients to the featurizer, training, bad values."""

from __future__ import annotations

import math

import pytest
import torch
from tests.curvature.helpers import make_domains, ref_logits
from torch.func import hessian, jacfwd

from dgalign.curvature.kfac import kfac_hessian, kfac_penalty
from dgalign.errors import ConfigError


@pytest.mark.parametrize("c", [1, 3])
def test_kfac_mode_is_the_penalty_of_explicit_kronecker_products(c):
    w, zs, _ = make_domains(c, 3, (5, 7, 4), seed=4, shift=0.5)
    logits = [ref_logits(w, z) for z in zs]
    hs = [kfac_hessian(z, lg) for z, lg in zip(zs, logits, strict=True)]
    mean = sum(hs) / 3
    want = sum((h - mean).square().sum() for h in hs) / 3
    torch.testing.assert_close(kfac_penalty(zs, logits), want)


def test_kfac_mode_is_the_algorithms_hessian_term(tiny, tiny_data):
    """The algorithm's hess_penalty in kfac mode: the K-FAC penalty / C^2 (authors' scale)."""
    algorithm = tiny("CMA", hessian_mode="kfac", penalty_anneal_iters=0)
    batches = tiny_data()
    terms = algorithm.objective_terms(batches)
    zs = [algorithm.featurizer(x) for x, _ in batches]
    logits = [algorithm.classifier(z) for z in zs]
    c = logits[0].shape[1]
    torch.testing.assert_close(terms["hess_penalty"], kfac_penalty(zs, logits) / c**2)


def test_order_three_adds_the_third_derivative_alignment(tiny, tiny_data):
    algorithm = tiny("CMA", order=3, gamma=2.0, penalty_anneal_iters=0)
    batches = tiny_data()
    terms = algorithm.objective_terms(batches)
    assert set(terms) == {"nll", "grad_penalty", "hess_penalty", "third_penalty"}
    w = torch.cat([algorithm.classifier.weight, algorithm.classifier.bias[:, None]], 1).detach()
    tensors = []
    for x, y in batches:
        z = algorithm.featurizer(x).detach()

        def loss(flat, z=z, y=y):
            return torch.nn.functional.cross_entropy(ref_logits(flat.view_as(w), z), y)

        tensors.append(jacfwd(hessian(loss))(w.reshape(-1)))
    mean = sum(tensors) / len(tensors)
    want = sum((t - mean).square().sum() for t in tensors) / len(tensors)
    torch.testing.assert_close(terms["third_penalty"], want)
    grads = torch.autograd.grad(terms["third_penalty"], list(algorithm.featurizer.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)
    x, y = batches[0]
    same = algorithm.objective_terms([(x, y), (x, y), (x, y)])
    assert abs(same["third_penalty"].item()) < 1e-14


@pytest.mark.parametrize("overrides", [{"hessian_mode": "kfac"}, {"order": 3}])
def test_kfac_and_order_three_train(tiny, tiny_data, overrides):
    algorithm = tiny("CMA", penalty_anneal_iters=0, **overrides)
    logs = [algorithm.update(tiny_data()) for _ in range(3)]
    assert all(math.isfinite(v) for log in logs for v in log.values())
    assert ("third_penalty" in logs[-1]) == ("order" in overrides)


def test_other_orders_are_refused(tiny):
    with pytest.raises(ConfigError, match="order must be one of"):
        tiny("CMA", order=4)
