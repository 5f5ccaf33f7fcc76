"""Frobenius inner products of head Hessians without building them (the Gram form).

For two sets with head Hessians H_1, H_2 (see `head.py`):
    <H_1, H_2> = (1/(n1 n2)) sum_{i,j} tr(S_i S_j) (z~_i . z~_j)^2,
    tr(S_i S_j) = p_i.p_j - sum_k p_ik p_jk^2 - sum_k p_ik^2 p_jk + (p_i.p_j)^2   (softmax),
    tr(S_i S_j) = s_i s_j with s = p (1 - p)                                    (sigmoid).
More generally every quantity below is a quadratic form sum_{i,j} w_i w_j tr(S_i S_j) K_ij over
one pooled set with per-sample weights w (1/n for a mean, negative for a difference), so
||H_1 - H_2||_F^2 and ||mean_e H_e||_F^2 each take one pass. Each term is a matrix product:
O(n1 n2 (C + d)) time, and O(chunk x n2) memory in chunks of rows of set 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from dgalign.curvature._checks import (
    augment,
    check_sets,
    check_z_logits,
    probabilities,
)
from dgalign.curvature.head import head_hessian, head_hessian_diag

__all__ = [
    "head_hessian_distance",
    "head_hessian_inner",
    "head_hessian_offdiag_sq_norm",
    "head_hessian_offdiag_sq_norm_of_mean",
    "head_hessian_sq_norm",
]

#: default number of n1 x n2 matrix entries per chunk (about 64 MB per float32 temporary)
CHUNK_ELEMENTS = 1 << 24
#: the "auto" method never materializes Hessians with more entries than this
FULL_MAX_ELEMENTS = 1 << 26
_METHODS = ("auto", "full", "gram")


def _pair_kernel(zt1: Tensor, p1: Tensor, zt2: Tensor, p2: Tensor) -> Tensor:
    """Matrix tr(S_i S_j) (z~_i . z~_j)^2 for rows i of set 1 and j of set 2."""
    gram = zt1 @ zt2.T
    if p1.shape[1] == 1:
        s1, s2 = p1 * (1 - p1), p2 * (1 - p2)
        return (s1 @ s2.T) * gram.square()
    pp = p1 @ p2.T
    cross = torch.cat([p1, p1.square()], 1) @ torch.cat([p2.square(), p2], 1).T
    return (pp + pp.square() - cross) * gram.square()


def _block(zt1: Tensor, p1: Tensor, w1: Tensor, zt2: Tensor, p2: Tensor, w2: Tensor) -> Tensor:
    return w1 @ _pair_kernel(zt1, p1, zt2, p2) @ w2


def _sym_block(zt1: Tensor, p1: Tensor, w1: Tensor, zt2: Tensor, p2: Tensor, w2: Tensor) -> Tensor:
    """Upper block row of a symmetric form; set 2 starts with the rows of set 1."""
    kernel = _pair_kernel(zt1, p1, zt2, p2)
    rows = zt1.shape[0]
    return 2 * (w1 @ kernel @ w2) - w1 @ kernel[:, :rows] @ w1


def _chunk_rows(n2: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // max(n2, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    return int(chunk_size)


def _quadratic(
    zt1: Tensor,
    p1: Tensor,
    w1: Tensor,
    zt2: Tensor | None = None,
    p2: Tensor | None = None,
    w2: Tensor | None = None,
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """sum_{i,j} w1_i w2_j tr(S_i S_j) (z~_i . z~_j)^2, chunked over rows of set 1.

    With no second set the form is symmetric and only blocks on or above the diagonal are
    computed (off-diagonal blocks count twice), which halves the work.
    """
    symmetric = zt2 is None
    if symmetric:
        zt2, p2, w2 = zt1, p1, w1
    n1, n2 = zt1.shape[0], zt2.shape[0]
    rows = _chunk_rows(n2, chunk_size)
    use_ckpt = checkpoint and torch.is_grad_enabled()
    fn = _sym_block if symmetric else _block
    total = zt1.new_zeros(())
    for a in range(0, n1, rows):
        b = min(a + rows, n1)
        c0 = a if symmetric else 0
        args = (zt1[a:b], p1[a:b], w1[a:b], zt2[c0:], p2[c0:], w2[c0:])
        total = total + (_checkpoint(fn, *args, use_reentrant=False) if use_ckpt else fn(*args))
    return total


def _prepare(z: Tensor, logits: Tensor, weight: float) -> tuple[Tensor, Tensor, Tensor]:
    zt = augment(z)
    return zt, probabilities(logits), zt.new_full((zt.shape[0],), weight)


def head_hessian_inner(
    z1: Tensor,
    logits1: Tensor,
    z2: Tensor,
    logits2: Tensor,
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """<H_1, H_2>_F = (1/(n1 n2)) sum_{i,j} tr(S_i S_j) (z~_i . z~_j)^2, without building H.

    `chunk_size` rows of set 1 are processed at a time (default: about 2^24 / n2 rows). With
    `checkpoint=True` each chunk is recomputed during backward instead of keeping its
    intermediates, so memory stays bounded under autograd too (costs one extra forward).
    """
    (z1, logits1), (z2, logits2) = check_sets([z1, z2], [logits1, logits2], first=1)
    a = _prepare(z1, logits1, 1.0 / z1.shape[0])
    b = _prepare(z2, logits2, 1.0 / z2.shape[0])
    return _quadratic(*a, *b, chunk_size=chunk_size, checkpoint=checkpoint)


def _choose(method: str, ns: Sequence[int], num_logits: int, d: int) -> str:
    """Pick "full" or "gram" from rough FLOP counts; "auto" never builds a huge Hessian.

    full: building each Hessian costs n (C(d+1))^2 ((d+1)^2 for one logit); gram: the pooled
    quadratic form costs (sum n)^2 (d + 2C + 6) / 2 (symmetric blocks only).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method != "auto":
        return method
    size = num_logits * (d + 1)
    if size * size > FULL_MAX_ELEMENTS:
        return "gram"
    per_sample = (d + 1) ** 2 if num_logits == 1 else size * size
    full_cost = sum(ns) * per_sample + len(ns) * size * size
    gram_cost = sum(ns) ** 2 * (d + 2 * num_logits + 6) / 2
    return "full" if full_cost <= gram_cost else "gram"


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(max(x, 0)) whose gradient is 0 (not NaN) where x <= 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _offdiag_sq(h: Tensor) -> Tensor:
    return h.square().sum() - torch.diagonal(h).square().sum()


def head_hessian_sq_norm(
    z: Tensor,
    logits: Tensor,
    method: str = "auto",
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """||H||_F^2 = <H, H>, from the Gram form or (method="full") the built Hessian."""
    z, logits = check_z_logits(z, logits)
    if _choose(method, [z.shape[0]], logits.shape[1], z.shape[1]) == "full":
        return head_hessian(z, logits).square().sum()
    return _quadratic(
        *_prepare(z, logits, 1.0 / z.shape[0]), chunk_size=chunk_size, checkpoint=checkpoint
    )


def head_hessian_distance(
    z1: Tensor,
    logits1: Tensor,
    z2: Tensor,
    logits2: Tensor,
    method: str = "auto",
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """||H_1 - H_2||_F = sqrt(max(<H1,H1> - 2<H1,H2> + <H2,H2>, 0)).

    "gram" evaluates the whole expression as one quadratic form over the pooled samples with
    weights +1/n1 and -1/n2; "full" builds both Hessians; "auto" picks the cheaper one.
    """
    (z1, logits1), (z2, logits2) = check_sets([z1, z2], [logits1, logits2], first=1)
    n1, n2 = z1.shape[0], z2.shape[0]
    if _choose(method, [n1, n2], logits1.shape[1], z1.shape[1]) == "full":
        sq = (head_hessian(z1, logits1) - head_hessian(z2, logits2)).square().sum()
        return _safe_sqrt(sq)
    zt1, p1, w1 = _prepare(z1, logits1, 1.0 / n1)
    zt2, p2, w2 = _prepare(z2, logits2, -1.0 / n2)
    pooled = (torch.cat([zt1, zt2]), torch.cat([p1, p2]), torch.cat([w1, w2]))
    return _safe_sqrt(_quadratic(*pooled, chunk_size=chunk_size, checkpoint=checkpoint))


def head_hessian_offdiag_sq_norm(
    z: Tensor,
    logits: Tensor,
    method: str = "auto",
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """Squared off-diagonal Frobenius norm ||H||_F^2 - ||diag H||^2.

    "gram" (never builds H) or "full"; "auto" picks the cheaper, like `head_hessian_distance`.
    """
    return head_hessian_offdiag_sq_norm_of_mean([z], [logits], method, chunk_size, checkpoint)


def head_hessian_offdiag_sq_norm_of_mean(
    zs: Sequence[Tensor],
    logits_list: Sequence[Tensor],
    method: str = "auto",
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """Squared off-diagonal Frobenius norm of H_mean = (1/E) sum_e H_e (equal-weight sets).

    ||H_mean||_F^2 = (1/E^2) sum_{e,f} <H_e, H_f> (one pooled quadratic form with weights
    1/(E n_e)) and diag(H_mean) = mean_e diag(H_e).
    """
    sets = check_sets(zs, logits_list)
    num_sets = len(sets)
    ns = [z.shape[0] for z, _ in sets]
    num_logits, d = sets[0][1].shape[1], sets[0][0].shape[1]
    if _choose(method, ns, num_logits, d) == "full":
        return _offdiag_sq(sum(head_hessian(z, lg) for z, lg in sets) / num_sets)
    parts = [_prepare(z, lg, 1.0 / (num_sets * z.shape[0])) for z, lg in sets]
    pooled = [torch.cat(list(col)) for col in zip(*parts, strict=True)]
    diag_mean = sum(head_hessian_diag(z, lg) for z, lg in sets) / num_sets
    return (
        _quadratic(*pooled, chunk_size=chunk_size, checkpoint=checkpoint) - diag_mean.square().sum()
    )
