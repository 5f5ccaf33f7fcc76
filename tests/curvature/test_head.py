"""Closed-form head gradient / Hessian / diagonal against autograd on an explicit [C, d+1] head."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.curvature.helpers import CS, DS, make_case, ref_hessian, ref_logits, ref_loss

from dgalign.curvature import (
    head_gradient,
    head_hessian,
    head_hessian_diag,
    head_per_sample_gradients,
)

TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("d", DS)
def test_gradient_diag_and_hessian_match_autograd(c, d):
    w, z, y = make_case(c, d, 11, seed=100 * c + d)
    wr = w.clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad(ref_loss(wr, z, y), wr)
    h_ref = ref_hessian(w, z, y)
    logits = ref_logits(w, z)
    torch.testing.assert_close(head_gradient(z, logits, y), grad_ref, **TOL)
    torch.testing.assert_close(head_hessian(z, logits), h_ref, **TOL)
    torch.testing.assert_close(head_hessian_diag(z, logits).reshape(-1), h_ref.diagonal(), **TOL)
    assert head_hessian(z, logits).shape == (c * (d + 1), c * (d + 1))


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("d", (1, 5))
def test_per_sample_gradients_match_loop(c, d):
    w, z, y = make_case(c, d, 6, seed=7 * c + d)
    got = head_per_sample_gradients(z, ref_logits(w, z), y)
    assert got.shape == (6, c, d + 1)
    for i in range(6):
        wr = w.clone().requires_grad_()
        (gi,) = torch.autograd.grad(ref_loss(wr, z[i : i + 1], y[i : i + 1]), wr)
        torch.testing.assert_close(got[i], gi, **TOL)
    torch.testing.assert_close(got.mean(0), head_gradient(z, ref_logits(w, z), y), **TOL)


def test_binary_labels_accept_column_shape():
    w, z, y = make_case(1, 4, 9, seed=3)
    logits = ref_logits(w, z)
    torch.testing.assert_close(head_gradient(z, logits, y[:, None]), head_gradient(z, logits, y))


@pytest.mark.parametrize("c", CS)
def test_penalty_gradients_flow_to_features(c):
    """d/dz <R, H(z)> and d/dz <R', G(z)> equal autograd through the autograd Hessian/gradient."""
    d = 4
    w, z0, y = make_case(c, d, 8, seed=11 + c)
    g = torch.Generator().manual_seed(5)
    r_h = torch.randn(c * (d + 1), c * (d + 1), generator=g, dtype=torch.float64)
    r_g = torch.randn(c, d + 1, generator=g, dtype=torch.float64)

    z = z0.clone().requires_grad_()
    logits = ref_logits(w, z)
    ours = (r_h * head_hessian(z, logits)).sum() + (r_g * head_gradient(z, logits, y)).sum()
    ours = ours + (r_g * head_hessian_diag(z, logits)).sum()
    (dz,) = torch.autograd.grad(ours, z)

    zr = z0.clone().requires_grad_()
    h = ref_hessian(w, zr, y, create_graph=True)
    wr = w.clone().requires_grad_()
    (gr,) = torch.autograd.grad(ref_loss(wr, zr, y), wr, create_graph=True)
    ref = (r_h * h).sum() + (r_g * gr).sum() + (r_g.reshape(-1) * h.diagonal()).sum()
    (dz_ref,) = torch.autograd.grad(ref, zr)
    torch.testing.assert_close(dz, dz_ref, **TOL)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_result_dtype_follows_input(dtype):
    w, z, y = make_case(3, 5, 10, seed=2, dtype=dtype)
    logits = ref_logits(w, z)
    for out in (head_gradient(z, logits, y), head_hessian(z, logits), head_hessian_diag(z, logits)):
        assert out.dtype == dtype
    w64, z64, _ = (t.double() for t in (w, z, y))
    torch.testing.assert_close(
        head_hessian(z, logits).double(),
        head_hessian(z64, ref_logits(w64, z64)),
        rtol=1e-5,
        atol=1e-6,
    )


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(2, 5),
    d=st.integers(1, 6),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_softmax_hessian_properties(c, d, n, seed):
    """H is symmetric PSD, its diagonal is head_hessian_diag, and H (1_C (x) v) = 0 for any v."""
    w, z, _ = make_case(c, d, n, seed)
    logits = ref_logits(w, z)
    h = head_hessian(z, logits)
    torch.testing.assert_close(h, h.T, **TOL)
    assert torch.linalg.eigvalsh(h).min() > -1e-10
    torch.testing.assert_close(h.diagonal(), head_hessian_diag(z, logits).reshape(-1), **TOL)
    v = torch.randn(d + 1, generator=torch.Generator().manual_seed(seed), dtype=h.dtype)
    null = torch.kron(torch.ones(c, dtype=h.dtype), v)
    assert (h @ null).abs().max() < 1e-10 * (1 + v.abs().max())


def test_shape_errors_raise_value_error():
    w, z, y = make_case(3, 4, 6, seed=0)
    logits = ref_logits(w, z)
    bad = {
        "z must be 2-D": lambda: head_hessian(z[0], logits),
        "logits must be 2-D": lambda: head_hessian_diag(z, logits[:, 0]),
        "rows": lambda: head_gradient(z[:5], logits, y),
        "class labels must have shape": lambda: head_gradient(z, logits, y[:5]),
        "integer": lambda: head_gradient(z, logits, y.double()),
        "lie in": lambda: head_gradient(z, logits, y + 3),
        "no samples": lambda: head_hessian(z[:0], logits[:0]),
        "binary labels": lambda: head_gradient(z, logits[:, :1], torch.zeros(6, 2)),
    }
    for fragment, call in bad.items():
        with pytest.raises(ValueError, match=fragment):
            call()
