"""The closed-form kernels (`moments`, `hvp`, `forms`) against autograd-differentiable explicit
versions built from `curvature.head` (gradients, diagonals, full Hessians, per-sample
gradients), float64: outputs and the gradients of random combinations w.r.t. z, W and b, for
C in {1, 2, 7}, unequal domains, with and without a leading restart dim, rows in many chunks."""

from __future__ import annotations

import pytest
import torch

from dgalign.curvature import (
    _head,
    forms,
    head_gradient,
    head_hessian,
    head_hessian_diag,
    head_per_sample_gradients,
    moments,
)
from dgalign.curvature.forms import hessian_forms
from dgalign.curvature.hvp import head_hgp, head_hutchinson_probes
from dgalign.curvature.moments import head_moments

F64 = torch.float64
SIZES = (5, 8, 3)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(_head, "CHUNK_ELEMENTS", 35)
    monkeypatch.setattr(_head, "BLOCK_ROWS", 2)  # chunks of 5 and 8 rows go in blocks
    monkeypatch.setattr(_head, "BLOCKED_PRODUCTS", True)  # whatever this CPU's default
    monkeypatch.setattr(forms, "BLOCK_ELEMENTS", 36)


def make(c, batch, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(SIZES)
    z = torch.randn(*batch, n, d, generator=g, dtype=F64).requires_grad_()
    w = (0.7 * torch.randn(*batch, c, d, generator=g, dtype=F64)).requires_grad_()
    b = torch.randn(*batch, c, generator=g, dtype=F64).requires_grad_()
    if c == 1:
        y = (torch.rand(*batch, n, generator=g) < 0.5).to(F64)
    else:
        y = torch.randint(0, c, (*batch, n), generator=g)
    return z, w, b, y


def per_restart(fn, batch):
    """fn applied to each leading index (the explicit functions take one restart)."""
    if not batch:
        return fn
    return lambda *a: torch.stack([fn(*(t[i] for t in a)) for i in range(a[0].shape[0])])


def per_domain(fn, z, logits, y=None):
    out, start = [], 0
    for n in SIZES:
        args = [z[..., start : start + n, :], logits[..., start : start + n, :]]
        if y is not None:
            args.append(y[..., start : start + n])
        out.append(fn(*args))
        start += n
    return torch.stack(out, -3)


def check(outs, refs, inputs):
    g = torch.Generator().manual_seed(3)
    coefs = [torch.randn(o.shape, generator=g, dtype=F64) for o in outs]
    for o, r in zip(outs, refs, strict=True):
        assert o.shape == r.shape
        assert float(((o - r).abs().max() / r.abs().max()).detach()) < 1e-12
    total = sum((o * k).sum() for o, k in zip(outs, coefs, strict=True))
    got = torch.autograd.grad(total, inputs, retain_graph=True)
    want = torch.autograd.grad(sum((r * k).sum() for r, k in zip(refs, coefs, strict=True)), inputs)
    for a, b in zip(got, want, strict=True):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-11


@pytest.mark.parametrize("c", [1, 2, 7])
@pytest.mark.parametrize("batch", [(), (2,)])
@pytest.mark.parametrize("square", [None, "hessian_diag", "gradient_square"])
@pytest.mark.parametrize("hessian", [False, "blas", "blocks"])
def test_head_moments(c, batch, square, hessian, monkeypatch):
    """hessian: "blas" builds the head Hessian through BLAS's syrk, "blocks" through products."""
    if hessian == "blas" and not moments.use_blas_syrk():
        pytest.skip("this torch build has no MKL syrk")
    monkeypatch.setattr(moments, "USE_BLAS_SYRK", hessian == "blas")
    z, w, b, y = make(c, batch)
    outs = head_moments(z, w, b, y, SIZES, square, bool(hessian))
    logits = z @ w.mT + b[..., None, :]
    refs = [logits, per_domain(per_restart(head_gradient, batch), z, logits, y)]
    if square == "hessian_diag":
        refs.append(per_domain(per_restart(head_hessian_diag, batch), z, logits))
    elif square == "gradient_square":
        second = per_restart(lambda *a: head_per_sample_gradients(*a).square().mean(0), batch)
        refs.append(per_domain(second, z, logits, y))
    if hessian:
        refs.append(per_domain(per_restart(head_hessian, batch), z, logits))
    check(outs, refs, (z, w, b))


@pytest.mark.parametrize("c", [1, 2, 7])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_head_hgp(c, batch):
    z, w, b, y = make(c, batch)
    mean_weights = [0.2, 0.5, 0.3]
    outs = head_hgp(z, w, b, y, SIZES, mean_weights)
    logits = z @ w.mT + b[..., None, :]
    grads = per_domain(per_restart(head_gradient, batch), z, logits, y)
    hess = per_domain(per_restart(head_hessian, batch), z, logits)
    g_bar = sum(v * grads[..., e, :, :] for e, v in enumerate(mean_weights))

    def prod(h, v):
        return (h @ v.reshape(*v.shape[:-2], -1, 1)).reshape(v.shape)

    t = torch.stack([prod(hess[..., e, :, :], grads[..., e, :, :]) for e in range(3)], -3)
    u = torch.stack([prod(hess[..., e, :, :], g_bar) for e in range(3)], -3)
    check(outs, [logits, grads, t, u], (z, w, b))


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("used", [(0,), (2,), (3,), (1, 3), (0, 2)])
def test_head_hgp_with_some_outputs_unused(c, used):
    """Outputs a loss does not use reach backward as None (no materialised zeros)."""
    z, w, b, y = make(c, (2,))
    mean_weights = [0.2, 0.5, 0.3]
    outs = head_hgp(z, w, b, y, SIZES, mean_weights)
    g = torch.Generator().manual_seed(5)
    coefs = [torch.randn(o.shape, generator=g, dtype=F64) for o in outs]
    got = torch.autograd.grad(sum((outs[i] * coefs[i]).sum() for i in used), (z, w, b))
    again = head_hgp(z, w, b, y, SIZES, mean_weights)
    zeros = sum((o * 0).sum() for o in again)  # every output used, the others with weight 0
    total = sum((again[i] * coefs[i]).sum() for i in used) + zeros
    want = torch.autograd.grad(total, (z, w, b))
    for a, e in zip(got, want, strict=True):
        assert float((a - e).abs().max() / e.abs().max()) < 1e-12


@pytest.mark.parametrize("c", [1, 7])
def test_head_hutchinson_probes_in_several_batches(c):
    batch, m, d = (2,), 7, 4
    z, w, b, y = make(c, batch, d)
    seeds = [[11, 99], [12, 99], [13, 99]]
    outs = head_hutchinson_probes(z, w, b, y, SIZES, seeds, m, batch_size=3)
    logits = z @ w.mT + b[..., None, :]
    grads = per_domain(per_restart(head_gradient, batch), z, logits, y)
    hess = per_domain(per_restart(head_hessian, batch), z, logits)

    def probes(seed):
        gen = torch.Generator().manual_seed(seed)
        parts = [
            torch.randint(0, 2, (2, min(3, m - m0), c, d + 1), generator=gen).to(F64) * 2 - 1
            for m0 in range(0, m, 3)
        ]
        return torch.cat(parts, 1)  # [B, m, C, D]

    est = []
    for e in range(3):
        row = []
        for s in seeds[e]:
            p = probes(s)
            hr = (hess[:, e, None] @ p.reshape(2, m, -1, 1)).reshape(p.shape)
            row.append((p * hr).mean(1))
        est.append(torch.stack(row, 1))
    check(outs, [logits, grads, torch.stack(est, 1)], (z, w, b))


@pytest.mark.parametrize("c", [1, 2, 7])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_hessian_forms(c, batch):
    z, w, _, _ = make(c, batch, d=3)
    logits = z @ w.mT
    weights = torch.randn(3, z.shape[-2], generator=torch.Generator().manual_seed(1), dtype=F64)
    got = hessian_forms(z, logits, weights)

    def forms_of(zz, ll):
        per = [head_hessian(zz[i : i + 1], ll[i : i + 1]) for i in range(zz.shape[0])]
        return torch.stack([sum(weights[k, i] * h for i, h in enumerate(per)) for k in range(3)])

    hs = per_restart(forms_of, batch)(z, logits)
    check([got], [hs.square().sum((-2, -1))], (z, w))


@pytest.mark.parametrize("k", [1, 2, 9])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("rows", [3, 8, 11])
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("blocked", [True, False])
def test_add_left_product_equals_one_product(k, batch, rows, strided, blocked):
    """Row blocks (one batch entry, k <= 8, at least two blocks) or the single product."""
    g = torch.Generator().manual_seed(rows + 10 * k)
    x = torch.randn(batch, rows + 5, 12, generator=g, dtype=F64)[:, 2 : 2 + rows]
    x = x[..., ::2] if strided else x[..., :6]  # a row slice as the kernels pass, or strided
    u = torch.randn(batch, rows, k, generator=g, dtype=F64)
    acc = torch.randn(batch, k, 6, generator=g, dtype=F64)
    want = acc + u.mT @ x
    _head.add_left_product(acc, u, x, blocked)
    torch.testing.assert_close(acc, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("rows", [3, 8, 11])
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("blocked", [True, False])
def test_right_product_equals_one_product(k, batch, rows, strided, blocked):
    """Row blocks (one batch entry, one vector, at least two blocks) or the single product,
    written into a row slice of a larger output as `head_rows` does."""
    g = torch.Generator().manual_seed(rows + 10 * k)
    x = torch.randn(batch, rows + 5, 12, generator=g, dtype=F64)[:, 2 : 2 + rows]
    x = x[..., ::2] if strided else x[..., :6]
    v = torch.randn(batch, k, 6, generator=g, dtype=F64)
    bias = torch.randn(batch, k, generator=g, dtype=F64)
    full = torch.zeros(batch, rows + 3, k, dtype=F64)
    got = _head.right_product(full[:, 1 : 1 + rows], bias, x, v, blocked)
    torch.testing.assert_close(got, bias[:, None] + x @ v.mT, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full[:, 1 : 1 + rows], got)
    assert not full[:, 0].any() and not full[:, 1 + rows :].any()


def test_blocked_products_default_by_vendor_and_environment(monkeypatch):
    assert isinstance(_head.cpu_vendor(), str)  # this machine's, "" where /proc says nothing
    monkeypatch.delenv(_head.BLOCKED_ENV_VAR, raising=False)
    monkeypatch.setattr(_head, "cpu_vendor", lambda: "AuthenticAMD")
    assert _head.default_blocked()
    monkeypatch.setattr(_head, "cpu_vendor", lambda: "GenuineIntel")
    assert not _head.default_blocked()
    monkeypatch.setenv(_head.BLOCKED_ENV_VAR, "1")
    assert _head.default_blocked()
    monkeypatch.setenv(_head.BLOCKED_ENV_VAR, "0")
    monkeypatch.setattr(_head, "cpu_vendor", lambda: "AuthenticAMD")
    assert not _head.default_blocked()
