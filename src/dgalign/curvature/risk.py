"""Risk-based penalties computed from the logits alone, in closed form (IRM, V-REx).

Logits l [..., N, C] of all domains (domain e = the next `sizes[e]` rows) and labels y
[..., N] (class indices, or 0/1 floats for one logit); the loss is the mean cross-entropy
(binary cross-entropy for one logit). IRMv1's dummy-scale gradient of a set of samples is
    d/ds L(s l) at s = 1 = (1/n) sum_i (p_i - y_i) . l_i,
a closed form (no double backward), so its gradient is plain autograd through p and l.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dgalign.curvature._head import probs, residual

IRM_FORMS = ("split_product", "squared")
VREX_FORMS = ("variance", "squared_difference")


def sample_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy [..., N]: logsumexp(l) - l_y, or softplus(l) - y l for one
    logit (written out: its double backward has vmap rules, unlike F.cross_entropy's)."""
    if logits.shape[-1] == 1:
        return F.softplus(logits[..., 0]) - y.to(logits.dtype) * logits[..., 0]
    return torch.logsumexp(logits, -1) - logits.gather(-1, y[..., None].long())[..., 0]


def mean_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over the samples, [...]."""
    return sample_losses(logits, y).mean(-1)


def domain_mean_losses(logits: Tensor, y: Tensor, sizes: Sequence[int]) -> Tensor:
    """Each domain's mean loss, [..., E]."""
    parts = sample_losses(logits, y).split(list(sizes), -1)
    return torch.stack([p.mean(-1) for p in parts], -1)


def dummy_scale_gradient(logits: Tensor, y: Tensor) -> Tensor:
    """d/ds of the mean loss of s * logits at s = 1: mean_i (p_i - y_i) . l_i, [...]."""
    r = residual(probs(logits), y.to(logits.dtype) if logits.shape[-1] == 1 else y)
    return (r * logits).sum(-1).mean(-1)


def irm_penalty(logits: Tensor, y: Tensor, sizes: Sequence[int], form: str = "split_product"):
    """IRMv1, mean over domains of: "split_product" the product of the dummy-scale gradients
    on the domain's even and odd samples (DomainBed's unbiased estimate), "squared" the square
    of the gradient on all its samples (the IRM paper's Colored MNIST script)."""
    if form not in IRM_FORMS:
        raise ValueError(f"IRM's penalty form must be one of {IRM_FORMS}, got {form!r}")
    per = []
    for lg, t in zip(logits.split(list(sizes), -2), y.split(list(sizes), -1), strict=True):
        if form == "squared":
            per.append(dummy_scale_gradient(lg, t).square())
        else:
            even = dummy_scale_gradient(lg[..., ::2, :], t[..., ::2])
            odd = dummy_scale_gradient(lg[..., 1::2, :], t[..., 1::2])
            per.append(even * odd)
    return torch.stack(per, -1).mean(-1)


def vrex_penalty(losses: Tensor, form: str = "variance") -> Tensor:
    """V-REx from the domain losses [..., E]: "variance" their population variance (DomainBed);
    "squared_difference" (R_0 - R_1)^2 for two domains (Fishr's Colored MNIST script)."""
    if form not in VREX_FORMS:
        raise ValueError(f"V-REx's penalty form must be one of {VREX_FORMS}, got {form!r}")
    if form == "squared_difference":
        if losses.shape[-1] != 2:
            raise ValueError(
                f"the squared_difference form needs exactly 2 domains, got {losses.shape[-1]}"
            )
        return (losses[..., 0] - losses[..., 1]).square()
    return (losses - losses.mean(-1, keepdim=True)).square().mean(-1)
