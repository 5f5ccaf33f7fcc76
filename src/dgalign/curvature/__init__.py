"""Curvature of the loss w.r.t. a linear head: pure functions, no training state.

Head W in R^{C x (d+1)} (last column = bias), z~ = [z, 1], loss = mean over n samples of
softmax cross-entropy (C >= 2) or sigmoid BCE (C = 1, p = sigmoid):
    gradient    G = (P - Y)^T Z~ / n
    Hessian     H = (1/n) sum_i S_i (x) z~_i z~_i^T, S_i = diag(p_i) - p_i p_i^T (p_i (1 - p_i))
    diagonal    diag(H)_{cj} = (1/n) sum_i p_ic (1 - p_ic) z~_ij^2
    inner       <H_1, H_2> = (1/(n1 n2)) sum_{i,j} tr(S_i S_j) (z~_i . z~_j)^2   (Gram form)
Generic autograd versions for any parameters: H v = grad(g . v), Hutchinson
diag(H) ~ mean_k r_k * (H r_k), HGP H g = ||g|| grad ||g||, per-sample gradients by torch.func.
Everything keeps the autograd graph, so penalties built from it train the featurizer.

The penalties of a linear head run as closed-form kernels, each one autograd node with the
head's logits (closed-form forward and backward; `moments`, `hvp`, `forms`), combined in
`penalties` (HGP, Hutchinson, exact diagonal and its expected-probes term, CMA, Fishr) and
`risk` (IRM, V-REx from the logits); `reference` computes every one of them by plain autograd,
the float64 oracle of the tests. `fused_kernels` switches the compiled row passes of the
one-logit `head_moments` (`fused`).
"""

from dgalign.curvature.autodiff import (
    hessian_gradient_product,
    hessian_vector_product,
    hutchinson_diag,
    per_sample_grads,
)
from dgalign.curvature.forms import hessian_forms
from dgalign.curvature.fused import fused_kernels
from dgalign.curvature.gram import (
    head_hessian_distance,
    head_hessian_inner,
    head_hessian_offdiag_sq_norm,
    head_hessian_offdiag_sq_norm_of_mean,
    head_hessian_sq_norm,
)
from dgalign.curvature.head import (
    head_gradient,
    head_hessian,
    head_hessian_diag,
    head_per_sample_gradients,
)
from dgalign.curvature.hvp import head_hgp, head_hutchinson_probes
from dgalign.curvature.moments import head_moments

__all__ = [
    "fused_kernels",
    "head_gradient",
    "head_hessian",
    "head_hessian_diag",
    "head_hessian_distance",
    "head_hessian_inner",
    "head_hessian_offdiag_sq_norm",
    "head_hessian_offdiag_sq_norm_of_mean",
    "head_hessian_sq_norm",
    "head_hgp",
    "head_hutchinson_probes",
    "head_moments",
    "head_per_sample_gradients",
    "hessian_forms",
    "hessian_gradient_product",
    "hessian_vector_product",
    "hutchinson_diag",
    "per_sample_grads",
]
