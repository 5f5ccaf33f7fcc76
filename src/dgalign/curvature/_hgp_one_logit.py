"""`hvp.head_hgp` for one logit (C = 1): every per-sample quantity as a row [B, k, N].

With one logit, S_i = s_i = p_i (1 - p_i) is a scalar and every vector the kernel keeps per
sample (logit, p, r, a = Z~ V^T, q = s a, lambda, S lambda) has k <= 6 entries. Kept as rows
[B, k, N] (not columns [B, N, k]), each product with the features is a BLAS call that reads Z
once at memory speed: right products V Z^T ([B, k, d] x [B, d, n], Z transposed by its
strides) and left products U Z ([B, k, n] x [B, n, d]); MKL's paths for a [n, d] x [d, k]
product with small k ran at half that speed (`dgalign bench head-products`). One product per
domain and pass, no chunks: eight reads of each domain's features and one write of dz in all
(forward: the logits and G_e, then a and the H v products; backward: lambda and H L, then dp,
dW and dz).

The math is `hvp`'s module docstring with C = 1; backward of a loss with adjoints
L_e = [dT_e, dU_e] / n:
    lambda = L Z~^T,  S lambda = s lambda,  dp = dG_e Z~^T + (1 - 2p) sum_k lambda_k a_k,
    dl = s dp + dlogits,  dz = [dl, q, S lambda, r]^T [w, L_w, V_w, dG_e,w]
with dG_e = (H_e dT_e + w_e sum_f H_f dU_f + dG_e(direct)) / n.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dgalign.curvature._head import with_bias


def _rows(v: Tensor, z: Tensor) -> Tensor:
    """v~ z~^T for v [B, k, d + 1] (bias last) and z [B, n, d]: [B, k, n]."""
    d = z.shape[-1]
    return torch.baddbmm(v[..., d:], v[..., :d], z.mT)


def _left(u: Tensor, z: Tensor) -> Tensor:
    """u z~ for rows u [B, k, n]: [B, k, d + 1] (the bias column is the row sum)."""
    return with_bias(torch.bmm(u, z), u.sum(-1))


class OneLogitHGP(torch.autograd.Function):
    """(logits [B, N, 1], G, T, U [B, E, 1, D]) as `hvp._HGP`, for C = 1."""

    @staticmethod
    def forward(ctx, z, weight, bias, y, bounds, mean_weights):
        b, n_all, _ = z.shape
        logit = torch.baddbmm(bias[:, :, None], weight, z.mT)  # [B, 1, N]
        p = torch.sigmoid(logit)
        r = p - y[:, None]
        s = p - p * p
        grads = torch.stack(
            [_left(r[..., lo:hi], z[:, lo:hi]) / (hi - lo) for lo, hi in bounds], 1
        )  # [B, E, 1, D]
        w = torch.tensor(mean_weights, dtype=z.dtype, device=z.device)
        g_bar = (grads * w[:, None, None]).sum(1)  # [B, 1, D]
        a_all, q_all = z.new_empty(b, 2, n_all), z.new_empty(b, 2, n_all)
        prods = []
        for e, (lo, hi) in enumerate(bounds):
            zc = z[:, lo:hi]
            a = _rows(torch.cat([grads[:, e], g_bar], 1), zc)
            q = s[..., lo:hi] * a
            a_all[..., lo:hi], q_all[..., lo:hi] = a, q
            prods.append(_left(q, zc) / (hi - lo))
        prods = torch.stack(prods, 1)  # [B, E, 2, D]: H_e G_e and H_e gbar
        ctx.save_for_backward(z, weight, p, r, s, a_all, q_all, grads, g_bar, w)
        ctx.bounds = bounds
        ctx.set_materialize_grads(False)
        t, u = prods[:, :, :1].contiguous(), prods[:, :, 1:].contiguous()
        return logit.view(b, n_all, 1), grads, t, u

    @staticmethod
    @once_differentiable
    def backward(ctx, dlogits, dgrad, dprod, dmean):
        z, weight, p, r, s, a_all, q_all, grads, g_bar, w = ctx.saved_tensors
        b, n_all, d = z.shape
        zero = torch.zeros_like(g_bar)
        adj, hl = [], []  # L_e [B, 2, D] and H_e L_e
        dpq, da_all = torch.empty_like(p), torch.empty_like(a_all)
        for e, (lo, hi) in enumerate(ctx.bounds):
            zc = z[:, lo:hi]
            parts = [zero if t is None else t[:, e] for t in (dprod, dmean)]
            adj.append(torch.cat(parts, 1) / (hi - lo))
            lam = _rows(adj[e], zc)
            da = s[..., lo:hi] * lam
            da_all[..., lo:hi] = da
            slope = 1 - 2 * p[..., lo:hi]  # d s / d p
            dpq[..., lo:hi] = (lam * a_all[..., lo:hi]).sum(1, keepdim=True) * slope
            hl.append(_left(da, zc))
        dg_bar = sum(h[:, 1:] for h in hl)
        dlog = None if dlogits is None else dlogits.reshape(b, 1, n_all)
        dz = z.new_empty(b, n_all, d)
        dw, dl_all = torch.zeros_like(weight), torch.empty_like(p)
        for e, (lo, hi) in enumerate(ctx.bounds):
            zc, left = z[:, lo:hi], z.new_empty(b, hi - lo, 6)
            dg = hl[e][:, :1] + w[e] * dg_bar
            if dgrad is not None:
                dg = dg + dgrad[:, e]
            dg = dg / (hi - lo)  # [B, 1, D]
            dl = (_rows(dg, zc) + dpq[..., lo:hi]) * s[..., lo:hi]
            if dlog is not None:
                dl = dl + dlog[..., lo:hi]
            dl_all[..., lo:hi] = dl
            dw.baddbmm_(dl, zc)
            cols = torch.cat([dl, q_all[..., lo:hi], da_all[..., lo:hi], r[..., lo:hi]], 1)
            left.copy_(cols.mT)  # [B, n, 6] in row order: MKL's rank-6 product is fast there
            vecs = torch.cat([grads[:, e], g_bar], 1)
            rhs = torch.cat([weight, adj[e][..., :d], vecs[..., :d], dg[..., :d]], 1)
            if b == 1:
                torch.bmm(left, rhs, out=dz[:, lo:hi])
            else:
                dz[:, lo:hi] = torch.bmm(left, rhs)
        return dz, dw, dl_all.sum(-1), None, None, None
