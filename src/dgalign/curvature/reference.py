"""Plain-autograd references of the penalties of `penalties` and `risk`: the float64 oracle.

Each function takes the arguments of its fast counterpart and returns the same terms, built by
autograd on the head (weight, bias) as given: domain gradients by torch.autograd.grad with
create_graph, H v by double backward, full Hessians column by column from H e_k, per-sample
gradients by torch.func, IRM by the dummy scale. Leading batch dims are looped over. Slow: for
tests and `--check` runs on small shapes only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dgalign.curvature.penalties import DOMAINBED, Form
from dgalign.curvature.risk import mean_loss, sample_losses

Terms = dict[str, Tensor]


def _per_batch(fn: Callable[..., Terms]) -> Callable[..., tuple[Tensor, Terms]]:
    """Run fn(z, weight, bias, y, ...) on every leading index and stack; logits too."""

    def wrapped(z, weight, bias, y, *args, **kwargs):
        batch = z.shape[:-2]
        flat = [t.reshape(-1, *t.shape[len(batch) :]) for t in (z, weight, bias, y)]
        per = [fn(*(t[i] for t in flat), *args, index=i, **kwargs) for i in range(flat[0].shape[0])]
        terms = {k: torch.stack([p[k] for p in per]).reshape(batch) for k in per[0]}
        logits = z @ weight.mT + bias[..., None, :]
        return logits, terms

    return wrapped


def _domains(z, weight, bias, y, sizes):
    out, start = [], 0
    for n in sizes:
        zz, yy = z[start : start + n], y[start : start + n]
        out.append(mean_loss(zz @ weight.T + bias, yy))
        start += n
    return out


def _grad(loss: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    gw, gb = torch.autograd.grad(loss, (weight, bias), create_graph=True)
    return torch.cat([gw, gb[:, None]], 1)


def _hvp(g: Tensor, v: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """H v = J_g^T v, differentiable in both theta and v (v enters as grad_outputs)."""
    hw, hb = torch.autograd.grad(g, (weight, bias), grad_outputs=v, create_graph=True)
    return torch.cat([hw, hb[:, None]], 1)


def _hessian(g: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    cols = []
    for k in range(g.numel()):
        e = torch.zeros(g.numel(), dtype=g.dtype)
        e[k] = 1
        cols.append(_hvp(g, e.view_as(g), weight, bias).reshape(-1))
    return torch.stack(cols, 1)


def _mean(values: Sequence[Tensor], w: Sequence[float], detach: bool) -> Tensor:
    out = sum(wi * v for wi, v in zip(w, values, strict=True))
    return out.detach() if detach else out


def _align(values: Sequence[Tensor], mean: Tensor, form: Form) -> Tensor:
    per = torch.stack([(v - mean).square().sum() for v in values])
    return per.mean() if form.reduction == "mean" else per.sum()


def _grads(z, weight, bias, y, sizes):
    return [_grad(loss, weight, bias) for loss in _domains(z, weight, bias, y, sizes)]


@_per_batch
def diag_alignment(z, weight, bias, y, sizes, form: Form = DOMAINBED, index: int = 0) -> Terms:
    grads = _grads(z, weight, bias, y, sizes)
    diags = [torch.diagonal(_hessian(g, weight, bias)).view_as(g) for g in grads]
    w = form.weights(sizes)
    return {
        "hess_penalty": _align(diags, _mean(diags, w, form.detach_mean), form),
        "grad_penalty": _align(grads, _mean(grads, w, form.detach_mean), form),
    }


@_per_batch
def hgp_alignment(z, weight, bias, y, sizes, form: Form = DOMAINBED, index: int = 0) -> Terms:
    """T_e = H_e g_e by double backward; Tbar = Hbar gbar of the mean loss sum_e w_e L_e."""
    losses = _domains(z, weight, bias, y, sizes)
    grads = [_grad(loss, weight, bias) for loss in losses]
    w = form.weights(sizes)
    prods = [_hvp(g, g, weight, bias) for g in grads]
    g_bar = _grad(sum(wi * loss for wi, loss in zip(w, losses, strict=True)), weight, bias)
    t_bar = _hvp(g_bar, g_bar, weight, bias)
    t_bar = t_bar.detach() if form.detach_mean else t_bar
    return {
        "hess_penalty": _align(prods, t_bar, form),
        "grad_penalty": _align(grads, _mean(grads, w, form.detach_mean), form),
    }


@_per_batch
def hutchinson_alignment(
    z, weight, bias, y, sizes, probes: Sequence[Tensor], form: Form = DOMAINBED, index: int = 0
) -> Terms:
    """T_e = (1/m) sum_k r_k * (H_e r_k) by double backward, with probes[e] [*batch, C D, m]
    for domain e and probes[-1] for the mean (the same tensor for shared probes)."""
    losses = _domains(z, weight, bias, y, sizes)
    grads = [_grad(loss, weight, bias) for loss in losses]
    w = form.weights(sizes)
    g_bar = _grad(sum(wi * loss for wi, loss in zip(w, losses, strict=True)), weight, bias)

    def estimate(g: Tensor, pr: Tensor) -> Tensor:
        pr = pr.reshape(-1, *pr.shape[-2:])[index]
        cols = [
            pr[:, k].view_as(g) * _hvp(g, pr[:, k].view_as(g), weight, bias)
            for k in range(pr.shape[1])
        ]
        return torch.stack(cols).mean(0)

    est = [estimate(g, probes[e]) for e, g in enumerate(grads)]
    t_bar = estimate(g_bar, probes[-1])
    t_bar = t_bar.detach() if form.detach_mean else t_bar
    return {
        "hess_penalty": _align(est, t_bar, form),
        "grad_penalty": _align(grads, _mean(grads, w, form.detach_mean), form),
    }


def _off(h: Tensor) -> Tensor:
    return h.square().sum() - torch.diagonal(h).square().sum()


@_per_batch
def curvature_magnitude(
    z, weight, bias, y, sizes, form=DOMAINBED, share_probes=False, index: int = 0
) -> Terms:
    grads = _grads(z, weight, bias, y, sizes)
    hessians = [_hessian(g, weight, bias) for g in grads]
    w = form.weights(sizes)
    diags = [torch.diagonal(h).view_as(g) for h, g in zip(hessians, grads, strict=True)]
    h_bar = _mean(hessians, w, form.detach_mean)
    if share_probes:
        per = torch.stack([_off(h - h_bar) for h in hessians])
    else:
        per = torch.stack([_off(h) + _off(h_bar) for h in hessians])
    return {
        "hess_penalty": _align(diags, _mean(diags, w, form.detach_mean), form),
        "grad_penalty": _align(grads, _mean(grads, w, form.detach_mean), form),
        "curv_penalty": per.mean() if form.reduction == "mean" else per.sum(),
    }


def expected_probe_variance(
    z, weight, bias, y, sizes, n_probes, form=DOMAINBED, share_probes=False
):
    logits, terms = curvature_magnitude(z, weight, bias, y, sizes, form, share_probes)
    terms["probe_variance"] = terms.pop("curv_penalty") / n_probes
    return logits, terms


@_per_batch
def cma_alignment(
    z,
    weight,
    bias,
    y,
    sizes,
    mode: str = "full",
    reduction: str = "mean",
    magnitude: bool = False,
    index: int = 0,
) -> Terms:
    form = Form("envs", False, reduction)
    grads = _grads(z, weight, bias, y, sizes)
    full = [_hessian(g, weight, bias) for g in grads]
    hessians = [torch.diagonal(h) for h in full] if mode == "diag" else full
    w = form.weights(sizes)
    terms = {
        "grad_penalty": _align(grads, _mean(grads, w, False), form),
        "hess_penalty": _align(hessians, _mean(hessians, w, False), form),
    }
    if magnitude:
        h_bar = _mean(full, w, False)
        per = torch.stack([h.square().sum() + h_bar.square().sum() for h in full])
        terms["curv_penalty"] = per.mean() if form.reduction == "mean" else per.sum()
    return terms


def _variances(z, weight, bias, y, sizes) -> Tensor:
    def loss(wt, bs, zi, yi):
        return sample_losses((zi @ wt.T + bs)[None], yi[None])[0]

    per_sample = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))
    out, start = [], 0
    for n in sizes:
        gw, gb = per_sample(weight, bias, z[start : start + n], y[start : start + n])
        g = torch.cat([gw, gb[..., None]], -1)
        out.append((g - g.mean(0)).square().mean(0))
        start += n
    return torch.stack(out)


def gradient_variances(z, weight, bias, y, sizes) -> tuple[Tensor, Tensor]:
    """(logits, [..., E, C, D]) variances of the per-sample gradients, by torch.func."""
    batch = z.shape[:-2]
    flat = [t.reshape(-1, *t.shape[len(batch) :]) for t in (z, weight, bias, y)]
    out = [_variances(*(t[i] for t in flat), sizes) for i in range(flat[0].shape[0])]
    return z @ weight.mT + bias[..., None, :], torch.stack(out).reshape(*batch, *out[0].shape)


def irm_penalty(logits: Tensor, y: Tensor, sizes: Sequence[int], form: str = "split_product"):
    """IRMv1 by the dummy scale: autograd.grad of L(s * logits) w.r.t. s at s = 1."""
    flat_l, flat_y = logits.reshape(-1, *logits.shape[-2:]), y.reshape(-1, y.shape[-1])
    vals = []
    for lg_all, y_all in zip(flat_l, flat_y, strict=True):
        per = []
        for lg, t in zip(lg_all.split(list(sizes)), y_all.split(list(sizes)), strict=True):
            parts = [(lg, t)] if form == "squared" else [(lg[::2], t[::2]), (lg[1::2], t[1::2])]
            gs = []
            for part, target in parts:
                scale = torch.ones((), dtype=lg.dtype, requires_grad=True)
                (g,) = torch.autograd.grad(
                    mean_loss(part * scale, target), [scale], create_graph=True
                )
                gs.append(g)
            per.append(gs[0].square() if form == "squared" else gs[0] * gs[1])
        vals.append(torch.stack(per).mean())
    return torch.stack(vals).reshape(logits.shape[:-2])
