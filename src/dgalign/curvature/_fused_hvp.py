"""Fused last backward pass of `hvp.head_hgp` for one logit (C = 1), compiled by `fused.run`.

Per chunk of rows (z [B, R, d], head w [B, d], notation of `hvp`; the two vectors of each
domain are G_e and gbar, their adjoints L and the scaled S a and S lambda of the earlier
passes q, da [B, R, 2]; dg = dL/dG_e already divided by n):
    dp = z dg_w + dg_b + dpq,   dl = dlogits + s dp,   dw += dl^T z,
    dz = dl w + q L_w + da V_w + r dg_w   (a rank-6 update of the rows),
one compiled body (a loop for the row sum, one writing dz straight into its rows and summing
dl z) instead of the eager code's matrix-vector product, elementwise passes, concatenations
and rank-6 product. None when the compiler failed (`fused.run`); `hvp` then runs its eager
pass.
"""

from __future__ import annotations

from torch import Tensor

from dgalign.curvature import fused


def _last_rows(
    zc, p, r, q, da, dpq, dlog, w, dgw, dgb, lw, vw, out: Tensor
) -> tuple[Tensor, Tensor]:
    """(dl, dl^T z) of a chunk; dz (module docstring) written into `out`."""
    dp = (zc * dgw[:, None, :]).sum(-1) + dgb + dpq
    dl = dp * (p - p * p) if dlog is None else dp * (p - p * p) + dlog
    dz = (
        dl[..., None] * w[:, None, :]
        + r[..., None] * dgw[:, None, :]
        + q[..., 0, None] * lw[:, None, 0]
        + q[..., 1, None] * lw[:, None, 1]
        + da[..., 0, None] * vw[:, None, 0]
        + da[..., 1, None] * vw[:, None, 1]
    )
    out.copy_(dz)
    return dl, (dl[..., None] * zc).sum(1)


def last_pass(
    zc: Tensor,
    p: Tensor,
    r: Tensor,
    q: Tensor,
    da: Tensor,
    dpq: Tensor,
    dlog: Tensor | None,
    weight: Tensor,
    dg: Tensor,
    lw: Tensor,
    vw: Tensor,
    out: Tensor,
) -> tuple[Tensor, Tensor] | None:
    """(dl [B, R], dl^T z [B, d]) of one chunk, dz written into `out` [B, R, d]; inputs in
    `hvp._HGP.backward`'s layout for C = 1 (p, r, dpq, dlog [B, R, 1]; q, da [B, R, 2];
    weight [B, 1, d]; dg [B, 1, d + 1]; lw, vw [B, 2, d])."""
    d = zc.shape[-1]
    return fused.run(
        _last_rows,
        zc,
        p[..., 0],
        r[..., 0],
        q,
        da,
        dpq[..., 0],
        None if dlog is None else dlog[..., 0],
        weight[:, 0],
        dg[:, 0, :d].contiguous(),
        dg[:, 0, d:].contiguous(),
        lw,
        vw,
        out,
    )
