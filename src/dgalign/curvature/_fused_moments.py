"""Fused row passes of `moments.head_moments` for one logit (C = 1), compiled by `fused.run`.

Per chunk of rows (z [B, R, d], head w [B, d], b [B, 1], notation of `moments`), forward:
    l = z w + b,  p = sigmoid(l),  r = p - y,  G += [r^T z, sum r],
    Q += [u^T (z * z), sum u]  (u = p (1 - p) or r * r),   sz = s z with s = p (1 - p),
all in one compiled body (the syrk of the Hessian, z^T (s z), stays a BLAS product); backward,
with Y = z Gam_zz from BLAS when the Hessian is used and dg, dq, Gam already divided by n:
    dp = z dg_w + dg_b + dU U'(p) + (z . (Y + 2 Gam_zb) + Gam_bb)(1 - 2 p),
    dU = (z * z) dq_w + dq_b,   dl = dlogits + s dp,   dw += dl^T z,
    dz = dl w + r dg_w + 2 u (dq_w * z) + 2 s (Y + Gam_zb),
written straight into the rows of dz by the compiled body. The functions return None when the
compiler failed (`fused.run`); `moments` then runs its eager code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgalign.curvature import fused
from dgalign.curvature._head import Layout, mirror_, syrk_


def _forward_rows(zc, w, b, y, square: str | None, hessian: bool) -> tuple[Tensor, ...]:
    """(l, p, r, r^T z, sum r[, u, u^T z^2, sum u]) of a chunk; with `hessian` r^T z is None
    and X = [s z, s, r], sum s follow (z^T X holds Z^T S Z, Z^T s and r^T z)."""
    logit = (zc * w[:, None, :]).sum(-1) + b
    p = torch.sigmoid(logit)
    r = p - y
    gw = None if hessian else (r[..., None] * zc).sum(1)  # with the Hessian: from its product
    out = [logit, p, r, gw, r.sum(1)]
    if square is not None:
        u = p - p * p if square == "hessian_diag" else r * r
        out += [u, (u[..., None] * (zc * zc)).sum(1), u.sum(1)]
    if hessian:
        s = p - p * p
        out += [torch.cat([s[..., None] * zc, s[..., None], r[..., None]], -1), s.sum(1)]
    return tuple(out)


def _backward_rows(
    zc, p, r, u, yg, w, dg, dq, gam_zb, gam_bb, dlog, square: str | None, out: Tensor
) -> tuple[Tensor, Tensor]:
    """(dl, dl^T z) of a chunk; dz (module docstring) written into `out`."""
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
    return dl, (dl[..., None] * zc).sum(1)


def _assemble(zx: Tensor, ssum: Tensor) -> Tensor:
    """[[Z^T S Z, Z^T s], [s^T Z, sum s]] [B, D, D] from zx = z^T [s z, s, r] (mirrored)."""
    d = zx.shape[1]
    h = zx.new_empty(zx.shape[0], d + 1, d + 1)
    h[:, :d] = zx[:, :, : d + 1]
    h[:, d, :d] = zx[:, :, d]
    h[:, d, d] = ssum
    return h


def forward(lay: Layout, square: str | None, hessian: bool) -> tuple | None:
    """(logits, p, r, u, grads, squares, hessians) as `moments._Moments.forward` builds them
    (u None without `square`; squares, hessians [B, E, 1, D], [B, E, D, D] or None)."""
    z, w, bias, y = lay.z, lay.weight[:, 0], lay.bias, lay.y
    b, n_all, d = z.shape
    logits = z.new_empty(b, n_all, 1)
    p_all, r_all = torch.empty_like(logits), torch.empty_like(logits)
    u_all = torch.empty_like(logits) if square else None
    grads, squares, hessians = [], [], []
    rows = fused.chunk_rows(z, hessian)
    for e, (start, stop) in enumerate(lay.bounds):
        acc = [z.new_zeros(b, d + 1), z.new_zeros(b, d + 1)]
        zx = z.new_zeros(b, d, d + 2) if hessian else None  # z^T [s z, s, r]
        ssum = z.new_zeros(b)
        for lo, hi in lay.chunks(e, rows):
            zc = z[:, lo:hi]
            got = fused.run(_forward_rows, zc, w, bias, y[:, lo:hi], square, hessian)
            if got is None:
                return None
            for dst, src in zip((logits, p_all, r_all), got[:3], strict=True):
                dst[:, lo:hi, 0] = src
            if not hessian:
                acc[0][:, :d] += got[3]
            acc[0][:, d] += got[4]
            if square:
                u_all[:, lo:hi, 0] = got[5]
                acc[1][:, :d] += got[6]
                acc[1][:, d] += got[7]
            if hessian:
                syrk_(zx, zc, got[-2])
                ssum += got[-1]
        n = stop - start
        if hessian:
            mirror_(zx[:, :, :d])
            acc[0][:, :d] = zx[:, :, d + 1]
            hessians.append(_assemble(zx, ssum) / n)
        grads.append(acc[0][:, None] / n)
        squares.append(acc[1][:, None] / n)
    stack = torch.stack
    return (
        logits,
        p_all,
        r_all,
        u_all,
        stack(grads, 1),
        stack(squares, 1) if square else None,
        stack(hessians, 1) if hessian else None,
    )


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
    dw = z.new_zeros(b, d)
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
            dl_all[:, lo:hi] = got[0]
            dw += got[1]
    return dz, dw[:, None], dl_all.sum(1)[:, None]
