"""Third derivatives of a linear head's loss and their Frobenius inner products (Gram form).

Head W in R^{C x (d+1)} (bias last), z~ = [z, 1], u_i = W z~_i. The third derivative of the
mean loss (1/n) sum_i l(u_i) w.r.t. vec W (index c*(d+1) + j, as `head_hessian`) is
    T = (1/n) sum_i T(p_i) (x) z~_i (x) z~_i (x) z~_i,    T_{(a,j),(b,k),(c,l)} =
        (1/n) sum_i T_abc(p_i) z~_ij z~_ik z~_il,
with T(p) = d^3 l / du^3:
    softmax CE (C >= 2), p = softmax(u), S = diag(p) - p p^T, T_abc = dS_ab / du_c:
        T_abc = p_a [a=b=c] - p_a p_c [a=b] - p_a p_b [a=c] - p_a p_b [b=c] + 2 p_a p_b p_c;
    sigmoid BCE (C = 1), p = sigmoid(u): T = p (1 - p) (1 - 2p).
Frobenius inner products never need the [C(d+1)]^3 tensor:
    <T_1, T_2> = (1/(n1 n2)) sum_{i,j} <T(p_i), T(q_j)> (z~_i . z~_j)^3,
and with s_mn = sum_a p_a^m q_a^n (every s_mn is one matrix product over all pairs)
    <T(p), T(q)> = s11 - 3 (s12 + s21) + 2 (s13 + s31) + 3 s11^2 + 6 s22
                   - 6 s11 (s12 + s21) + 4 s11^3                            (softmax),
    <T(p), T(q)> = p(1-p)(1-2p) q(1-q)(1-2q)                               (sigmoid).
(Expand T = A - (B1 + B2 + B3) + 2 p(x)p(x)p, A the diagonal part and B_k the three terms
with one pair of equal indices: <A,A> = s11, <A,B_k> = s12, <A,ppp> = s13, <B_k,B_k> = s11^2,
<B_k,B_l> = s22 (k != l), <B_k,ppp> = s12 s11, <ppp,ppp> = s11^3.)
So the third-order alignment penalty (1/K) sum_e ||T_e - Tbar||_F^2 = (tr M - 1^T M 1 / K) / K,
M_ef = <T_e, T_f>, costs O(n^2 (C + d)) time and O(n^2) memory for n pooled samples, the same
as the Hessian's Gram form. Every function keeps the autograd graph to z and logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dgalign.curvature._checks import (
    augment,
    check_sets,
    check_z_logits,
    probabilities,
)

__all__ = [
    "head_third_derivative",
    "head_third_inner",
    "third_order_gram",
    "third_order_kernel",
    "third_order_penalty",
]


def _logit_third(p: Tensor) -> Tensor:
    """Per-sample T(p) [n, C, C, C] (softmax) or [n, 1, 1, 1] (sigmoid)."""
    if p.shape[1] == 1:
        return (p * (1 - p) * (1 - 2 * p))[:, :, None, None]
    c = p.shape[1]
    eye = torch.eye(c, dtype=p.dtype, device=p.device)
    diag3 = torch.einsum("ab,bc->abc", eye, eye)
    pa_pb = p[:, :, None] * p[:, None, :]
    t = p[:, :, None, None] * diag3
    t = t - eye[None, :, :, None] * pa_pb[:, :, None, :]  # p_a p_c [a = b]
    t = t - eye[None, :, None, :] * pa_pb[:, :, :, None]  # p_a p_b [a = c]
    t = t - eye[None, None, :, :] * pa_pb[:, :, :, None]  # p_a p_b [b = c]
    return t + 2 * pa_pb[:, :, :, None] * p[:, None, None, :]


def head_third_derivative(z: Tensor, logits: Tensor) -> Tensor:
    """The full third-derivative tensor of the mean loss w.r.t. vec W, [C(d+1)]^3 entries.

    A reference for small heads (tests); the penalties use the Gram form instead."""
    z, logits = check_z_logits(z, logits)
    zt = augment(z)
    t = _logit_third(probabilities(logits))
    size = logits.shape[1] * zt.shape[1]
    full = torch.einsum("iabc,ij,ik,il->ajbkcl", t, zt, zt, zt) / z.shape[0]
    return full.reshape(size, size, size)


def third_order_kernel(p1: Tensor, p2: Tensor) -> Tensor:
    """Matrix <T(p_i), T(q_j)> [n1, n2] for probability rows p_i of `p1` and q_j of `p2`."""
    if p1.shape[1] == 1:
        return (p1 * (1 - p1) * (1 - 2 * p1)) @ (p2 * (1 - p2) * (1 - 2 * p2)).T
    powers1 = torch.stack([p1, p1.square(), p1.pow(3)])
    powers2 = torch.stack([p2, p2.square(), p2.pow(3)])
    s = torch.einsum("mic,njc->mnij", powers1, powers2)  # s[m-1, n-1] = s_mn
    s11, s12, s21, s22 = s[0, 0], s[0, 1], s[1, 0], s[1, 1]
    cross = s12 + s21
    return (
        s11
        - 3 * cross
        + 2 * (s[0, 2] + s[2, 0])
        + 3 * s11.square()
        + 6 * s22
        - 6 * s11 * cross
        + 4 * s11.pow(3)
    )


def _pair_matrix(zt1: Tensor, p1: Tensor, zt2: Tensor, p2: Tensor) -> Tensor:
    """<T(p_i), T(q_j)> (z~_i . z~_j)^3 for all pairs."""
    return third_order_kernel(p1, p2) * (zt1 @ zt2.T).pow(3)


def head_third_inner(z1: Tensor, logits1: Tensor, z2: Tensor, logits2: Tensor) -> Tensor:
    """<T_1, T_2>_F = (1/(n1 n2)) sum_{i,j} <T(p_i), T(q_j)> (z~_i . z~_j)^3, without T."""
    (z1, logits1), (z2, logits2) = check_sets([z1, z2], [logits1, logits2], first=1)
    pairs = _pair_matrix(augment(z1), probabilities(logits1), augment(z2), probabilities(logits2))
    return pairs.mean()


def _pooled(zs: Sequence[Tensor], logits: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Pooled z~, p and the [n, K] matrix of domain weights 1/n_e (0 outside domain e)."""
    sets = check_sets(zs, logits)
    zt = augment(torch.cat([z for z, _ in sets]))
    p = probabilities(torch.cat([lg for _, lg in sets]))
    sizes = [z.shape[0] for z, _ in sets]
    owner = torch.repeat_interleave(torch.arange(len(sets), device=zt.device), torch.tensor(sizes))
    weights = torch.nn.functional.one_hot(owner, len(sets)).to(zt.dtype)
    weights = weights / torch.tensor(sizes, dtype=zt.dtype, device=zt.device)
    return zt, p, weights


def third_order_gram(zs: Sequence[Tensor], logits: Sequence[Tensor]) -> Tensor:
    """The K x K matrix M_ef = <T_e, T_f>_F of the domains' third-derivative tensors."""
    zt, p, weights = _pooled(zs, logits)
    return weights.T @ _pair_matrix(zt, p, zt, p) @ weights


def third_order_penalty(zs: Sequence[Tensor], logits: Sequence[Tensor]) -> Tensor:
    """(1/K) sum_e ||T_e - Tbar||_F^2 = (tr M - 1^T M 1 / K) / K, Tbar the plain mean."""
    gram = third_order_gram(zs, logits)
    k = gram.shape[0]
    return (torch.diagonal(gram).sum() - gram.sum() / k) / k
