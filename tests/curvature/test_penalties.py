"""Every closed-form penalty of `curvature.penalties` / `curvature.risk` against its plain-autograd
reference (`curvature.reference`) in float64: values and gradients w.r.t. z, W and b to 1e-10
relative, for C in {1, 2, 7}, unequal domain sizes, detached and undetached mean terms, both
mean terms and reductions, with and without a leading restart dim, rows in several chunks."""

from __future__ import annotations

import itertools

import pytest
import torch

from dgalign.curvature import _head, forms, penalties, reference, risk
from dgalign.curvature.penalties import Form

F64 = torch.float64
CS = (1, 2, 7)
SIZES = (5, 8, 3)
FORMS = [Form(*f) for f in itertools.product(("pooled", "envs"), (True, False), ("mean", "sum"))]
RTOL = 1e-10


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """A few rows per chunk and per Gram block: every multi-chunk path runs."""
    monkeypatch.setattr(_head, "CHUNK_ELEMENTS", 24)
    monkeypatch.setattr(forms, "BLOCK_ELEMENTS", 40)


def make_head(c: int, batch=(), d: int = 3, sizes=SIZES, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    z = torch.randn(*batch, n, d, generator=g, dtype=F64)
    z[..., : sizes[0], :] += 0.5  # domains differ
    weight = 0.8 * torch.randn(*batch, c, d, generator=g, dtype=F64)
    bias = 0.5 * torch.randn(*batch, c, generator=g, dtype=F64)
    if c == 1:
        y = (torch.rand(*batch, n, generator=g) < 0.5).to(F64)
    else:
        y = torch.randint(0, c, (*batch, n), generator=g)
    return [t.requires_grad_() for t in (z, weight, bias)] + [y]


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = b.abs().max().clamp_min(1e-300)
    err = float(((a - b).abs().max() / scale).detach())
    assert err <= RTOL, f"{what}: relative error {err:.2e}"


def compare(fast, ref, z, weight, bias, seed: int = 1) -> None:
    """Values of every term and gradients of a random combination of terms and logits."""
    (lf, tf), (lr, tr) = fast, ref
    assert set(tf) == set(tr)
    close(lf, lr, "logits")
    g = torch.Generator().manual_seed(seed)
    total_f = (lf * torch.randn(lf.shape, generator=g, dtype=F64)).sum()
    total_r = (
        lr * torch.randn(lr.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    ).sum()
    for name in sorted(tf):
        assert tf[name].shape == tr[name].shape, name
        close(tf[name], tr[name], name)
        k = torch.randn(tf[name].shape, generator=g, dtype=F64)
        total_f = total_f + (k * tf[name]).sum()
        total_r = total_r + (k * tr[name]).sum()
    gf = torch.autograd.grad(total_f, (z, weight, bias))
    gr = torch.autograd.grad(total_r, (z, weight, bias))
    for a, b, what in zip(gf, gr, ("dz", "dW", "db"), strict=True):
        close(a, b, what)


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("form", FORMS, ids=str)
def test_diag_alignment(c, form):
    z, w, b, y = make_head(c, batch=(2,))
    compare(
        penalties.diag_alignment(z, w, b, y, SIZES, form),
        reference.diag_alignment(z, w, b, y, SIZES, form),
        z,
        w,
        b,
    )


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("form", FORMS, ids=str)
def test_hgp_alignment(c, form):
    z, w, b, y = make_head(c, batch=(2,) if c < 7 else ())
    compare(
        penalties.hgp_alignment(z, w, b, y, SIZES, form),
        reference.hgp_alignment(z, w, b, y, SIZES, form),
        z,
        w,
        b,
    )


def _probe_draws(method, batch, c, d, m, count, seed):
    """The probes hutchinson_alignment draws after torch.manual_seed(seed), as [*batch, CD, m]."""
    torch.manual_seed(seed)
    size = c * (d + 1)
    if method == "hessian":
        like = torch.zeros((), dtype=F64)
        return [penalties.draw_probes(batch, size, m, like) for _ in range(count)]
    seeds = [int(s) for s in torch.randint(0, 2**62, (count,))]
    bsz = 1
    for s in batch:
        bsz *= s
    out = []
    for s in seeds:
        gen = torch.Generator().manual_seed(s)
        parts = [
            torch.randint(0, 2, (bsz, min(32, m - m0), c, d + 1), generator=gen).to(F64) * 2 - 1
            for m0 in range(0, m, 32)
        ]
        p = torch.cat(parts, 1).reshape(bsz, m, size).mT
        out.append(p.reshape(*batch, size, m))
    return out


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("method", ["hessian", "probes"])
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("form", [FORMS[0], FORMS[3], FORMS[6]], ids=str)
def test_hutchinson_alignment_given_the_same_probes(c, method, share, form):
    batch, m, d = (2,), 9, 3
    z, w, b, y = make_head(c, batch=batch, d=d)
    torch.manual_seed(5)
    fast = penalties.hutchinson_alignment(z, w, b, y, SIZES, form, m, share, method)
    draws = _probe_draws(method, batch, c, d, m, 1 if share else len(SIZES) + 1, 5)
    probes = draws * (len(SIZES) + 1) if share else draws
    compare(fast, reference.hutchinson_alignment(z, w, b, y, SIZES, probes, form), z, w, b)


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("method", ["hessian", "gram"])
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("form", FORMS, ids=str)
def test_expected_probe_variance(c, method, share, form):
    z, w, b, y = make_head(c, batch=(2,) if c < 7 else ())
    compare(
        penalties.expected_probe_variance(z, w, b, y, SIZES, 9, form, share, method),
        reference.expected_probe_variance(z, w, b, y, SIZES, 9, form, share),
        z,
        w,
        b,
    )


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("method", ["hessian", "gram"])
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("form", [FORMS[0], FORMS[3], FORMS[6]], ids=str)
def test_curvature_magnitude(c, method, share, form):
    z, w, b, y = make_head(c, batch=(2,) if c < 7 else ())
    compare(
        penalties.curvature_magnitude(z, w, b, y, SIZES, form, share, method),
        reference.curvature_magnitude(z, w, b, y, SIZES, form, share),
        z,
        w,
        b,
    )


def test_curvature_magnitude_is_m_times_the_expected_probe_variance():
    z, w, b, y = make_head(2, batch=(2,))
    _, mag = penalties.curvature_magnitude(z, w, b, y, SIZES)
    _, var = penalties.expected_probe_variance(z, w, b, y, SIZES, 150)
    close(var["probe_variance"] * 150, mag["curv_penalty"], "150 probe_variance")
    assert float(mag["curv_penalty"].detach().min()) > 0


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("mode", ["full", "gram", "diag"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("magnitude", [False, True])
def test_cma_alignment(c, mode, reduction, magnitude):
    z, w, b, y = make_head(c, batch=(2,))
    compare(
        penalties.cma_alignment(z, w, b, y, SIZES, mode, reduction, magnitude),
        reference.cma_alignment(z, w, b, y, SIZES, mode, reduction, magnitude),
        z,
        w,
        b,
    )


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("fishr_form", penalties.FISHR_FORMS)
def test_fishr(c, fishr_form):
    z, w, b, y = make_head(c, batch=(2,))

    def terms(fn):
        logits, v = fn(z, w, b, y, SIZES)
        return logits, {"v": v, "penalty": penalties.fishr_penalty(v, fishr_form)}

    compare(terms(penalties.gradient_variances), terms(reference.gradient_variances), z, w, b)


@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("irm_form", risk.IRM_FORMS)
def test_irm_closed_form_equals_dummy_scale(c, irm_form):
    z, w, b, y = make_head(c, batch=(2,))

    def terms(fn):
        logits = z @ w.mT + b[..., None, :]
        return logits, {"irm": fn(logits, y, SIZES, irm_form)}

    compare(terms(risk.irm_penalty), terms(reference.irm_penalty), z, w, b)


def test_vrex_forms():
    losses = torch.tensor([[0.3, 0.9], [1.0, 0.5]], dtype=F64)
    torch.testing.assert_close(
        risk.vrex_penalty(losses, "squared_difference"), torch.tensor([0.36, 0.25], dtype=F64)
    )
    torch.testing.assert_close(risk.vrex_penalty(losses), torch.tensor([0.09, 0.0625], dtype=F64))
    with pytest.raises(ValueError, match="2 domains"):
        risk.vrex_penalty(torch.ones(3), "squared_difference")


def test_domain_losses_match_torch():
    z, w, b, y = make_head(7)
    logits = z @ w.T + b
    want = torch.stack(
        [
            torch.nn.functional.cross_entropy(lg, t)
            for lg, t in zip(logits.split(list(SIZES)), y.split(list(SIZES)), strict=True)
        ]
    )
    close(risk.domain_mean_losses(logits, y, SIZES), want, "CE")
    z, w, b, y = make_head(1)
    logits = z @ w.T + b
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y)
    close(risk.mean_loss(logits, y), want, "BCE")


def test_bad_inputs_are_one_line_value_errors():
    z, w, b, y = make_head(2)
    with pytest.raises(ValueError, match="sum to N"):
        penalties.diag_alignment(z, w, b, y, (3, 3))
    with pytest.raises(ValueError, match="labels"):
        penalties.diag_alignment(z, w, b, y[:-1], SIZES)
    with pytest.raises(ValueError, match="mean_term"):
        Form("median")
