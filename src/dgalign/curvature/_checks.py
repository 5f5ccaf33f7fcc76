"""Input checks and small shared helpers for the closed-form head curvature.

Conventions: features z [n, d]; logits [n, C] (softmax cross-entropy, C >= 2) or [n, 1]
(sigmoid binary cross-entropy); the head is a [C, d+1] matrix whose last column is the bias,
so every formula uses the augmented features z~ = [z, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def shape(t: Tensor) -> tuple[int, ...]:
    """Shape as a plain tuple, for error messages."""
    return tuple(t.shape)


def check_z_logits(z: Tensor, logits: Tensor, where: str = "") -> tuple[Tensor, Tensor]:
    """Validate z [n, d] and logits [n, C]; return both in their common floating dtype."""
    sfx = f" ({where})" if where else ""
    if not isinstance(z, Tensor) or not isinstance(logits, Tensor):
        raise ValueError(f"z and logits must be torch tensors{sfx}")
    if z.dim() != 2:
        raise ValueError(f"z must be 2-D [n, d], got shape {shape(z)}{sfx}")
    if logits.dim() != 2:
        raise ValueError(
            f"logits must be 2-D [n, C] (use [n, 1] for one logit), got shape {shape(logits)}{sfx}"
        )
    if logits.shape[0] != z.shape[0]:
        raise ValueError(
            f"logits has {logits.shape[0]} rows but z has {z.shape[0]}: one row per sample{sfx}"
        )
    if z.shape[0] == 0:
        raise ValueError(f"z and logits hold no samples (n = 0){sfx}")
    if logits.shape[1] == 0 or z.shape[1] == 0:
        raise ValueError(f"z and logits need at least one column, got {shape(z)}, {shape(logits)}")
    if not z.is_floating_point() or not logits.is_floating_point():
        raise ValueError(f"z and logits must be floating point, got {z.dtype}, {logits.dtype}{sfx}")
    dtype = torch.promote_types(z.dtype, logits.dtype)
    return z.to(dtype), logits.to(dtype)


def check_same_head(z1: Tensor, l1: Tensor, z2: Tensor, l2: Tensor) -> None:
    """Two sets must describe the same head: same feature width d and number of logits C."""
    if z1.shape[1] != z2.shape[1]:
        raise ValueError(
            f"the two sets have different feature widths {z1.shape[1]} and {z2.shape[1]}"
        )
    if l1.shape[1] != l2.shape[1]:
        raise ValueError(
            f"the two sets have different numbers of logits {l1.shape[1]}, {l2.shape[1]}"
        )


def targets(y: Tensor, n: int, num_logits: int, dtype: torch.dtype) -> Tensor:
    """Targets as a [n, C] matrix: one-hot of integer labels, or the {0,1} labels for C = 1."""
    if not isinstance(y, Tensor):
        raise ValueError("labels y must be a torch tensor")
    if num_logits == 1:
        if shape(y) not in ((n,), (n, 1)):
            raise ValueError(f"binary labels must have shape [{n}] or [{n}, 1], got {shape(y)}")
        return y.reshape(n, 1).to(dtype)
    if shape(y) != (n,):
        raise ValueError(f"class labels must have shape [{n}], got {shape(y)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"class labels must be an integer tensor, got {y.dtype}")
    if y.device.type == "cpu" and (bool((y < 0).any()) or bool((y >= num_logits).any())):
        raise ValueError(f"class labels must lie in [0, {num_logits}), got values outside")
    # on an accelerator one_hot's device-side assert catches them, without a host sync
    return torch.nn.functional.one_hot(y.long(), num_logits).to(dtype)


def probabilities(logits: Tensor) -> Tensor:
    """p = softmax(logits) for C >= 2, sigmoid(logits) for one logit."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def augment(z: Tensor) -> Tensor:
    """z~ = [z, 1]: the bias is the last column of the head."""
    return torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)


def check_sets(
    zs: Sequence[Tensor], logits: Sequence[Tensor], first: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """Validate K >= 1 (z, logits) sets of one head (named "set first", "set first + 1", ...
    in errors); return them in their common dtype."""
    if len(zs) != len(logits) or len(zs) == 0:
        raise ValueError(
            f"need the same positive number of feature and logit sets, got {len(zs)} and "
            f"{len(logits)}"
        )
    pairs = enumerate(zip(zs, logits, strict=True), start=first)
    sets = [check_z_logits(z, lg, f"set {e}") for e, (z, lg) in pairs]
    for z, lg in sets[1:]:
        check_same_head(*sets[0], z, lg)
    dtype = sets[0][0].dtype
    for z, _ in sets[1:]:
        dtype = torch.promote_types(dtype, z.dtype)
    return [(z.to(dtype), lg.to(dtype)) for z, lg in sets]
