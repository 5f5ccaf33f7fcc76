"""Closed-form gradient and Hessian of a linear head under the mean cross-entropy loss.

The head is W in R^{C x (d+1)} (last column = bias), z~ = [z, 1], loss = (1/n) sum_i l_i.
Softmax cross-entropy (C >= 2), p_i = softmax(W z~_i), S_i = diag(p_i) - p_i p_i^T:
    gradient   G = (P - Y)^T Z~ / n                          [C, d+1]
    Hessian    H = (1/n) sum_i S_i (x) z~_i z~_i^T             [C(d+1), C(d+1)], index c*(d+1)+j
    diagonal   diag(H)_{cj} = (1/n) sum_i p_ic (1 - p_ic) z~_ij^2
Sigmoid binary cross-entropy (C = 1): the same with p_i = sigmoid(l_i) and S_i = p_i (1 - p_i).
Every function keeps the autograd graph to z and logits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgalign.curvature._checks import augment, check_z_logits, probabilities, targets

__all__ = [
    "head_gradient",
    "head_hessian",
    "head_hessian_diag",
    "head_per_sample_gradients",
]


def _with_bias(weight_part: Tensor, bias_part: Tensor) -> Tensor:
    """[A, b] for A [C, d] and b [C]: the head layout (bias last) without building [z, 1]."""
    return torch.cat([weight_part, bias_part[:, None]], 1)


def head_per_sample_gradients(z: Tensor, logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample gradients g_i = (p_i - y_i) z~_i^T of l_i w.r.t. the head, shape [n, C, d+1]."""
    z, logits = check_z_logits(z, logits)
    n, c = logits.shape
    residual = probabilities(logits) - targets(y, n, c, logits.dtype)
    return residual[:, :, None] * augment(z)[:, None, :]


def head_gradient(z: Tensor, logits: Tensor, y: Tensor) -> Tensor:
    """Mean-loss gradient w.r.t. the head: G = (P - Y)^T [z, 1] / n, shape [C, d+1]."""
    z, logits = check_z_logits(z, logits)
    n, c = logits.shape
    residual = probabilities(logits) - targets(y, n, c, logits.dtype)
    return _with_bias(residual.T @ z, residual.sum(0)) / n


def head_hessian_diag(z: Tensor, logits: Tensor) -> Tensor:
    """Exact Hessian diagonal, shape [C, d+1]: (1/n) sum_i p_ic (1 - p_ic) z~_ij^2."""
    z, logits = check_z_logits(z, logits)
    p = probabilities(logits)
    s = p * (1 - p)
    return _with_bias(s.T @ z.square(), s.sum(0)) / z.shape[0]


def head_hessian(z: Tensor, logits: Tensor) -> Tensor:
    """Full head Hessian (1/n) sum_i S_i (x) z~_i z~_i^T, shape [C(d+1), C(d+1)].

    Rows and columns are ordered (class, feature), i.e. index c*(d+1) + j, the row-major
    flattening of the [C, d+1] head. For softmax this is
    blockdiag_c(Z~^T diag(p_c) Z~) / n - Q^T Q / n with Q_i = vec(p_i z~_i^T); memory
    O((C(d+1))^2 + n C (d+1)).
    """
    z, logits = check_z_logits(z, logits)
    n, c = logits.shape
    p = probabilities(logits)
    if c == 1:  # [[Z^T S Z, Z^T s], [s^T Z, sum s]] without building Z~ = [Z, 1]
        s = p * (1 - p)
        zs = z * s
        col = zs.sum(0)
        corner = torch.cat([col, s.sum(0)])[None, :]
        return torch.cat([torch.cat([zs.T @ z, col[:, None]], 1), corner], 0) / n
    zt = augment(z)
    blocks = (p.T[:, :, None] * zt[None, :, :]).transpose(1, 2) @ zt  # [C, d+1, d+1]
    q = (p[:, :, None] * zt[:, None, :]).reshape(n, -1)  # [n, C(d+1)]
    return (torch.block_diag(*blocks.unbind(0)) - q.T @ q) / n
