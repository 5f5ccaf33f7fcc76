"""Quadratic forms of head Hessians in Gram form, with a closed-form backward.

For one set of n samples (features z, logits l, p, S as in `_head`) and K weight vectors w_k:
    Q_k = sum_{i,j} w_ki w_kj tr(S_i S_j) (z~_i . z~_j)^2
        = || sum_i w_ki S_i (x) z~_i z~_i^T ||_F^2,
so ||H_e||^2, <H_e, H_f> and ||H_e - Hbar||^2 are such forms (w = 1/n_e on domain e's rows,
differences of them). tr(S_i S_j) = p_i.p_j - sum_c p_ic p_jc^2 - sum_c p_ic^2 p_jc + (p_i.p_j)^2
(softmax) or s_i s_j (one logit). Backward with Phi = W^T diag(dL/dQ) W and g = Z~ Z~^T:
    dZ~ = 4 (Phi * tau * g) Z~,
    dp  = 2 [Psi P - Psi P^2 - 2 P * (Psi P) + 2 (Psi * P P^T) P]   (Psi = Phi * g^2; softmax)
    ds  = 2 Psi s                                                 (one logit, dp = ds (1 - 2p)).
Rows are processed in blocks of about `BLOCK_ELEMENTS` n x n entries, so memory is O(rows n).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dgalign.curvature._head import logit_vjp, probs

BLOCK_ELEMENTS = 1 << 22


def _tau(p1: Tensor, p2: Tensor) -> Tensor:
    """tr(S_i S_j) for rows i of p1 [B, a, C] and j of p2 [B, n, C]: [B, a, n]."""
    if p1.shape[-1] == 1:
        return (p1 * (1 - p1)) @ (p2 * (1 - p2)).mT
    pp = p1 @ p2.mT
    cross = torch.cat([p1, p1.square()], -1) @ torch.cat([p2.square(), p2], -1).mT
    return pp + pp.square() - cross


def _blocks(n: int, b: int):
    rows = max(1, BLOCK_ELEMENTS // max(1, b * n))
    for lo in range(0, n, rows):
        yield lo, min(lo + rows, n)


def _aug(z: Tensor) -> Tensor:
    return torch.cat([z, z.new_ones(*z.shape[:-1], 1)], -1)


class _Forms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, logits, weights):
        b, n, _ = z.shape
        zt, p = _aug(z), probs(logits)
        out = z.new_zeros(b, weights.shape[1])
        for lo, hi in _blocks(n, b):
            g = zt[:, lo:hi] @ zt.mT
            kern = _tau(p[:, lo:hi], p) * g.square()
            out += (weights[:, :, lo:hi].mT * (kern @ weights.mT)).sum(1)
        ctx.save_for_backward(z, logits, weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        z, logits, weights = ctx.saved_tensors
        b, n, d = z.shape
        zt, p = _aug(z), probs(logits)
        dzt, dp = torch.zeros_like(zt), torch.zeros_like(p)
        scaled = weights * dout[..., None]  # [B, K, n]
        for lo, hi in _blocks(n, b):
            g = zt[:, lo:hi] @ zt.mT
            phi = scaled[:, :, lo:hi].mT @ weights  # [B, rows, n]
            pi = p[:, lo:hi]
            tau = _tau(pi, p)
            dzt[:, lo:hi] = 4 * (phi * tau * g) @ zt
            psi = phi * g.square()
            if p.shape[-1] == 1:
                dp[:, lo:hi] = 2 * (psi @ (p * (1 - p))) * (1 - 2 * pi)
            else:
                pp = psi @ p
                dp[:, lo:hi] = 2 * (
                    pp - psi @ p.square() - 2 * pi * pp + 2 * (psi * (pi @ p.mT)) @ p
                )
        return dzt[..., :d], logit_vjp(p, dp), None


def hessian_forms(z: Tensor, logits: Tensor, weights: Tensor) -> Tensor:
    """Q_k = ||sum_i weights[k, i] S_i (x) z~_i z~_i^T||_F^2 for z [..., n, d], logits
    [..., n, C], weights [K, n] or [..., K, n]; returns [..., K] (module docstring)."""
    if z.dim() < 2 or logits.shape[:-1] != z.shape[:-1]:
        raise ValueError(
            f"z [..., n, d] and logits [..., n, C] disagree: {z.shape}, {logits.shape}"
        )
    batch, (n, d), c = z.shape[:-2], z.shape[-2:], logits.shape[-1]
    weights = weights.to(z.dtype)
    if weights.shape[-1] != n:
        raise ValueError(f"weights must have n = {n} columns, got shape {tuple(weights.shape)}")
    dtype = torch.promote_types(torch.promote_types(z.dtype, logits.dtype), torch.float32)
    zf, lf = z.reshape(-1, n, d).to(dtype), logits.reshape(-1, n, c).to(dtype)
    wf = weights.to(dtype).expand(*batch, *weights.shape[-2:]).reshape(zf.shape[0], -1, n)
    with torch.autocast(z.device.type, enabled=False):
        out = _Forms.apply(zf, lf, wf.contiguous())
    return out.reshape(*batch, -1)
