"""Autograd / torch.func curvature (HVP, HGP, Hutchinson, per-sample gradients) on linear heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.curvature.helpers import CS, DS, make_case, ref_hessian, split_loss, split_params
from torch import nn

from dgalign.curvature import (
    autodiff,
    head_per_sample_gradients,
    hessian_gradient_product,
    hessian_vector_product,
    hutchinson_diag,
    per_sample_grads,
)

TOL = {"rtol": 1e-10, "atol": 1e-12}


def flat(parts) -> torch.Tensor:
    """Row-major flattening of the [C, d+1] head from (weight, bias) pieces."""
    return torch.cat([parts[0], parts[1][:, None]], 1).reshape(-1)


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("d", DS)
def test_hvp_and_hgp_match_explicit_hessian(c, d):
    w, z, y = make_case(c, d, 10, seed=c * 31 + d)
    params = split_params(w)
    loss = split_loss(*params, z, y)
    h = ref_hessian(w, z, y)
    v = [torch.randn_like(p) for p in params]
    torch.testing.assert_close(flat(hessian_vector_product(loss, params, v)), h @ flat(v), **TOL)

    hg, g = hessian_gradient_product(loss, params)
    g_ref = torch.autograd.grad(loss, params, retain_graph=True)
    torch.testing.assert_close(flat(g), flat(g_ref), **TOL)
    torch.testing.assert_close(flat(hg), h @ flat(g_ref), **TOL)
    # the HGP identity in its original form: ||g|| * grad ||g||
    norm = flat(g).norm()
    identity = [norm * t for t in torch.autograd.grad(norm, params, retain_graph=True)]
    torch.testing.assert_close(flat(hg), flat(identity), **TOL)


def test_without_graph_results_are_detached_and_loss_stays_usable():
    w, z, y = make_case(3, 4, 8, seed=1)
    params = split_params(w)
    loss = split_loss(*params, z, y)
    hg, g = hessian_gradient_product(loss, params, create_graph=False)
    hv = hessian_vector_product(loss, params, [torch.ones_like(p) for p in params], False)
    diag = hutchinson_diag(loss, params, 8, create_graph=False)
    assert not any(t.requires_grad for t in [*hg, *g, *hv, *diag])
    loss.backward()
    assert params[0].grad is not None


@pytest.mark.parametrize("c", (1, 3))
def test_hvp_and_hgp_gradients_flow_to_features(c):
    d = 4
    w, z0, y = make_case(c, d, 7, seed=3)
    r = torch.randn(c * (d + 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = [r.view(c, d + 1)[:, :-1], r.view(c, d + 1)[:, -1]]

    z = z0.clone().requires_grad_()
    params = split_params(w)
    loss = split_loss(*params, z, y)
    hg, _ = hessian_gradient_product(loss, params)
    ours = flat(hessian_vector_product(loss, params, v)).square().sum() + flat(hg).square().sum()
    (dz,) = torch.autograd.grad(ours, z)

    zr = z0.clone().requires_grad_()
    h = ref_hessian(w, zr, y, create_graph=True)
    pr = split_params(w)
    g = flat(torch.autograd.grad(split_loss(*pr, zr, y), pr, create_graph=True))
    ref = (h @ r).square().sum() + (h @ g).square().sum()
    (dz_ref,) = torch.autograd.grad(ref, zr)
    torch.testing.assert_close(dz, dz_ref, **TOL)


def _setup(seed=0, c=3, d=4, n=12):
    w, z, y = make_case(c, d, n, seed)
    params = split_params(w)
    h = ref_hessian(w, z, y)
    return split_loss(*params, z, y), params, h


def test_hutchinson_is_unbiased():
    loss, params, h = _setup()
    m = 4096
    est = flat(hutchinson_diag(loss, params, m, generator=torch.Generator().manual_seed(0)))
    # with m Rademacher probes, entry j has variance (1/m) sum_{l != j} H_jl^2
    std = ((h.square().sum(1) - h.diagonal().square()) / m).sqrt()
    assert ((est - h.diagonal()).abs() <= 5 * std + 1e-12).all()
    assert est.requires_grad


def test_hutchinson_error_shrinks_like_inverse_sqrt_probes():
    ratios = []
    for seed in range(4):
        loss, params, h = _setup(seed)
        gen = torch.Generator().manual_seed(seed)
        err = {
            m: (flat(hutchinson_diag(loss, params, m, gen, False)) - h.diagonal()).norm()
            for m in (256, 4096)
        }
        ratios.append(err[4096] / err[256])
    assert sum(ratios) / len(ratios) < 0.6  # expected sqrt(256 / 4096) = 0.25


@pytest.mark.parametrize("m", (2, 8))
def test_expected_squared_estimate_adds_offdiag_over_probes(m):
    """E ||D_hat||^2 = ||diag H||^2 + (1/m) ||offdiag H||_F^2 (the `expected_probes` identity).

    k stacked copies of one head give a block-diagonal Hessian, so one call with m probes
    yields k independent estimates of the same diagonal.
    """
    w, z, y = make_case(2, 3, 10, seed=1)
    h = ref_hessian(w, z, y)
    k = 4000
    heads = w.expand(k, *w.shape).clone().requires_grad_()
    logits = torch.einsum("nd,kcd->knc", z, heads[:, :, :-1]) + heads[:, None, :, -1]
    loss = F.cross_entropy(logits.reshape(-1, 2), y.repeat(k), reduction="sum") / len(y)
    (est,) = hutchinson_diag(loss, [heads], m, torch.Generator().manual_seed(m), False)
    draws = est.reshape(k, -1).square().sum(1)
    diag_sq = h.diagonal().square().sum()
    expected = diag_sq + (h.square().sum() - diag_sq) / m
    se = draws.std() / k**0.5
    assert abs(draws.mean() - expected) < 4 * se
    assert abs(expected - diag_sq) > 8 * se  # the 1/m term is resolvable at this sample size


def test_hutchinson_loop_fallback_and_batches(monkeypatch):
    loss, params, h = _setup(seed=2)
    batched = flat(hutchinson_diag(loss, params, 64, torch.Generator().manual_seed(7)))
    real_vjp = autodiff._vjp

    def no_vmap(*args, batched=False, **kwargs):
        if batched:
            raise RuntimeError("vmap: no batching rule")
        return real_vjp(*args, **kwargs)

    monkeypatch.setattr(autodiff, "_vjp", no_vmap)
    looped = flat(hutchinson_diag(loss, params, 64, torch.Generator().manual_seed(7)))
    torch.testing.assert_close(looped, batched, **TOL)
    monkeypatch.undo()
    m = 4096
    chunked = flat(hutchinson_diag(loss, params, m, torch.Generator().manual_seed(3), True, 500))
    std = ((h.square().sum(1) - h.diagonal().square()) / m).sqrt()
    assert ((chunked - h.diagonal()).abs() <= 5 * std + 1e-12).all()


def test_hutchinson_gradient_flows_to_features():
    """Autograd through the estimate (fixed probes) matches central finite differences in z."""
    w, z0, y = make_case(3, 3, 6, seed=4)
    weights = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def penalty(z):
        params = split_params(w)
        loss = split_loss(*params, z, y)
        est = hutchinson_diag(loss, params, 16, torch.Generator().manual_seed(9))
        return (flat(est) * weights.reshape(-1)).sum()

    z = z0.clone().requires_grad_()
    (dz,) = torch.autograd.grad(penalty(z), z)
    eps = 1e-6
    for idx in ((0, 0), (2, 1), (5, 2)):
        dp, dm = z0.clone(), z0.clone()
        dp[idx] += eps
        dm[idx] -= eps
        fd = (penalty(dp) - penalty(dm)).detach() / (2 * eps)
        torch.testing.assert_close(dz[idx], fd, rtol=1e-6, atol=1e-9)


def _loop_per_sample(module, loss_fn, x, y):
    out = {k: [] for k, _ in module.named_parameters()}
    for i in range(x.shape[0]):
        names, ps = zip(*module.named_parameters(), strict=True)
        grads = torch.autograd.grad(loss_fn(module(x[i : i + 1]), y[i : i + 1]), ps)
        for k, g in zip(names, grads, strict=True):
            out[k].append(g)
    return {k: torch.stack(v) for k, v in out.items()}


def _bce(out, t):
    return F.binary_cross_entropy_with_logits(out[:, 0], t)


@pytest.mark.parametrize("c", CS)
def test_per_sample_grads_match_loop_and_closed_form(c):
    torch.manual_seed(c)
    _, z, y = make_case(c, 5, 6, seed=c)
    head = nn.Linear(5, c).double()
    loss_fn = _bce if c == 1 else F.cross_entropy
    got = per_sample_grads(head, None, loss_fn, z, y)
    ref = _loop_per_sample(head, loss_fn, z, y)
    for k in ("weight", "bias"):
        torch.testing.assert_close(got[k], ref[k], **TOL)
    closed = head_per_sample_gradients(z, head(z), y)
    torch.testing.assert_close(closed[:, :, :-1], got["weight"], **TOL)
    torch.testing.assert_close(closed[:, :, -1], got["bias"], **TOL)


def test_per_sample_grads_of_an_mlp_with_explicit_params():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    params = {k: p.detach() for k, p in mlp.named_parameters()}
    got = per_sample_grads(mlp, params, F.cross_entropy, x, y)
    ref = _loop_per_sample(mlp, F.cross_entropy, x, y)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], **TOL)


def test_per_sample_penalty_trains_the_featurizer():
    torch.manual_seed(1)
    feat, head = nn.Linear(3, 4).double(), nn.Linear(4, 2).double()
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randint(0, 2, (7,))
    z = feat(x)
    grads = per_sample_grads(head, None, F.cross_entropy, z, y)
    penalty = grads["weight"].var(0).sum() + grads["bias"].var(0).sum()
    (ours,) = torch.autograd.grad(penalty, feat.weight)
    z = feat(x)
    closed = head_per_sample_gradients(z, head(z), y)
    (ref,) = torch.autograd.grad(closed.var(0).sum(), feat.weight)
    assert ref.abs().max() > 1e-6
    torch.testing.assert_close(ours, ref, **TOL)


def test_bad_arguments_raise_value_error():
    loss, params, _ = _setup()
    with pytest.raises(ValueError, match="one tensor per parameter"):
        hessian_vector_product(loss, params, [torch.ones(2)])
    with pytest.raises(ValueError, match="scalar"):
        hessian_gradient_product(params[0] * 2, params)
    with pytest.raises(ValueError, match="n_probes"):
        hutchinson_diag(loss, params, 0)
    with pytest.raises(ValueError, match="samples"):
        per_sample_grads(nn.Linear(2, 2), None, F.cross_entropy, torch.ones(3, 2), torch.ones(2))
