"""Third-derivative tensors of the head loss and their Gram form, against autograd in float64
(third derivatives by torch.func.jacfwd of the autograd Hessian on tiny heads)."""

from __future__ import annotations

import pytest
import torch
from tests.curvature.helpers import make_domains, ref_logits, ref_loss
from torch.func import hessian, jacfwd

from dgalign.curvature.third_order import (
    head_third_derivative,
    head_third_inner,
    third_order_gram,
    third_order_kernel,
    third_order_penalty,
)

TOL = {"rtol": 1e-9, "atol": 1e-12}


def autograd_third(w: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d^3 (mean loss) / d(vec W)^3 by forward-mode differentiation of the Hessian."""

    def f(flat: torch.Tensor) -> torch.Tensor:
        return ref_loss(flat.view_as(w), z, y)

    return jacfwd(hessian(f))(w.reshape(-1))


@pytest.mark.parametrize("c", (1, 2, 3))
@pytest.mark.parametrize("d", (1, 3))
def test_full_tensor_matches_autograd(c, d):
    w, (z,), (y,) = make_domains(c, d, (5,), seed=c + 7 * d)
    expected = autograd_third(w, z, y)
    torch.testing.assert_close(head_third_derivative(z, ref_logits(w, z)), expected, **TOL)


@pytest.mark.parametrize("c", (1, 2, 4))
def test_inner_products_gram_and_penalty_match_autograd_tensors(c):
    d = 2
    w, zs, ys = make_domains(c, d, (4, 6, 3), seed=3 + c, shift=0.5)
    tensors = [autograd_third(w, z, y) for z, y in zip(zs, ys, strict=True)]
    logits = [ref_logits(w, z) for z in zs]
    expected = torch.stack([torch.stack([(a * b).sum() for b in tensors]) for a in tensors])
    torch.testing.assert_close(head_third_inner(zs[0], logits[0], zs[1], logits[1]), expected[0, 1])
    torch.testing.assert_close(third_order_gram(zs, logits), expected, **TOL)
    mean = sum(tensors) / len(tensors)
    penalty = sum((t - mean).square().sum() for t in tensors) / len(tensors)
    torch.testing.assert_close(third_order_penalty(zs, logits), penalty, **TOL)


def test_kernel_of_one_hot_probabilities_is_zero_and_symmetric():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1)
    q = torch.softmax(torch.randn(3, 4, generator=g, dtype=torch.float64), 1)
    torch.testing.assert_close(third_order_kernel(p, q), third_order_kernel(q, p).T, **TOL)
    one_hot = torch.eye(4, dtype=torch.float64)
    assert third_order_kernel(one_hot, q).abs().max() < 1e-14


def test_penalty_gradient_matches_autograd_of_explicit_tensors():
    """The penalty keeps the graph: its gradient w.r.t. features and head matches the gradient
    of the explicitly built tensors' penalty."""
    c, d = 3, 2
    w, zs, _ = make_domains(c, d, (3, 4), seed=11)
    zs = [z.requires_grad_() for z in zs]
    w.requires_grad_()

    def explicit() -> torch.Tensor:
        ts = [head_third_derivative(z, ref_logits(w, z)) for z in zs]
        mean = sum(ts) / len(ts)
        return sum((t - mean).square().sum() for t in ts) / len(ts)

    gram = third_order_penalty(zs, [ref_logits(w, z) for z in zs])
    got = torch.autograd.grad(gram, [w, *zs])
    want = torch.autograd.grad(explicit(), [w, *zs])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_bad_sets_are_refused():
    w, zs, _ = make_domains(2, 3, (3, 3), seed=0)
    logits = [ref_logits(w, z) for z in zs]
    with pytest.raises(ValueError, match="same positive number"):
        third_order_gram(zs, logits[:1])
    with pytest.raises(ValueError, match="feature widths"):
        third_order_gram([zs[0], zs[1][:, :2]], logits)
