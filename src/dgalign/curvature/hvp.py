"""Head Hessian-vector products in closed form, in one autograd node with the head.

For domain e (n rows, notation of `_head`) and head-parameter vectors v [C, D]:
    H_e v = (1/n) sum_i (S_i a_i) z~_i^T,   a_i = v z~_i (= Z~ v^T, one product over the rows).
`head_hgp` (HGP): the logits, G_e, T_e = H_e G_e and U_e = H_e gbar with gbar = sum_e w_e G_e
(w: the mean-term weights), so the mean term Hbar gbar = sum_e w_e U_e. Two passes over the
features forward (G first, then a, S a and the product), two backward:
    adjoint L of H_e v:  lambda = Z~ L^T,  da = S lambda,  dp += d(S a)/dp . lambda,
                         dv = da^T Z~ (= H L)
    dZ~ = dl W~ + Q L + da V + R dG    (Q = S a, V = the vectors, one product for all four)
For one logit (C = 1) `_hgp_one_logit` runs the same math with the per-sample vectors kept as
rows [B, k, N] and one product per domain and pass; `_HGP` here is the general C.
`head_hutchinson_probes`: G_e and Hutchinson's estimates (1/m) sum_k r_k * (H_e r_k) with
Rademacher probes r_k, for heads too wide to build H_e; probes are drawn in batches from a
seeded generator and drawn again in backward, so they are never all stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dgalign.curvature._head import (
    Layout,
    add_left_product,
    apply_s,
    apply_s_vjp,
    head_rows,
    layout,
    logit_vjp,
    with_bias,
)
from dgalign.curvature._hgp_one_logit import OneLogitHGP


def _first_pass(lay: Layout, rows: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """logits, p, r [B, N, C] and G [B, E, C, D], chunk by chunk."""
    z, weight, bias, y = lay.z, lay.weight, lay.bias, lay.y
    b, n_all, d = z.shape
    c = weight.shape[1]
    logits = z.new_empty(b, n_all, c)
    p_all, r_all = torch.empty_like(logits), torch.empty_like(logits)
    grads = []
    for e, (start, stop) in enumerate(lay.bounds):
        gw = z.new_zeros(b, c, d)
        for lo, hi in lay.chunks(e, rows):
            zc = z[:, lo:hi]
            view = slice(None), slice(lo, hi)
            _, _, rc = head_rows(zc, weight, bias, y[view], logits[view], p_all[view], r_all[view])
            add_left_product(gw, rc, zc)
        grads.append(with_bias(gw, r_all[:, start:stop].sum(1)) / (stop - start))
    return logits, p_all, r_all, torch.stack(grads, 1)


def _split(v: Tensor) -> tuple[Tensor, Tensor]:
    """[B, K, C, D] -> weight part [B, K C, d] and bias part [B, K C]."""
    b, k, c, width = v.shape
    return v[..., :-1].reshape(b, k * c, width - 1), v[..., -1].reshape(b, k * c)


class _HGP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weight, bias, y, bounds, mean_weights):
        lay = Layout(z, weight, bias, y, bounds, ())
        b, n_all, d = z.shape
        c = weight.shape[1]
        rows = lay.rows(d + 1)
        logits, p_all, r_all, grads = _first_pass(lay, rows)
        w = torch.tensor(mean_weights, dtype=z.dtype, device=z.device)
        g_bar = (grads * w[:, None, None]).sum(1)
        a_all, q_all = z.new_empty(b, n_all, 2 * c), z.new_empty(b, n_all, 2 * c)
        prods = []
        for e, (start, stop) in enumerate(bounds):
            vw, vb = _split(torch.stack([grads[:, e], g_bar], 1))
            hw = z.new_zeros(b, 2 * c, d)
            for lo, hi in lay.chunks(e, rows):
                zc = z[:, lo:hi]
                ac = torch.baddbmm(vb[:, None], zc, vw.mT)
                qc = apply_s(p_all[:, lo:hi], ac.view(b, hi - lo, 2, c)).view(b, hi - lo, 2 * c)
                a_all[:, lo:hi], q_all[:, lo:hi] = ac, qc
                add_left_product(hw, qc, zc)
            hv = with_bias(hw, q_all[:, start:stop].sum(1)) / (stop - start)
            prods.append(hv.view(b, 2, c, d + 1))
        prods = torch.stack(prods, 1)  # [B, E, 2, C, D]
        ctx.save_for_backward(z, weight, p_all, r_all, a_all, q_all, grads, g_bar, w)
        ctx.bounds, ctx.rows = bounds, rows
        ctx.set_materialize_grads(False)
        return logits, grads, prods[:, :, 0].contiguous(), prods[:, :, 1].contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, dlogits, dgrad, dprod, dmean):
        z, weight, p_all, r_all, a_all, q_all, grads, g_bar, w = ctx.saved_tensors
        bounds, rows = ctx.bounds, ctx.rows
        lay = Layout(z, weight, None, None, bounds, ())
        b, n_all, d = z.shape
        c = weight.shape[1]
        zero = torch.zeros_like(grads)
        dprod = zero if dprod is None else dprod
        dmean = zero if dmean is None else dmean
        adj = [  # dL/d(H_e v) for v = G_e and gbar, with the 1/n of H_e
            torch.stack([dprod[:, e], dmean[:, e]], 1) / (hi - lo)
            for e, (lo, hi) in enumerate(bounds)
        ]
        da_all, dpq_all = z.new_empty(b, n_all, 2 * c), z.new_empty(b, n_all, c)
        hl = []
        for e, (start, stop) in enumerate(bounds):
            lw, lb = _split(adj[e])
            dvw = z.new_zeros(b, 2 * c, d)
            for lo, hi in lay.chunks(e, rows):
                zc, pc = z[:, lo:hi], p_all[:, lo:hi]
                lam = torch.baddbmm(lb[:, None], zc, lw.mT).view(b, hi - lo, 2, c)
                ac = a_all[:, lo:hi].view(b, hi - lo, 2, c)
                da = apply_s(pc, lam).view(b, hi - lo, 2 * c)
                da_all[:, lo:hi] = da
                dpq_all[:, lo:hi] = apply_s_vjp(pc, ac, lam)
                add_left_product(dvw, da, zc)
            hl.append(with_bias(dvw, da_all[:, start:stop].sum(1)).view(b, 2, c, d + 1))
        dg_bar = sum(h[:, 1] for h in hl)
        dz = torch.empty_like(z, memory_format=torch.contiguous_format)
        dw = torch.zeros_like(weight)
        dl_all = torch.empty_like(p_all)
        for e, (start, stop) in enumerate(bounds):
            n = stop - start
            dg = hl[e][:, 0] + w[e] * dg_bar
            if dgrad is not None:
                dg = dg + dgrad[:, e]
            dg = dg / n
            lw, _ = _split(adj[e])
            vw, _ = _split(torch.stack([grads[:, e], g_bar], 1))
            rhs = torch.cat([weight, lw, vw, dg[..., :d]], 1)
            for lo, hi in lay.chunks(e, rows):
                zc, pc = z[:, lo:hi], p_all[:, lo:hi]
                dp = torch.baddbmm(dg[:, None, :, d], zc, dg[..., :d].mT) + dpq_all[:, lo:hi]
                dl = logit_vjp(pc, dp)
                if dlogits is not None:
                    dl = dl + dlogits[:, lo:hi]
                dl_all[:, lo:hi] = dl
                add_left_product(dw, dl, zc)
                left = torch.cat([dl, q_all[:, lo:hi], da_all[:, lo:hi], r_all[:, lo:hi]], -1)
                dz[:, lo:hi] = torch.bmm(left, rhs)
        return dz, dw, dl_all.sum(1), None, None, None


def head_hgp(
    z: Tensor,
    weight: Tensor,
    bias: Tensor,
    y: Tensor,
    sizes: Sequence[int],
    mean_weights: Sequence[float],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(logits, G, T, U) [..., E, C, D]: the domains' head gradients G_e, T_e = H_e G_e and
    U_e = H_e gbar with gbar = sum_e mean_weights[e] G_e (module docstring)."""
    lay = layout(z, weight, bias, y, sizes)
    if len(mean_weights) != len(lay.bounds):
        raise ValueError(f"need one mean weight per domain, got {len(mean_weights)}")
    kernel = OneLogitHGP if lay.weight.shape[1] == 1 else _HGP
    with torch.autocast(lay.z.device.type, enabled=False):
        outs = kernel.apply(
            lay.z, lay.weight, lay.bias, lay.y, lay.bounds, [float(v) for v in mean_weights]
        )
    return tuple(lay.out(t) for t in outs)  # type: ignore[return-value]


def _rademacher(gen: torch.Generator, shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


class _ProbeDiag(torch.autograd.Function):
    """Hutchinson estimates by closed-form H r products, probes regenerated from seeds."""

    @staticmethod
    def forward(ctx, z, weight, bias, y, bounds, seeds, n_probes, batch_size):
        lay = Layout(z, weight, bias, y, bounds, ())
        b, n_all, d = z.shape
        c = weight.shape[1]
        logits, p_all, r_all, grads = _first_pass(lay, n_all)
        estimates = z.new_zeros(b, len(bounds), len(seeds[0]), c, d + 1)
        for e, (start, stop) in enumerate(bounds):
            zc, pc = z[:, start:stop], p_all[:, start:stop]
            for k, seed in enumerate(seeds[e]):
                gen = torch.Generator(device=z.device).manual_seed(seed)
                for m0 in range(0, n_probes, batch_size):
                    m = min(batch_size, n_probes - m0)
                    probe = _rademacher(gen, (b, m, c, d + 1), z)
                    pw, pb = _split(probe)
                    ac = torch.baddbmm(pb[:, None], zc, pw.mT).view(b, stop - start, m, c)
                    qc = apply_s(pc, ac).view(b, stop - start, m * c)
                    hv = with_bias(qc.mT @ zc, qc.sum(1)).view(b, m, c, d + 1)
                    estimates[:, e, k] += (probe * hv).sum(1)
            estimates[:, e] /= n_probes * (stop - start)
        ctx.save_for_backward(z, weight, p_all, r_all)
        ctx.bounds, ctx.seeds, ctx.n_probes, ctx.batch_size = bounds, seeds, n_probes, batch_size
        ctx.set_materialize_grads(False)
        return logits, grads, estimates

    @staticmethod
    @once_differentiable
    def backward(ctx, dlogits, dgrad, dest):
        z, weight, p_all, r_all = ctx.saved_tensors
        b, _, d = z.shape
        c = weight.shape[1]
        m_all, batch_size = ctx.n_probes, ctx.batch_size
        dz = torch.zeros_like(z, memory_format=torch.contiguous_format)
        dp_all = torch.zeros_like(p_all)
        for e, (start, stop) in enumerate(ctx.bounds):
            n = stop - start
            zc, pc = z[:, start:stop], p_all[:, start:stop]
            if dgrad is not None:
                dg = dgrad[:, e] / n
                dp_all[:, start:stop] += torch.baddbmm(dg[:, None, :, d], zc, dg[..., :d].mT)
                dz[:, start:stop] += r_all[:, start:stop] @ dg[..., :d]
            if dest is None:
                continue
            for k, seed in enumerate(ctx.seeds[e]):
                gen = torch.Generator(device=z.device).manual_seed(seed)
                scale = dest[:, e, k] / (m_all * n)  # [B, C, D]
                for m0 in range(0, m_all, batch_size):
                    m = min(batch_size, m_all - m0)
                    probe = _rademacher(gen, (b, m, c, d + 1), z)
                    pw, pb = _split(probe)
                    lw, lb = _split(probe * scale[:, None])
                    ac = torch.baddbmm(pb[:, None], zc, pw.mT).view(b, n, m, c)
                    lam = torch.baddbmm(lb[:, None], zc, lw.mT).view(b, n, m, c)
                    qc = apply_s(pc, ac).view(b, n, m * c)
                    da = apply_s(pc, lam).view(b, n, m * c)
                    dp_all[:, start:stop] += apply_s_vjp(pc, ac, lam)
                    dz[:, start:stop] += qc @ lw + da @ pw
        dl = logit_vjp(p_all, dp_all)
        if dlogits is not None:
            dl = dl + dlogits
        dz += dl @ weight
        return dz, dl.mT @ z, dl.sum(1), None, None, None, None, None


def head_hutchinson_probes(
    z: Tensor,
    weight: Tensor,
    bias: Tensor,
    y: Tensor,
    sizes: Sequence[int],
    seeds: Sequence[Sequence[int]],
    n_probes: int,
    batch_size: int = 32,
) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, G [..., E, C, D], estimates [..., E, K, C, D]): for domain e and each of its K
    probe seeds `seeds[e]`, (1/m) sum_k r_k * (H_e r_k) over `n_probes` Rademacher probes
    [..., C, D] drawn from a generator seeded with that seed (the same seed gives the same
    probes on every domain), `batch_size` probes at a time."""
    lay = layout(z, weight, bias, y, sizes)
    if len(seeds) != len(lay.bounds) or len({len(s) for s in seeds}) != 1:
        raise ValueError("need the same number of probe seeds for every domain")
    if n_probes < 1 or batch_size < 1:
        raise ValueError(f"n_probes and batch_size must be positive, got {n_probes}, {batch_size}")
    seeds = [[int(s) for s in row] for row in seeds]
    with torch.autocast(lay.z.device.type, enabled=False):
        outs = _ProbeDiag.apply(
            lay.z, lay.weight, lay.bias, lay.y, lay.bounds, seeds, int(n_probes), int(batch_size)
        )
    return tuple(lay.out(t) for t in outs)  # type: ignore[return-value]
