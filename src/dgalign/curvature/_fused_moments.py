"""Fused passes of `moments.head_moments` for one logit (C = 1), compiled by `fused.run`.

Forward, with a square and no Hessian (`column_sums`): per domain, G_w = r^T z and
Q_w = u^T (z * z) as one compiled pass of column sums over the domain's rows, in blocks of
rows (a sum over all rows at once compiled slower), instead of the eager squares and two
products (HessianDiag's kernel on the Colored MNIST shapes: 25.5 -> 20.9 ms per call,
docs/benchmarks.md).

Backward:

Per chunk of rows (z [B, R, d], head w [B, d], notation of `moments`; dg, dq, Gam already
divided by n; Y = z Gam_zz from BLAS when the Hessian is used):
    dp = z dg_w + dg_b + dU U'(p) + (z . (Y + 2 Gam_zb) + Gam_bb)(1 - 2 p),
    dU = (z * z) dq_w + dq_b,   dl = dlogits + s dp,   dw += dl^T z,
    dz = dl w + r dg_w + 2 u (dq_w * z) + 2 s (Y + Gam_zb),
one compiled body (a loop for the row sums, one writing dz straight into its rows) instead of
the eager code's separate squares, matrix-vector products and rank-1 and rank-2 updates; the
column sum dl^T z stays a BLAS product (`_head.add_left_product`), which ran faster than the
compiled one. None when the compiler failed (`fused.run`); `moments` then runs its eager code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgalign.curvature import fused
from dgalign.curvature._head import Layout, add_left_product

#: rows per block of the compiled column sums: a sum over each block, then over the blocks
SUM_BLOCK_ROWS = 64


def _column_sums(
    blocks: Tensor, rb: Tensor, ub: Tensor, rest: Tensor, r: Tensor, u: Tensor
) -> tuple[Tensor, Tensor]:
    """(r^T z, u^T (z * z)) [B, 1, d] from the rows in blocks (z [B, k, R, d], r and u
    [B, k, R, 1]: a sum over each block, then over the blocks) and the other rows (rest
    [B, m, d], r and u [B, m, 1])."""
    g = (rb * blocks).sum(2).sum(1, keepdim=True) + (r * rest).sum(1, keepdim=True)
    q = (ub * blocks * blocks).sum(2).sum(1, keepdim=True) + (u * rest * rest).sum(1, keepdim=True)
    return g, q


def column_sums(zc: Tensor, r: Tensor, u: Tensor) -> tuple[Tensor, Tensor] | None:
    """(r^T z, u^T (z * z)) [B, 1, d] for z [B, n, d], r and u [B, n, 1] by the compiled
    `_column_sums` over blocks of `SUM_BLOCK_ROWS` rows; None when the compiler failed."""
    b, n = zc.shape[:2]
    m = n // SUM_BLOCK_ROWS * SUM_BLOCK_ROWS

    def split(t: Tensor) -> tuple[Tensor, Tensor]:
        return t[:, :m].view(b, m // SUM_BLOCK_ROWS, SUM_BLOCK_ROWS, t.shape[-1]), t[:, m:]

    (blocks, rest), (rb, rr), (ub, ur) = split(zc), split(r), split(u)
    return fused.run(_column_sums, blocks, rb, ub, rest, rr, ur)


def _backward_rows(
    zc, p, r, u, yg, w, dg, dq, gam_zb, gam_bb, dlog, square: str | None, out: Tensor
) -> Tensor:
    """dl of a chunk; dz (module docstring) written into `out`."""
    s = p - p * p
    dp = torch.zeros_like(p)
    dz = torch.zeros_like(zc)
    if dg is not None:
        dp = dp + (zc * dg[:, None, :-1]).sum(-1) + dg[:, -1:]
        dz = dz + r[..., None] * dg[:, None, :-1]
    if dq is not None:
        du = (zc * zc * dq[:, None, :-1]).sum(-1) + dq[:, -1:]
        dp = dp + (du * (1 - 2 * p) if square == "hessian_diag" else 2 * r * du)
        dz = dz + (2 * u[..., None]) * dq[:, None, :-1] * zc
    if yg is not None:
        yy = yg + gam_zb[:, None, :]
        quad = (zc * (yy + gam_zb[:, None, :])).sum(-1) + gam_bb
        dp = dp + quad * (1 - 2 * p)
        dz = dz + (2 * s[..., None]) * yy
    dl = dp * s if dlog is None else dp * s + dlog
    out.copy_(dz + dl[..., None] * w[:, None, :])
    return dl


def backward(
    lay: Layout,
    saved: tuple[Tensor, ...],
    square: str | None,
    grads_in: tuple[Tensor | None, ...],
) -> tuple[Tensor, Tensor, Tensor] | None:
    """(dz, dW [B, 1, d], db [B, 1]) from saved (z, weight, p, r, u) and the output gradients
    (dlogits, dG, dQ, dH), any of them None."""
    z, weight, p_all, r_all, u_all = saved
    dlogits, dgrad, dsq, dhess = grads_in
    b, n_all, d = z.shape
    w = weight[:, 0]
    rows = fused.chunk_rows(z, dhess is not None)
    dz = torch.empty_like(z, memory_format=torch.contiguous_format)
    dw = z.new_zeros(b, 1, d)
    dl_all = z.new_empty(b, n_all)
    for e, (start, stop) in enumerate(lay.bounds):
        n = stop - start
        dg = dgrad[:, e, 0] / n if dgrad is not None else None
        dq = dsq[:, e, 0] / n if dsq is not None else None
        gam = gzb = gbb = None
        if dhess is not None:  # the bodies want contiguous vectors (a strided one is gathered)
            gam = (dhess[:, e] + dhess[:, e].mT) / (2 * n)
            gzb, gbb = gam[:, :d, d].contiguous(), gam[:, d, d:].contiguous()
        for lo, hi in lay.chunks(e, rows):
            zc = z[:, lo:hi]
            yg = None if gam is None else torch.bmm(zc, gam[:, :d, :d])
            got = fused.run(
                _backward_rows,
                zc,
                p_all[:, lo:hi, 0],
                r_all[:, lo:hi, 0],
                None if u_all is None else u_all[:, lo:hi, 0],
                yg,
                w,
                dg,
                dq,
                gzb,
                gbb,
                None if dlogits is None else dlogits[:, lo:hi, 0],
                square if dq is not None else None,
                dz[:, lo:hi],
            )
            if got is None:
                return None
            dl_all[:, lo:hi] = got
            add_left_product(dw, got[..., None], zc)  # BLAS: faster than a compiled column sum
    return dz, dw, dl_all.sum(1)[:, None]
