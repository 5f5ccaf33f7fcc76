"""Kronecker-factored (K-FAC) approximation of a linear head's Hessian and its alignment penalty.

The exact head Hessian H = (1/n) sum_i S_i (x) z~_i z~_i^T (see `head.py`) is approximated by
the product of the means,
    H ~ A (x) B,    A = (1/n) sum_i S_i  [C x C],    B = (1/n) sum_i z~_i z~_i^T  [(d+1)^2],
exact when every S_i is the same, and the factors take O(C^2 + d^2) memory instead of
[C(d+1)]^2. Frobenius inner products factor, <A (x) B, A' (x) B'> = <A, A'> <B, B'>, and
    <B_1, B_2> = (1/(n1 n2)) sum_{i,j} (z~_i . z~_j)^2
needs no d x d matrix either, so the K x K Gram matrix of the domains' approximations
M_ef = <A_e, A_f> <B_e, B_f> costs O(n^2 d + n C^2), and the alignment penalty
    (1/K) sum_e ||A_e (x) B_e - mean_f A_f (x) B_f||_F^2 = (tr M - 1^T M 1 / K) / K.
Approximation error of one domain's Hessian, in Gram form as well:
    ||H - A (x) B||^2 = ||H||^2 - 2 <H, A (x) B> + ||A||^2 ||B||^2,
    <H, A (x) B> = (1/n) sum_i <S_i, A> z~_i^T B z~_i,  <S_i, A> = p_i . diag A - p_i^T A p_i,
    z~_i^T B z~_i = (1/n) sum_j (z~_i . z~_j)^2.
For one logit (sigmoid) S_i = s_i = p_i (1 - p_i) and A is the scalar mean of s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dgalign.curvature._checks import augment, check_sets, check_z_logits, probabilities
from dgalign.curvature.gram import head_hessian_inner, head_hessian_sq_norm

__all__ = [
    "kfac_factors",
    "kfac_gram",
    "kfac_hessian",
    "kfac_hessian_error",
    "kfac_penalty",
    "kfac_penalty_error",
]


def _mean_s(p: Tensor) -> Tensor:
    """A = mean_i S_i: diag(mean p) - mean p p^T (softmax), [[mean p (1 - p)]] (sigmoid)."""
    if p.shape[1] == 1:
        return (p * (1 - p)).mean(0, keepdim=True)
    return torch.diag(p.mean(0)) - p.T @ p / p.shape[0]


def kfac_factors(z: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """(A, B): A = mean_i S_i [C, C], B = mean_i z~_i z~_i^T [d+1, d+1]."""
    z, logits = check_z_logits(z, logits)
    zt = augment(z)
    return _mean_s(probabilities(logits)), zt.T @ zt / z.shape[0]


def kfac_hessian(z: Tensor, logits: Tensor) -> Tensor:
    """A (x) B as a [C(d+1), C(d+1)] matrix, ordered like `head_hessian` (small heads only)."""
    a, b = kfac_factors(z, logits)
    return torch.kron(a, b)


def kfac_gram(zs: Sequence[Tensor], logits: Sequence[Tensor]) -> Tensor:
    """K x K matrix <A_e (x) B_e, A_f (x) B_f> = <A_e, A_f> <B_e, B_f>, without any B."""
    sets = check_sets(zs, logits)
    a = torch.stack([_mean_s(probabilities(lg)).reshape(-1) for _, lg in sets])
    zts = [augment(z) for z, _ in sets]
    k = len(sets)
    b_inner = torch.stack(
        [torch.stack([(zts[e] @ zts[f].T).square().mean() for f in range(k)]) for e in range(k)]
    )
    return (a @ a.T) * b_inner


def kfac_penalty(zs: Sequence[Tensor], logits: Sequence[Tensor]) -> Tensor:
    """(1/K) sum_e ||A_e (x) B_e - mean_f A_f (x) B_f||_F^2 from `kfac_gram`."""
    gram = kfac_gram(zs, logits)
    k = gram.shape[0]
    return (torch.diagonal(gram).sum() - gram.sum() / k) / k


def kfac_hessian_error(z: Tensor, logits: Tensor) -> Tensor:
    """Relative error ||H - A (x) B||_F / ||H||_F of one set, in Gram form (module docstring)."""
    z, logits = check_z_logits(z, logits)
    zt, p = augment(z), probabilities(logits)
    a = _mean_s(p)
    sq_kernel = (zt @ zt.T).square()
    quad_b = sq_kernel.mean(1)  # z~_i^T B z~_i
    if p.shape[1] == 1:
        inner_sa = (p * (1 - p))[:, 0] * a[0, 0]
    else:
        inner_sa = p @ torch.diagonal(a) - ((p @ a) * p).sum(1)
    cross = (inner_sa * quad_b).mean()
    h_sq = head_hessian_sq_norm(z, logits, method="gram")
    err_sq = h_sq - 2 * cross + a.square().sum() * sq_kernel.mean()
    return err_sq.clamp_min(0).sqrt() / h_sq.sqrt()


def kfac_penalty_error(zs: Sequence[Tensor], logits: Sequence[Tensor]) -> Tensor:
    """Relative error |P_kfac - P| / P of the alignment penalty against the exact one,
    P = (1/K) sum_e ||H_e - Hbar||_F^2 from the Gram form <H_e, H_f>."""
    sets = check_sets(zs, logits)
    k = len(sets)
    exact = torch.stack(
        [torch.stack([head_hessian_inner(*sets[e], *sets[f]) for f in range(k)]) for e in range(k)]
    )
    exact_penalty = (torch.diagonal(exact).sum() - exact.sum() / k) / k
    return (kfac_penalty(zs, logits) - exact_penalty).abs() / exact_penalty
