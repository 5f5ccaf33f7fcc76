"""Fused row passes of `hvp.head_hgp` for one logit (C = 1), compiled by `fused.run`.

Notation of `hvp`, per chunk of rows z [B, R, d] with s = p (1 - p) and the vectors
V = [G_e; gbar], adjoints L = dL/d(H_e V) [B, 2, D] (the 1/n folded in):
    forward    a = z V_w^T + V_b,   q = s a,   H_e V += [q^T z, sum q]
    adjoint    lambda = z L_w^T + L_b,   da = s lambda,   dpq = (1 - 2 p) sum_k a_k lambda_k,
               H_e L += [da^T z, sum da]
    backward   dp = z dg_w + dg_b + dpq,   dl = dlogits + s dp,   dw += dl^T z,
               dz = dl w + q L_w + da V_w + r dg_w   (written into dz's rows)
each one compiled body per chunk (one read of the chunk from memory). The first pass (logits,
p, r, G) is `_fused_moments`' forward body. None when the compiler failed (`fused.run`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgalign.curvature import _fused_moments, fused
from dgalign.curvature._head import Layout


def _hv_rows(zc, p, vw, vb) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(a, q [B, R, 2], q^T z [B, 2, d], sum q [B, 2]) for vectors vw [B, 2, d], vb [B, 2]."""
    a = (zc[:, :, None, :] * vw[:, None]).sum(-1) + vb[:, None]
    q = (p - p * p)[..., None] * a
    return a, q, (q[..., None] * zc[:, :, None, :]).sum(1), q.sum(1)


def _adjoint_rows(zc, p, a, lw, lb) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(da [B, R, 2], dpq [B, R], da^T z [B, 2, d], sum da [B, 2])."""
    lam = (zc[:, :, None, :] * lw[:, None]).sum(-1) + lb[:, None]
    da = (p - p * p)[..., None] * lam
    dpq = (1 - 2 * p) * (a * lam).sum(-1)
    return da, dpq, (da[..., None] * zc[:, :, None, :]).sum(1), da.sum(1)


def _backward_rows(zc, p, r, q, da, dpq, dlog, w, lw, vw, dg, out: Tensor) -> tuple[Tensor, Tensor]:
    """(dl [B, R], dl^T z [B, d]); dz written into `out`."""
    dp = (zc * dg[:, None, :-1]).sum(-1) + dg[:, -1:] + dpq
    dl = dp * (p - p * p) if dlog is None else dp * (p - p * p) + dlog
    dz = dl[..., None] * w[:, None, :] + r[..., None] * dg[:, None, :-1]
    dz = dz + (q[..., None] * lw[:, None]).sum(-2) + (da[..., None] * vw[:, None]).sum(-2)
    out.copy_(dz)
    return dl, (dl[..., None] * zc).sum(1)


def first_pass(lay: Layout) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """logits, p, r [B, N, 1] and G [B, E, 1, D], as `hvp._first_pass`."""
    got = _fused_moments.forward(lay, None, False)
    return None if got is None else (got[0], got[1], got[2], got[4])


def products(lay: Layout, p_all: Tensor, vecs: list[Tensor]) -> tuple | None:
    """(a, q [B, N, 2], [H_e V_e / n [B, 2, D] for each domain e]) for V_e = vecs[e] [B, 2, D]."""
    z = lay.z
    b, n_all, d = z.shape
    a_all, q_all = z.new_empty(b, n_all, 2), z.new_empty(b, n_all, 2)
    rows, out = fused.chunk_rows(z), []
    for e, (start, stop) in enumerate(lay.bounds):
        vw, vb = vecs[e][..., :d].contiguous(), vecs[e][..., d].contiguous()
        acc = z.new_zeros(b, 2, d + 1)
        for lo, hi in lay.chunks(e, rows):
            got = fused.run(_hv_rows, z[:, lo:hi], p_all[:, lo:hi, 0], vw, vb)
            if got is None:
                return None
            a_all[:, lo:hi], q_all[:, lo:hi] = got[0], got[1]
            acc[..., :d] += got[2]
            acc[..., d] += got[3]
        out.append(acc / (stop - start))
    return a_all, q_all, out


def adjoints(lay: Layout, p_all: Tensor, a_all: Tensor, adj: list[Tensor]) -> tuple | None:
    """(da [B, N, 2], dpq [B, N, 1], [H_e L_e [B, 2, D]]) for the adjoints adj[e] [B, 2, D]."""
    z = lay.z
    b, n_all, d = z.shape
    da_all, dpq_all = z.new_empty(b, n_all, 2), z.new_empty(b, n_all, 1)
    rows, out = fused.chunk_rows(z), []
    for e in range(len(lay.bounds)):
        lw, lb = adj[e][..., :d].contiguous(), adj[e][..., d].contiguous()
        acc = z.new_zeros(b, 2, d + 1)
        for lo, hi in lay.chunks(e, rows):
            got = fused.run(_adjoint_rows, z[:, lo:hi], p_all[:, lo:hi, 0], a_all[:, lo:hi], lw, lb)
            if got is None:
                return None
            da_all[:, lo:hi], dpq_all[:, lo:hi, 0] = got[0], got[1]
            acc[..., :d] += got[2]
            acc[..., d] += got[3]
        out.append(acc)
    return da_all, dpq_all, out


def backward(
    lay: Layout,
    saved: tuple[Tensor, ...],
    dlogits: Tensor | None,
    per_domain: list[tuple[Tensor, Tensor, Tensor]],
) -> tuple[Tensor, Tensor, Tensor] | None:
    """(dz, dW [B, 1, d], db [B, 1]) from saved (p, r, q, da, dpq) [B, N, .] and, per domain,
    (dg [B, D] with the 1/n, L_w [B, 2, d], V_w [B, 2, d])."""
    z, weight = lay.z, lay.weight
    p_all, r_all, q_all, da_all, dpq_all = saved
    b, n_all, d = z.shape
    w = weight[:, 0]
    dz = torch.empty_like(z, memory_format=torch.contiguous_format)
    dw, dl_all = z.new_zeros(b, d), z.new_empty(b, n_all)
    rows = fused.chunk_rows(z)
    for e, (dg, lw, vw) in enumerate(per_domain):
        for lo, hi in lay.chunks(e, rows):
            got = fused.run(
                _backward_rows,
                z[:, lo:hi],
                p_all[:, lo:hi, 0],
                r_all[:, lo:hi, 0],
                q_all[:, lo:hi],
                da_all[:, lo:hi],
                dpq_all[:, lo:hi, 0],
                None if dlogits is None else dlogits[:, lo:hi, 0],
                w,
                lw,
                vw,
                dg,
                dz[:, lo:hi],
            )
            if got is None:
                return None
            dl_all[:, lo:hi] = got[0]
            dw += got[1]
    return dz, dw[:, None], dl_all.sum(1)[:, None]
