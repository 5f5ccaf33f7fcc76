"""Hessian alignment over the classifier head: HGP, Hutchinson and HessianDiag (Hemati et al.).

For domains e = 1..E with head losses L_e (mean CE, or BCE for one logit) and the pooled loss
Lbar (mean over all domains' samples), each method penalises

    P = red_e [ alpha ||T_e - sg(Tbar)||^2 + beta ||g_e - sg(gbar)||^2 ],   red = (1/E) sum_e

with g = gradient of the loss w.r.t. the head (weights + bias), sg = stop-gradient (the
authors' DomainBed code; `detach_mean=False` gives the Colored MNIST scripts' undetached form,
`reduction="sum"` their sum over domains) and T = H g (HGP, by H g = grad ||g||^2 / 2),
T = Hutchinson's estimate (1/m) sum_k r_k * (H r_k) of diag H (Hutchinson) or the exact
diag H (HessianDiag, closed form). Objective: Lbar + w_t P, with w_t = 0 for
`penalty_anneal_iters` steps (Adam re-created at the switch), 1 after (default: no annealing).

Expected Hutchinson penalty (HessianDiag's `expected_probes` = m). One probe r (Rademacher)
gives r_j (H r)_j = H_jj + sum_{l != j} H_jl r_j r_l; the products r_j r_l (l != j) are
uncorrelated with mean 0, so entry j has variance sum_{l != j} H_jl^2 and the mean of m
probes has total variance (1/m) ||offdiag H||_F^2. Hence, for one domain term,
    independent probes for e and for the mean (the authors' code draws fresh probes on every
    estimate):
        E ||Dh_e - Dh_bar||^2 = ||D_e - D_bar||^2 + (1/m) (||off H_e||^2 + ||off Hbar||^2)
    the same probes for e and the mean (`share_probes=True`): Dh_e - Dh_bar is Hutchinson's
    estimate of diag(H_e - Hbar), so
        E ||Dh_e - Dh_bar||^2 = ||D_e - D_bar||^2 + (1/m) ||off (H_e - Hbar)||^2.
Detaching the mean does not change the value of the expectation, only its gradient: with
Dh_bar detached, E[grad P] = grad of the formula above with Hbar held constant (the probes do
not depend on the parameters), so the Hbar-only term is kept in the value but detached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgalign.algorithms._common import AnnealedPenalty, concat, sizes
from dgalign.algorithms.base import Minibatches
from dgalign.algorithms.registry import register
from dgalign.curvature import (
    head_gradient,
    head_hessian_diag,
    head_hessian_inner,
    head_hessian_offdiag_sq_norm,
    hessian_gradient_product,
    hutchinson_diag,
)
from dgalign.errors import ConfigError
from dgalign.hparams import HParam, boolean, const, integer, log_uniform, nonnegative, one_of

REDUCTIONS = ("mean", "sum")
Penalties = dict[str, Tensor]


def head_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy logsumexp(l) - l_y (C >= 2, integer labels), or binary cross-entropy
    softplus(l) - y l (C = 1, labels 0/1). Written out rather than F.cross_entropy: the double
    backward of log_softmax has no vmap rule, so batched Hutchinson probes would loop."""
    if logits.shape[1] == 1:
        target = y.reshape(-1).to(logits.dtype)
        return (F.softplus(logits[:, 0]) - target * logits[:, 0]).mean()
    return (torch.logsumexp(logits, 1) - logits.gather(1, y.reshape(-1, 1))[:, 0]).mean()


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _pooled(zs: Sequence[Tensor], logits: Sequence[Tensor], detach: bool) -> tuple[Tensor, Tensor]:
    """All domains' features and logits as one set (detached for a stop-gradient mean)."""
    z, lg = torch.cat(list(zs)), torch.cat(list(logits))
    return (z.detach(), lg.detach()) if detach else (z, lg)


class Terms(NamedTuple):
    """Per-domain curvature terms T_e and gradients g_e (flat), with their pooled versions."""

    hess: list[Tensor]
    hess_mean: Tensor
    grad: list[Tensor]
    grad_mean: Tensor


def hgp_terms(
    params: Sequence[Tensor], logits: Sequence[Tensor], ys: Sequence[Tensor], detach_mean: bool
) -> Terms:
    """T_e = H_e g_e and g_e by autograd over `params`; the mean terms from the pooled loss
    (computed without a graph when detached)."""
    per = [
        hessian_gradient_product(head_loss(lg, y), params) for lg, y in zip(logits, ys, strict=True)
    ]
    loss_bar = head_loss(torch.cat(list(logits)), torch.cat(list(ys)))
    hg_bar, g_bar = hessian_gradient_product(loss_bar, params, create_graph=not detach_mean)
    return Terms(
        [_flat(h) for h, _ in per], _flat(hg_bar), [_flat(g) for _, g in per], _flat(g_bar)
    )


def hutchinson_terms(
    params: Sequence[Tensor],
    logits: Sequence[Tensor],
    ys: Sequence[Tensor],
    n_probes: int,
    detach_mean: bool,
    share_probes: bool = False,
) -> Terms:
    """T_e = Hutchinson's diag(H_e) with `n_probes` Rademacher probes, fresh for every domain
    and for the mean, or (`share_probes`) one draw reused by all of them."""
    seed = int(torch.randint(0, 2**62, ())) if share_probes else None

    def estimate(loss: Tensor, graph: bool) -> Tensor:
        gen = None
        if seed is not None:
            gen = torch.Generator(device=params[0].device).manual_seed(seed)
        return _flat(hutchinson_diag(loss, params, n_probes, generator=gen, create_graph=graph))

    losses = [head_loss(lg, y) for lg, y in zip(logits, ys, strict=True)]
    grads = [_flat(torch.autograd.grad(loss, params, create_graph=True)) for loss in losses]
    loss_bar = head_loss(torch.cat(list(logits)), torch.cat(list(ys)))
    g_bar = torch.autograd.grad(loss_bar, params, create_graph=not detach_mean, retain_graph=True)
    diags = [estimate(loss, True) for loss in losses]
    return Terms(diags, estimate(loss_bar, not detach_mean), grads, _flat(g_bar))


def exact_diag_terms(
    zs: Sequence[Tensor], logits: Sequence[Tensor], ys: Sequence[Tensor], detach_mean: bool
) -> Terms:
    """T_e = diag H_e = (1/n) sum_i p_ic (1 - p_ic) z~_ij^2 and g_e = (P - Y)^T Z~ / n, closed
    form for a linear head (`head_hessian_diag`, `head_gradient`). The pooled loss is the
    n_e-weighted mean of the domain losses, so its diagonal and gradient are the n_e-weighted
    means of the domains' (exact; no second pass over the samples)."""
    sets = list(zip(zs, logits, ys, strict=True))
    diags = [head_hessian_diag(z, lg) for z, lg, _ in sets]
    grads = [head_gradient(z, lg, y) for z, lg, y in sets]
    weights = [z.shape[0] / sum(z_.shape[0] for z_ in zs) for z in zs]

    def pooled(values: list[Tensor]) -> Tensor:
        mean = sum(w * v for w, v in zip(weights, values, strict=True))
        return mean.detach() if detach_mean else mean

    return Terms(diags, pooled(diags), grads, pooled(grads))


def _reduce(values: Sequence[Tensor], reduction: str) -> Tensor:
    total = torch.stack(list(values)).sum()
    return total / len(values) if reduction == "mean" else total


def alignment_penalties(terms: Terms, reduction: str = "mean") -> Penalties:
    """red_e ||T_e - Tbar||^2 and red_e ||g_e - gbar||^2 (`hess_penalty`, `grad_penalty`)."""
    return {
        "hess_penalty": _reduce(
            [(t - terms.hess_mean).square().sum() for t in terms.hess], reduction
        ),
        "grad_penalty": _reduce(
            [(g - terms.grad_mean).square().sum() for g in terms.grad], reduction
        ),
    }


def probe_variance(
    zs: Sequence[Tensor],
    logits: Sequence[Tensor],
    n_probes: int,
    detach_mean: bool = True,
    share_probes: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """E[Hutchinson penalty] - exact diagonal penalty (Hessian part, alpha = 1), see the module
    docstring: red_e (1/m) (||off H_e||^2 + ||off Hbar||^2) with independent probes, or
    red_e (1/m) ||off (H_e - Hbar)||^2 with shared probes; Hbar detached when `detach_mean`."""
    zb, lb = _pooled(zs, logits, detach_mean)
    sets = list(zip(zs, logits, strict=True))
    if not share_probes:
        off_bar = head_hessian_offdiag_sq_norm(zb, lb)
        per = [head_hessian_offdiag_sq_norm(z, lg) + off_bar for z, lg in sets]
    else:
        sq_bar = head_hessian_inner(zb, lb, zb, lb)
        diag_bar = head_hessian_diag(zb, lb)
        per = [
            head_hessian_inner(z, lg, z, lg)
            - 2 * head_hessian_inner(z, lg, zb, lb)
            + sq_bar
            - (head_hessian_diag(z, lg) - diag_bar).square().sum()
            for z, lg in sets
        ]
    return _reduce(per, reduction) / n_probes


class HeadAlignment(AnnealedPenalty):
    """Featurizer -> classifier trained on Lbar + w_t sum_k lambda_k P_k: shared by the
    curvature-alignment methods. Subclasses implement `penalties(z, logits, y)` (per-domain
    lists) and map each penalty name to the hyper-parameter weighing it in `WEIGHTS`."""

    WEIGHTS: ClassVar[dict[str, str]] = {}
    LINEAR_HEAD: ClassVar[bool] = False  # closed forms need an nn.Linear head

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        if self.LINEAR_HEAD and not isinstance(self.classifier, nn.Linear):
            raise ConfigError(
                f"{type(self).__name__} needs a linear head (closed-form head curvature); "
                "set --hparams '{\"nonlinear_classifier\": false}'"
            )
        reduction = self.hparams.get("reduction", "mean")
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")

    def penalties(self, zs: list[Tensor], logits: list[Tensor], ys: list[Tensor]) -> Penalties:
        """The unweighted penalty terms from each domain's features, logits and labels."""
        raise NotImplementedError

    def objective_terms(
        self, minibatches: Minibatches, penalties: bool = True
    ) -> dict[str, Tensor]:
        """`nll` (pooled mean loss) and, if asked, every penalty term, as graph tensors."""
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        logits = self.classifier(z)
        terms = {"nll": head_loss(logits, all_y)}
        if penalties:
            counts = sizes(minibatches)
            ys = [y for _, y in minibatches]
            terms.update(self.penalties(list(z.split(counts)), list(logits.split(counts)), ys))
        return terms

    def update(self, minibatches: Minibatches) -> dict[str, float]:
        switch = self.penalty_weight(int(self.hparams.get("penalty_anneal_iters", 0)), 1.0, 0.0)
        terms = self.objective_terms(minibatches, penalties=switch > 0)
        loss = terms["nll"]
        for name, value in terms.items():
            if name != "nll":
                loss = loss + switch * float(self.hparams[self.WEIGHTS[name]]) * value
        self.step(loss)
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}


def alignment_hparams(
    alpha: float,
    alpha_rng: tuple[float, float],
    beta: float,
    beta_rng: tuple[float, float],
    src: str,
) -> tuple[HParam, ...]:
    """alpha (Hessian term), beta (gradient term) and the penalty-form options."""
    return (
        HParam(
            "alpha", alpha, log_uniform(*alpha_rng), f"Hessian-term weight; {src}", nonnegative()
        ),
        HParam("beta", beta, log_uniform(*beta_rng), f"gradient-term weight; {src}", nonnegative()),
        HParam(
            "detach_mean",
            True,
            const(True),
            "stop-gradient on the mean terms (False: CMNIST)",
            boolean(),
        ),
        HParam(
            "reduction",
            "mean",
            const("mean"),
            "mean or sum of the domain terms (sum: CMNIST)",
            one_of("mean", "sum"),
        ),
        HParam(
            "penalty_anneal_iters",
            0,
            const(0),
            "steps with penalty weight 0 (Adam reset after)",
            integer(0),
        ),
    )


_CODE = "range and default of the authors' DomainBed code (docs/protocols.md section 2)"
_MID = (
    "range of the authors' DomainBed code (docs/protocols.md section 2; the paper's text "
    "says otherwise), "
    "default = log-midpoint (no default recorded; the rule the authors' HGP defaults follow)"
)
_HUTCHINSON = (
    *alignment_hparams(300.0, (1, 4), 1e4, (2, 6), _MID),
    HParam(
        "share_probes",
        False,
        const(False),
        "one probe draw for every domain and the mean",
        boolean(),
    ),
)


@register
class HGP(HeadAlignment):
    """Hessian-gradient-product alignment: T_e = H_e g_e over the head (weights + bias), by
    H g = grad(||g||^2 / 2); penalty red_e [alpha ||T_e - sg(Tbar)||^2 + beta ||g_e - sg(gbar)||^2].

    Ranges 10^U(-5,-3) (alpha), 10^U(-3,-1) (beta), defaults 1e-4, 5e-3: the authors' DomainBed
    code; the paper's text gives the same HGP ranges."""

    DESCRIPTION = "Align head Hessian-gradient products and gradients across domains"
    PAPER = "Hemati et al., 2023"
    HPARAMS = alignment_hparams(1e-4, (-5, -3), 5e-3, (-3, -1), _CODE)
    WEIGHTS: ClassVar[dict[str, str]] = {"hess_penalty": "alpha", "grad_penalty": "beta"}

    def penalties(self, zs: list[Tensor], logits: list[Tensor], ys: list[Tensor]) -> Penalties:
        params = list(self.classifier.parameters())
        terms = hgp_terms(params, logits, ys, bool(self.hparams["detach_mean"]))
        return alignment_penalties(terms, self.hparams["reduction"])


@register
class Hutchinson(HeadAlignment):
    """Hessian-diagonal alignment with Hutchinson's estimator over the head (`n_probes`
    Rademacher probes, H r = grad(g . r)); penalty as HGP with T_e = estimated diag H_e.

    Ranges 10^U(1,4) (alpha), 10^U(2,6) (beta) are the authors' DomainBed code; the paper's
    text gives (-1,-3) and (-2,-4) instead. Defaults (300, 1e4) are the log-midpoints."""

    DESCRIPTION = "Align head Hessian diagonals (Hutchinson estimate) and gradients"
    PAPER = "Hemati et al., 2023"
    HPARAMS = (
        *_HUTCHINSON,
        HParam(
            "n_probes",
            300,
            const(300),
            "probes per estimate (authors' code; paper: 100)",
            integer(1),
        ),
    )
    WEIGHTS: ClassVar[dict[str, str]] = {"hess_penalty": "alpha", "grad_penalty": "beta"}

    def penalties(self, zs: list[Tensor], logits: list[Tensor], ys: list[Tensor]) -> Penalties:
        terms = hutchinson_terms(
            list(self.classifier.parameters()),
            logits,
            ys,
            int(self.hparams["n_probes"]),
            bool(self.hparams["detach_mean"]),
            bool(self.hparams["share_probes"]),
        )
        return alignment_penalties(terms, self.hparams["reduction"])


@register
class HessianDiag(HeadAlignment):
    """Hutchinson's objective with the exact closed-form head Hessian diagonal (no sampling).

    With `expected_probes` = m > 0 it adds alpha * `probe_variance` (module docstring), so the
    penalty equals the expectation of Hutchinson's penalty with m probes (drawn as
    `share_probes` says). Same ranges and defaults as Hutchinson (the paper's text differs)."""

    DESCRIPTION = "Align exact head Hessian diagonals (closed form) and gradients"
    PAPER = "Hemati et al., 2023 (exact diagonal)"
    HPARAMS = (
        *_HUTCHINSON,
        HParam(
            "expected_probes",
            0,
            const(0),
            "m > 0: add Hutchinson's m-probe variance term",
            integer(0),
        ),
    )
    WEIGHTS: ClassVar[dict[str, str]] = {
        "hess_penalty": "alpha",
        "grad_penalty": "beta",
        "probe_variance": "alpha",
    }
    LINEAR_HEAD = True

    def penalties(self, zs: list[Tensor], logits: list[Tensor], ys: list[Tensor]) -> Penalties:
        detach = bool(self.hparams["detach_mean"])
        reduction = self.hparams["reduction"]
        out = alignment_penalties(exact_diag_terms(zs, logits, ys, detach), reduction)
        m = int(self.hparams["expected_probes"])
        if m > 0:
            share = bool(self.hparams["share_probes"])
            out["probe_variance"] = probe_variance(zs, logits, m, detach, share, reduction)
        return out
