"""Per-domain moments of a linear head in one autograd node, closed form both ways.

`head_moments(z, weight, bias, y, sizes, square=..., hessian=...)` returns the logits and, for
every domain e (n = n_e rows, Z~ = [Z, 1], notation of `_head`):
    G_e = (1/n) R^T Z~                          [..., E, C, D]   gradient of the domain's mean loss
    Q_e = (1/n) U^T (Z~ * Z~)                   [..., E, C, D]   U = s: diag H_e ("hessian_diag");
                                                     U = r * r: second moment of the per-sample
                                                     gradients ("gradient_square")
    H_e = (1/n) sum_i S_i (x) z~_i z~_i^T       [..., E, CD, CD] the head Hessian, index c D + j
Backward, given dl = dL/dlogits, A = dL/dQ_e, B = dL/dG_e, Gam = sym(dL/dH_e) (each / n):
    dZ~ += R B + 2 Z~ * (U A) + 2 sum_{c,c'} S_cc' (Z~ Gam_cc')          (rows of domain e)
    dp  += Z~ B^T + U'(Z~^2 A^T) + d/dp sum_i <S_i, M_i>,   M_i[c,c'] = z~_i^T Gam_cc' z~_i
    dl_total = dl + J_p^T dp,   dW~ = dl_total^T Z~,   dZ = dl_total W + (the dZ~ terms)[:, :d]
so the head's own backward (dl W, dW) and the penalty's share one pass over the features, and
p, r, s and the logits are computed once per chunk of rows. On the CPU the rows go in chunks
that fit in cache (`_head.CHUNK_ELEMENTS`), so each pass reads z from memory once. With fused
kernels (`fused`) the one-logit backward runs as one compiled body per chunk, and the forward's
column sums G and Q (a square, no Hessian) as one compiled pass per domain (`_fused_moments`).
The head Hessian's symmetric products go through BLAS's syrk where torch's MKL has it
(`_syrk`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dgalign.curvature import _fused_moments as _fused
from dgalign.curvature import _syrk, fused
from dgalign.curvature._head import (
    Layout,
    add_left_product,
    augmented,
    head_rows,
    layout,
    logit_vjp,
    with_bias,
)

SQUARES = ("hessian_diag", "gradient_square")


def _square_weights(kind: str, p: Tensor, r: Tensor, out: Tensor) -> Tensor:
    """U = p (1 - p) = p - p p, or r * r, written into `out`."""
    if kind == "hessian_diag":
        return torch.addcmul(p, p, p, value=-1, out=out)
    return torch.mul(r, r, out=out)


def _square_vjp(kind: str, p: Tensor, r: Tensor, du: Tensor) -> Tensor:
    """dL/dp from dL/dU, U = p (1 - p) or r * r (r = p - y)."""
    return du * (1 - 2 * p) if kind == "hessian_diag" else 2 * r * du


#: without BLAS's syrk (`_syrk`), X^T X runs over this many column blocks, upper ones only
#: (6 of 9 block products: 2/3 of a full product)
SYRK_BLOCKS = 3

#: whether `syrk_` calls BLAS's syrk (half a product's FLOPs) on CPU operands that take it;
#: None: `_syrk.available()`, decided at the first call (not at import: its self-check runs
#: BLAS, whose thread pool a process must not start before it forks workers)
USE_BLAS_SYRK: bool | None = None


def use_blas_syrk() -> bool:
    """`USE_BLAS_SYRK`, deciding it on the first call."""
    global USE_BLAS_SYRK
    if USE_BLAS_SYRK is None:
        USE_BLAS_SYRK = _syrk.available()
    return USE_BLAS_SYRK


def _blocks(width: int) -> list[slice]:
    k = max(1, min(SYRK_BLOCKS, width // 32))
    edges = [round(i * width / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def syrk_(h: Tensor, x: Tensor, alpha: float = 1.0, blas: bool | None = None) -> None:
    """h [B, n, n] += alpha X^T X for x [B, k, n], on and above the diagonal at least;
    `mirror_` fills the rest once all products are added. Through BLAS's syrk per matrix
    (`blas`, default `use_blas_syrk()`; MKL has no batched syrk) or else the upper blocks of
    `_blocks`."""
    blas = use_blas_syrk() if blas is None else blas
    if blas and all(_syrk.supports(hb, xb) for hb, xb in zip(h, x, strict=True)):
        for hb, xb in zip(h, x, strict=True):
            _syrk.syrk_upper_(hb, xb, alpha)
        return
    cols = _blocks(x.shape[-1])
    for i, a in enumerate(cols):
        for b in cols[i:]:
            h[:, a, b].baddbmm_(x[:, :, a].mT, x[:, :, b], alpha=alpha)


def mirror_(h: Tensor) -> None:
    """Copy the strict upper triangle of h [..., n, n] (see `syrk_`) to the lower one."""
    h.copy_(h.triu() + h.triu(1).mT)


def _hessian_chunk_one_logit(h: Tensor, zc: Tensor, p: Tensor, buf: Tensor) -> None:
    """Add Z~^T diag(s) Z~ of the chunk to h [B, D, D] (upper triangle at least) as X^T X,
    X = sqrt(s) Z~ written into `buf` [B, >= rows, D]: one symmetric product, the bias row
    Z^T s and the corner sum s included."""
    rows, d = zc.shape[1], zc.shape[2]
    root = (p * (1 - p)).sqrt_()
    x = buf[:, :rows, : d + 1]
    torch.mul(zc, root, out=x[..., :d])
    x[..., d:].copy_(root)
    syrk_(h, x)


def _hessian_chunk(h: Tensor, blocks: Tensor, zt: Tensor, p: Tensor, buf: Tensor) -> None:
    """Add sum_i S_i (x) z~_i z~_i^T of the chunk to h [B, CD, CD] for C >= 2 (without the
    1/n; on and above the diagonal only, `mirror_` completes it):
    blockdiag_c(Z~^T diag(p_c) Z~) - X^T X with X_i = p_i (x) z~_i, the block-diagonal part
    accumulated in full in `blocks` [B, CD, D]."""
    b, rows, width = zt.shape
    c = p.shape[-1]
    x = torch.mul(p[..., :, None], zt[..., None, :], out=buf[:, :rows].view(b, rows, c, width))
    x = x.view(b, rows, c * width)
    syrk_(h, x, alpha=-1)
    blocks.baddbmm_(x.mT, zt)


def _place_blocks(h: Tensor, blocks: Tensor, c: int, width: int) -> None:
    for k in range(c):
        sl = slice(k * width, (k + 1) * width)
        h[:, sl, sl] += blocks[:, sl]


def _hessian_chunk_vjp_one_logit(
    gam: Tensor, zc: Tensor, p: Tensor, out: Tensor
) -> tuple[Tensor, Tensor]:
    """(dL/dp [B, rows, 1], dL/dZ [B, rows, d]) of <Gam, Z~^T diag(s) Z~> for a symmetric Gam
    [B, D, D] (1/n folded in), without building Z~: Y = Z Gam_zz + Gam_bz = (Gam z~)[:d],
    z~^T Gam z~ = z . Y + z . Gam_zb + Gam_bb, dZ = 2 s Y (written into `out` [B, rows, d])."""
    d = zc.shape[2]
    g_zb = gam[:, :d, d]
    y = torch.baddbmm(g_zb[:, None, :], zc, gam[:, :d, :d], out=out)
    quad = torch.linalg.vecdot(y, zc) + (zc @ g_zb[..., None])[..., 0] + gam[:, d, d][:, None]
    s = p * (1 - p)
    return quad[..., None] * (1 - 2 * p), y.mul_(2 * s)


def _hessian_chunk_vjp(gam: Tensor, zt: Tensor, p: Tensor, buf: Tensor) -> tuple[Tensor, Tensor]:
    """(dL/dp [B, rows, C], dL/dZ~ [B, rows, D]) of <Gam, sum_i S_i (x) z~_i z~_i^T> for a
    symmetric Gam [B, CD, CD] (the 1/n folded into Gam), C >= 2."""
    b, rows, width = zt.shape
    c = p.shape[-1]
    # w[i, c, c', j] = sum_j' z~_ij' Gam[(c, j), (c', j')]
    g = gam.view(b, c, width, c, width).permute(0, 4, 1, 3, 2).reshape(b, width, c * c * width)
    w = torch.bmm(zt, g, out=buf[:, :rows].view(b, rows, c * c * width))
    w = w.view(b, rows, c, c, width)
    m = torch.linalg.vecdot(w, zt[:, :, None, None, :])  # [B, rows, C, C]
    dp = torch.diagonal(m, dim1=-2, dim2=-1) - 2 * (m @ p[..., None])[..., 0]
    s = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    dzt = 2 * torch.matmul(s.reshape(b, rows, 1, c * c), w.view(b, rows, c * c, width))[:, :, 0]
    return dp, dzt


def _domain_column_sums(
    lay: Layout, e: int, square: str, logits: Tensor, p: Tensor, r: Tensor, u: Tensor
) -> tuple[Tensor, Tensor] | None:
    """Domain e's (r^T z, u^T (z * z)) [B, 1, d], one logit: the logits, p, r and u of its
    rows written into the [B, N, 1] outputs, the sums by one compiled pass
    (`_fused_moments.column_sums`); None if the compiler failed."""
    start, stop = lay.bounds[e]
    view = slice(None), slice(start, stop)
    zc = lay.z[view]
    _, pc, rc = head_rows(zc, lay.weight, lay.bias, lay.y[view], logits[view], p[view], r[view])
    return _fused.column_sums(zc, rc, _square_weights(square, pc, rc, u[view]))


def _write(
    dz: Tensor,
    lo: int,
    hi: int,
    left: Tensor,
    rhs: Tensor,
    extra: Tensor | None,
    in_dz: bool = False,
) -> None:
    """dz[:, lo:hi] = extra + left @ rhs, straight into dz where the slice is contiguous;
    `in_dz`: `extra` already lies in those rows of dz (written there by `_Moments.backward`)."""
    if dz.shape[0] == 1:  # one restart: the row slice is contiguous
        out = dz[:, lo:hi]
        if extra is None:
            torch.bmm(left, rhs, out=out)
        else:
            if not in_dz:
                out.copy_(extra)
            out.baddbmm_(left, rhs)
    elif extra is None:
        dz[:, lo:hi] = torch.bmm(left, rhs)
    else:
        dz[:, lo:hi] = torch.baddbmm(extra, left, rhs)


class _Moments(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weight, bias, y, bounds, square, hessian):
        b, n_all, d = z.shape
        c, width = weight.shape[1], d + 1
        lay = Layout(z, weight, bias, y, bounds, ())
        hsize = c * width
        rows = lay.rows(width if c == 1 else max(width, 2 * hsize))
        logits = z.new_empty(b, n_all, c)
        p_all, r_all = torch.empty_like(logits), torch.empty_like(logits)
        u_all = torch.empty_like(logits) if square else None
        buf = None  # the chunks' squares or scaled rows, allocated when the chunk loop runs
        tbuf = z.new_empty(b, min(rows, n_all), width) if hessian and c > 1 else None
        grads, squares, hessians = [], [], []
        sums = c == 1 and square is not None and not hessian and fused.enabled(z)
        for e, (start, stop) in enumerate(bounds):
            n = stop - start
            got = _domain_column_sums(lay, e, square, logits, p_all, r_all, u_all) if sums else None
            gw, qw = (
                got if got else (z.new_zeros(b, c, d), z.new_zeros(b, c, d) if square else None)
            )
            if not got and buf is None and (square or hessian):
                buf = z.new_empty(b, min(rows, n_all), max(width, hsize))
            h = z.new_zeros(b, hsize, hsize) if hessian else None
            blocks = z.new_zeros(b, hsize, width) if hessian and c > 1 else None
            for lo, hi in () if got else lay.chunks(e, rows):
                zc = z[:, lo:hi]
                view = slice(None), slice(lo, hi)
                _, pc, rc = head_rows(
                    zc, weight, bias, y[view], logits[view], p_all[view], r_all[view]
                )
                add_left_product(gw, rc, zc)
                if square:
                    uc = _square_weights(square, pc, rc, u_all[view])
                    sq = torch.mul(zc, zc, out=buf[:, : hi - lo, :d])
                    add_left_product(qw, uc, sq)
                if hessian and c == 1:
                    _hessian_chunk_one_logit(h, zc, pc, buf)
                elif hessian:
                    _hessian_chunk(h, blocks, augmented(zc, tbuf), pc, buf)
            grads.append(with_bias(gw, r_all[:, start:stop].sum(1)) / n)
            if square:
                squares.append(with_bias(qw, u_all[:, start:stop].sum(1)) / n)
            if hessian:
                mirror_(h)
                if c > 1:
                    _place_blocks(h, blocks, c, width)
                hessians.append(h / n)
        ctx.save_for_backward(z, weight, p_all, r_all, u_all)
        ctx.bounds, ctx.square, ctx.hessian, ctx.rows = bounds, square, hessian, rows
        ctx.set_materialize_grads(False)
        outs = [logits, torch.stack(grads, 1)]
        if square:
            outs.append(torch.stack(squares, 1))
        if hessian:
            outs.append(torch.stack(hessians, 1))
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, dlogits, dgrad, *rest):
        z, weight, p_all, r_all, u_all = ctx.saved_tensors
        square, hessian, bounds = ctx.square, ctx.hessian, ctx.bounds
        dsq = rest[0] if square else None
        dhess = rest[-1] if hessian else None
        b, n_all, d = z.shape
        c, width = weight.shape[1], d + 1
        lay = Layout(z, weight, None, None, bounds, ())
        rows = ctx.rows
        if c == 1 and (square or hessian) and fused.enabled(z):  # compiled row passes
            saved = (z, weight, p_all, r_all, u_all)
            got = _fused.backward(lay, saved, square, (dlogits, dgrad, dsq, dhess))
            if got is not None:
                return (*got, None, None, None, None)
        dz = torch.empty_like(z, memory_format=torch.contiguous_format)
        dw = torch.zeros_like(weight)
        dl_all = torch.empty_like(p_all)
        buf = z.new_empty(b, min(rows, n_all), max(width, c * c * width)) if hessian else None
        tbuf = z.new_empty(b, min(rows, n_all), width) if hessian and c > 1 else None
        sbuf = z.new_empty(b, min(rows, n_all), d) if dsq is not None else None
        for e, (start, stop) in enumerate(bounds):
            n = stop - start
            dg = dgrad[:, e] / n if dgrad is not None else None
            dq = dsq[:, e] / n if dsq is not None else None
            gam = None
            if dhess is not None:
                gam = (dhess[:, e] + dhess[:, e].mT) / (2 * n)
            rhs = weight if dg is None else torch.cat([weight, dg[..., :d]], 1)
            for lo, hi in lay.chunks(e, rows):
                zc, pc, rc = z[:, lo:hi], p_all[:, lo:hi], r_all[:, lo:hi]
                dp = None
                extra = None
                in_dz = False  # whether `extra` was written straight into dz's rows
                # the penalty's dZ terms go straight into dz's rows when they are contiguous
                target = dz[:, lo:hi] if b == 1 else None
                if dg is not None:
                    dp = torch.baddbmm(dg[:, None, :, d], zc, dg[..., :d].mT)
                if dq is not None:
                    uc = u_all[:, lo:hi]
                    sq = torch.mul(zc, zc, out=sbuf[:, : hi - lo])
                    du = torch.baddbmm(dq[:, None, :, d], sq, dq[..., :d].mT)
                    part = _square_vjp(square, pc, rc, du)
                    dp = part if dp is None else dp + part
                    out = sq if target is None else target
                    extra = torch.bmm(uc, 2 * dq[..., :d], out=out).mul_(zc)
                    in_dz = target is not None
                if gam is not None:
                    if c == 1:
                        out = buf[:, : hi - lo, :d]
                        if extra is None and target is not None:
                            out, in_dz = target, True
                        part, dzt = _hessian_chunk_vjp_one_logit(gam, zc, pc, out)
                    else:
                        part, dzt = _hessian_chunk_vjp(gam, augmented(zc, tbuf), pc, buf)
                    dp = part if dp is None else dp + part
                    extra = dzt[..., :d] if extra is None else extra.add_(dzt[..., :d])
                dl = dlogits[:, lo:hi] if dlogits is not None else None
                if dp is not None:
                    part = logit_vjp(pc, dp)
                    dl = part if dl is None else dl + part
                if dl is None:
                    dl = torch.zeros_like(pc)
                dl_all[:, lo:hi] = dl
                add_left_product(dw, dl, zc)
                left = dl if dg is None else torch.cat([dl, rc], -1)
                _write(dz, lo, hi, left, rhs, extra, in_dz)
        return dz, dw, dl_all.sum(1), None, None, None, None


def head_moments(
    z: Tensor,
    weight: Tensor,
    bias: Tensor,
    y: Tensor,
    sizes: Sequence[int],
    square: str | None = None,
    hessian: bool = False,
) -> tuple[Tensor, ...]:
    """(logits, G[, Q][, H]) of the module docstring for z [..., N, d], weight [..., C, d],
    bias [..., C], labels y [..., N], domains of `sizes` rows; differentiable w.r.t. z, weight
    and bias by the closed-form backward. `square`: None, "hessian_diag" or "gradient_square";
    `hessian`: also the full per-domain head Hessians (memory (C (d + 1))^2 per domain)."""
    if square is not None and square not in SQUARES:
        raise ValueError(f"square must be one of {SQUARES} or None, got {square!r}")
    lay = layout(z, weight, bias, y, sizes)
    with torch.autocast(lay.z.device.type, enabled=False):
        outs = _Moments.apply(lay.z, lay.weight, lay.bias, lay.y, lay.bounds, square, bool(hessian))
    return tuple(lay.out(t) for t in outs)
