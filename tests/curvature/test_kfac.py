"""K-FAC head Hessian, its Gram form, penalty and approximation errors, in float64 against
explicit Kronecker products and autograd Hessians."""

from __future__ import annotations

import pytest
import torch
from tests.curvature.helpers import make_domains, ref_hessian, ref_logits

from dgalign.curvature.kfac import (
    kfac_factors,
    kfac_gram,
    kfac_hessian,
    kfac_hessian_error,
    kfac_penalty,
    kfac_penalty_error,
)

TOL = {"rtol": 1e-9, "atol": 1e-12}


@pytest.mark.parametrize("c", (1, 2, 5))
def test_factors_are_the_means_and_exact_for_constant_probabilities(c):
    d = 3
    w, (z,), _ = make_domains(c, d, (6,), seed=c)
    h = ref_hessian(w, z)
    a, b = kfac_factors(z, ref_logits(w, z))
    assert a.shape == (c, c) and b.shape == (d + 1, d + 1)
    zt = torch.cat([z, torch.ones(6, 1, dtype=z.dtype)], 1)
    torch.testing.assert_close(b, zt.T @ zt / 6, **TOL)
    # the traces over the feature index agree: sum_j H_(a,j),(b,j) = <A_ab> tr B only when S
    # is constant; with a head of zero weights p is the same for every sample:
    w0 = torch.zeros_like(w)
    torch.testing.assert_close(kfac_hessian(z, ref_logits(w0, z)), ref_hessian(w0, z), **TOL)
    assert kfac_hessian_error(z, ref_logits(w0, z)) < 1e-7
    assert (kfac_hessian(z, ref_logits(w, z)) - h).abs().max() > 1e-4  # not exact in general


@pytest.mark.parametrize("c", (1, 3))
def test_gram_penalty_and_errors_match_explicit_kronecker_products(c):
    d = 4
    w, zs, _ = make_domains(c, d, (5, 7, 4), seed=20 + c, shift=0.6)
    logits = [ref_logits(w, z) for z in zs]
    approx = [kfac_hessian(z, lg) for z, lg in zip(zs, logits, strict=True)]
    expected = torch.stack([torch.stack([(a * b).sum() for b in approx]) for a in approx])
    torch.testing.assert_close(kfac_gram(zs, logits), expected, **TOL)
    mean = sum(approx) / 3
    penalty = sum((h - mean).square().sum() for h in approx) / 3
    torch.testing.assert_close(kfac_penalty(zs, logits), penalty, **TOL)

    exact = [ref_hessian(w, z) for z in zs]
    rel = torch.linalg.norm(exact[0] - approx[0]) / torch.linalg.norm(exact[0])
    torch.testing.assert_close(kfac_hessian_error(zs[0], logits[0]), rel, **TOL)
    mean_exact = sum(exact) / 3
    exact_penalty = sum((h - mean_exact).square().sum() for h in exact) / 3
    rel_pen = (penalty - exact_penalty).abs() / exact_penalty
    torch.testing.assert_close(kfac_penalty_error(zs, logits), rel_pen, **TOL)


def test_penalty_gradient_matches_explicit_kronecker_penalty():
    w, zs, _ = make_domains(3, 2, (4, 5), seed=5)
    w.requires_grad_()
    zs = [z.requires_grad_() for z in zs]

    def explicit() -> torch.Tensor:
        hs = [kfac_hessian(z, ref_logits(w, z)) for z in zs]
        mean = sum(hs) / 2
        return sum((h - mean).square().sum() for h in hs) / 2

    got = torch.autograd.grad(kfac_penalty(zs, [ref_logits(w, z) for z in zs]), [w, *zs])
    want = torch.autograd.grad(explicit(), [w, *zs])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL)
