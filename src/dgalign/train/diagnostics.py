"""Curvature diagnostics recorded at every checkpoint, for any algorithm whose `predict` is a
featurizer followed by a linear head (`Algorithm.prediction_head`).

hess_dist = mean over pairs of training domains (i, j) of ||H_i - H_j||_F and
grad_dist = mean over pairs of ||g_i - g_j||_2, where H_e and g_e are the exact Hessian and
gradient of domain e's mean loss w.r.t. the head (weights and bias), on the current step's
minibatches, with the network in evaluation mode (no dropout, no RNG consumed).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from dgalign.curvature import head_gradient, head_hessian_distance


@torch.no_grad()
def curvature_diagnostics(
    algorithm: nn.Module, minibatches: list[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, float]:
    """`hess_dist` and `grad_dist` between training domains; {} when the algorithm's
    `prediction_head()` is None (its `predict` is not featurizer -> linear head) or there is
    only one domain."""
    head = algorithm.prediction_head() if hasattr(algorithm, "prediction_head") else None
    if head is None or len(minibatches) < 2:
        return {}
    featurizer, classifier = head
    was_training = algorithm.training
    algorithm.eval()
    try:
        heads = []
        for x, y in minibatches:
            z = featurizer(x)
            heads.append((z, classifier(z), y))
    finally:
        algorithm.train(was_training)
    pairs = list(itertools.combinations(range(len(heads)), 2))
    hess = [
        head_hessian_distance(heads[i][0], heads[i][1], heads[j][0], heads[j][1]) for i, j in pairs
    ]
    grads = [head_gradient(*heads[i]) for i in range(len(heads))]
    grad = [torch.linalg.vector_norm(grads[i] - grads[j]) for i, j in pairs]
    return {
        "hess_dist": float(torch.stack(hess).mean()),
        "grad_dist": float(torch.stack(grad).mean()),
    }
