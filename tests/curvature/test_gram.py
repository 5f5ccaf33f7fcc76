"""Gram-form Hessian inner products, norms and distances against explicit autograd Hessians."""

from __future__ import annotations

import pytest
import torch
from tests.curvature.helpers import CS, DS, make_case, ref_hessian, ref_logits

from dgalign.curvature import (
    head_hessian,
    head_hessian_distance,
    head_hessian_inner,
    head_hessian_offdiag_sq_norm,
    head_hessian_offdiag_sq_norm_of_mean,
    head_hessian_sq_norm,
)
from dgalign.curvature.gram import FULL_MAX_ELEMENTS, _choose

TOL = {"rtol": 1e-9, "atol": 1e-12}


def make_set(c: int, d: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random head W [C, d+1] (random bias column) and features z [n, d]; float64."""
    return make_case(c, d, n, seed)[:2]


def offdiag_sq(h):
    return (h - torch.diag_embed(h.diagonal())).square().sum()


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("d", DS)
def test_inner_norms_distance_offdiag_match_explicit_hessians(c, d):
    (w1, z1), (w2, z2) = make_set(c, d, 9, seed=c + 10 * d), make_set(c, d, 6, seed=99 + c)
    l1, l2 = ref_logits(w1, z1), ref_logits(w2, z2)
    h1, h2 = ref_hessian(w1, z1), ref_hessian(w2, z2)
    torch.testing.assert_close(head_hessian_inner(z1, l1, z2, l2), (h1 * h2).sum(), **TOL)
    torch.testing.assert_close(head_hessian_inner(z2, l2, z1, l1), (h1 * h2).sum(), **TOL)
    for method in ("full", "gram", "auto"):
        sq = head_hessian_sq_norm(z1, l1, method=method)
        torch.testing.assert_close(sq, h1.square().sum(), **TOL)
        dist = head_hessian_distance(z1, l1, z2, l2, method=method)
        torch.testing.assert_close(dist, torch.linalg.norm(h1 - h2), **TOL)
        off = head_hessian_offdiag_sq_norm(z1, l1, method=method)
        torch.testing.assert_close(off, offdiag_sq(h1), **TOL)


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("method", ("full", "gram"))
def test_offdiag_of_mean_over_sets(c, method):
    d = 5
    sets = [make_set(c, d, n, seed=s) for n, s in ((7, 1), (4, 2), (10, 3))]
    zs = [z for _, z in sets]
    logits = [ref_logits(w, z) for w, z in sets]
    h_mean = sum(ref_hessian(w, z) for w, z in sets) / 3
    got = head_hessian_offdiag_sq_norm_of_mean(zs, logits, method=method)
    torch.testing.assert_close(got, offdiag_sq(h_mean), **TOL)


@pytest.mark.parametrize("c", (1, 3))
def test_chunk_sizes_agree(c):
    (w1, z1), (w2, z2) = make_set(c, 4, 13, seed=5), make_set(c, 4, 8, seed=6)
    l1, l2 = ref_logits(w1, z1), ref_logits(w2, z2)
    inner = head_hessian_inner(z1, l1, z2, l2)
    sq = head_hessian_sq_norm(z1, l1, method="gram")
    dist = head_hessian_distance(z1, l1, z2, l2, method="gram")
    for chunk in (1, 2, 5, 12, 13, 1000):
        torch.testing.assert_close(head_hessian_inner(z1, l1, z2, l2, chunk_size=chunk), inner)
        got = head_hessian_sq_norm(z1, l1, method="gram", chunk_size=chunk)
        torch.testing.assert_close(got, sq)
        got = head_hessian_distance(z1, l1, z2, l2, method="gram", chunk_size=chunk)
        torch.testing.assert_close(got, dist)
    with pytest.raises(ValueError, match="chunk_size"):
        head_hessian_inner(z1, l1, z2, l2, chunk_size=0)


@pytest.mark.parametrize("c", (1, 3))
@pytest.mark.parametrize("checkpoint", (False, True))
def test_penalty_gradients_flow_to_features(c, checkpoint):
    """d/dz of the Gram-form penalties equals autograd through explicit autograd Hessians."""
    d = 4
    (w1, z1_0), (w2, z2_0) = make_set(c, d, 7, seed=21), make_set(c, d, 5, seed=22)

    z1, z2 = z1_0.clone().requires_grad_(), z2_0.clone().requires_grad_()
    l1, l2 = ref_logits(w1, z1), ref_logits(w2, z2)
    kw = {"chunk_size": 3, "checkpoint": checkpoint}
    ours = (
        head_hessian_inner(z1, l1, z2, l2, **kw)
        + head_hessian_distance(z1, l1, z2, l2, method="gram", **kw)
        + head_hessian_offdiag_sq_norm_of_mean([z1, z2], [l1, l2], method="gram", **kw)
    )
    g_ours = torch.autograd.grad(ours, (z1, z2))

    r1, r2 = z1_0.clone().requires_grad_(), z2_0.clone().requires_grad_()
    h1, h2 = ref_hessian(w1, r1, create_graph=True), ref_hessian(w2, r2, create_graph=True)
    ref = (h1 * h2).sum() + torch.linalg.norm(h1 - h2) + offdiag_sq((h1 + h2) / 2)
    g_ref = torch.autograd.grad(ref, (r1, r2))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_distance_of_identical_sets_is_zero_with_finite_gradient():
    w, z0 = make_set(3, 4, 6, seed=8)
    for method in ("full", "gram"):
        z = z0.clone().requires_grad_()
        logits = ref_logits(w, z)
        dist = head_hessian_distance(z, logits, z, logits, method=method)
        (grad,) = torch.autograd.grad(dist, z)
        assert float(dist.detach()) < 1e-6
        assert torch.isfinite(grad).all()


def test_float32_inputs_compute_in_float32():
    (w1, z1), (w2, z2) = make_set(3, 6, 20, seed=1), make_set(3, 6, 15, seed=2)
    l1, l2 = ref_logits(w1, z1), ref_logits(w2, z2)
    exact = head_hessian_inner(z1, l1, z2, l2)
    f32 = [t.float() for t in (z1, l1, z2, l2)]
    got = head_hessian_inner(*f32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-7)
    assert head_hessian_distance(*f32, method="gram").dtype == torch.float32


def test_auto_method_picks_the_cheaper_form():
    # one logit, 25,000 samples of 390 features (IRM Colored MNIST head): build H
    assert _choose("auto", [25_000, 25_000], 1, 390) == "full"
    # 65 classes on 2048 features: never build the (65 * 2049)^2 Hessian
    assert _choose("auto", [32, 32], 65, 2048) == "gram"
    # small batches of a mid-sized softmax head: the Gram form is cheaper
    assert _choose("auto", [32, 32], 10, 64) == "gram"
    assert _choose("auto", [10_000], 2, 8) == "full"
    assert FULL_MAX_ELEMENTS >= (2 * 391) ** 2
    assert _choose("gram", [25_000], 1, 390) == "gram"
    with pytest.raises(ValueError, match="method"):
        _choose("exact", [4], 1, 3)


def test_mismatched_sets_raise_value_error():
    (w1, z1), (w2, z2) = make_set(3, 4, 5, seed=1), make_set(3, 6, 5, seed=2)
    l1, l2 = ref_logits(w1, z1), ref_logits(w2, z2)
    with pytest.raises(ValueError, match="feature widths"):
        head_hessian_inner(z1, l1, z2, l2)
    with pytest.raises(ValueError, match="numbers of logits"):
        head_hessian_distance(z1, l1, z1, l1[:, :2])
    with pytest.raises(ValueError, match="rows"):
        head_hessian_sq_norm(z1, l1[:4])
    with pytest.raises(ValueError, match="same positive number"):
        head_hessian_offdiag_sq_norm_of_mean([z1, z1], [l1])
    with pytest.raises(ValueError, match="method"):
        head_hessian_distance(z1, l1, z1, l1, method="exact")
    with pytest.raises(ValueError, match="2-D"):
        head_hessian_inner(z1[0], l1, z1, l1)


def test_random_sets_are_informative():
    """The random sets used above have clearly different Hessians, so comparisons can fail."""
    (w1, z1), (w2, z2) = make_set(2, 3, 8, seed=1), make_set(2, 3, 8, seed=2)
    l1, l2 = ref_logits(w1, z1), ref_logits(w2, z2)
    assert float(head_hessian_distance(z1, l1, z2, l2)) > 1e-3
    assert torch.allclose(head_hessian(z1, l1), ref_hessian(w1, z1))
