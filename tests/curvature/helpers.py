"""Helpers shared by the curvature tests (tests/curvature) and the Hessian-penalty algorithm
tests (tests/algorithms/test_cma.py, test_hessian.py): random float64 heads, features and
labels, and reference losses, gradients and Hessians by autograd on an explicit [C, d+1] head
(bias column last). Import as `from tests.curvature.helpers import ...`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.functional import hessian, jacobian

from dgalign.curvature.risk import mean_loss as head_loss

CS = (1, 2, 7)  # numbers of logits: one (binary cross-entropy), two, several
DS = (1, 5, 16)  # feature widths


def make_domains(
    c: int,
    d: int,
    ns: Sequence[int],
    seed: int = 0,
    scale: float = 0.7,
    shift: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Head W [C, d+1] (`scale` * normal, random bias column) and, per domain e, features
    z_e [n_e, d] (normal, mean shifted by `shift` * e) and labels (0/1 in `dtype` for one logit,
    class indices otherwise), all drawn from one generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(c, d + 1, generator=g, dtype=dtype)
    zs, ys = [], []
    for e, n in enumerate(ns):
        zs.append(torch.randn(n, d, generator=g, dtype=dtype) + shift * e)
        y = torch.randint(0, 2 if c == 1 else c, (n,), generator=g)
        ys.append(y.to(dtype) if c == 1 else y)
    return w, zs, ys


def make_case(
    c: int, d: int, n: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One domain: head W [C, d+1] (0.5 * normal), features z [n, d] and labels."""
    w, (z,), (y,) = make_domains(c, d, (n,), seed, scale=0.5, dtype=dtype)
    return w, z, y


def label_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, or binary cross-entropy (0/1 labels) for one logit, by torch.nn."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.reshape(-1).to(logits.dtype))
    return F.cross_entropy(logits, y)


def ref_logits(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Logits z W[:, :-1]^T + W[:, -1] of the explicit head."""
    return z @ w[:, :-1].T + w[:, -1]


def ref_loss(w: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`label_loss` of the explicit head W [C, d+1]."""
    return label_loss(ref_logits(w, z), y)


def split_loss(
    weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """`label_loss` of the head given as weight [C, d] and bias [C]."""
    return label_loss(z @ weight.T + bias, y)


def split_params(w: torch.Tensor) -> list[torch.Tensor]:
    """Weight [C, d] and bias [C] of W as separate leaves (two parameter tensors)."""
    return [w[:, :-1].clone().requires_grad_(), w[:, -1].clone().requires_grad_()]


def ref_hessian(
    w: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None, create_graph: bool = False
) -> torch.Tensor:
    """Autograd Hessian of `ref_loss` w.r.t. the row-major flattening of W; labels `y` default
    to zeros (the Hessian of (B)CE w.r.t. the head does not depend on them)."""
    if y is None:
        y = torch.zeros(z.shape[0], dtype=torch.long)

    def f(flat: torch.Tensor) -> torch.Tensor:
        return ref_loss(flat.view_as(w), z, y)

    return hessian(f, w.reshape(-1), create_graph=create_graph)


def explicit(
    w: torch.Tensor, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient and Hessian of the library's `head_loss` w.r.t. vec(W) (row-major) by
    torch.autograd.functional, at fixed (detached) features."""
    c = w.shape[0]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        m = theta.reshape(c, -1)
        return head_loss(z.detach() @ m[:, :-1].T + m[:, -1], y)

    theta = w.reshape(-1)
    return jacobian(loss, theta), hessian(loss, theta)
