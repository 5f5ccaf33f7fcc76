"""Hessian alignment over the classifier head: HGP, Hutchinson and HessianDiag (Hemati et al.).

For domains e = 1..E with head losses L_e (mean CE, or BCE for one logit), each method penalises

    P = hess_weight red_e ||T_e - sg(Tbar)||^2 + grad_weight red_e ||g_e - sg(gbar)||^2

with g = gradient of the loss w.r.t. the head (weights + bias), red = (1/E) sum_e (`reduction`
"mean"; "sum" is the Colored MNIST scripts'), sg = stop-gradient (`detach_mean`, the authors'
DomainBed code; the scripts detach nothing), the mean terms from the pooled loss of all samples
(`mean_term` "pooled", DomainBed) or from the mean of the domain losses ("envs", the scripts'
`train_nll`; the same without label shift), and T = H g (HGP), Hutchinson's estimate
(1/m) sum_k r_k * (H r_k) of diag H (Hutchinson) or the exact diag H (HessianDiag). Objective:
Lbar + w_t P, w_t = 0 for `penalty_anneal_iters` steps (Adam re-created at the switch), 1 after.
On a linear head every term is a closed form of `dgalign.curvature.penalties` (one autograd
node with the head); HGP and Hutchinson fall back to autograd over the head's parameters
(`curvature.autodiff`) for a nonlinear head.

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

Curvature magnitude (HessianDiag's `curv_weight` = lambda). The added term is a penalty of
its own, independent of any probe count:
    P = hess_weight red_e ||D_e - D_bar||^2 + grad_weight red_e ||g_e - gbar||^2
        + lambda curv_penalty,   curv_penalty = red_e (||off H_e||_F^2 + ||off Hbar||_F^2)
(`share_probes`: red_e ||off (H_e - Hbar)||_F^2). `expected_probes` = m sets
lambda = hess_weight / m, so the penalty is the expectation of Hutchinson's with m probes
(HessianDiag-E150 of the Colored MNIST tables is lambda = hess_weight / 150); setting both is
a ConfigError. lambda = 0 is the exact-diagonal method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dgalign.algorithms._common import AnnealedPenalty, concat, sizes
from dgalign.algorithms.base import Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.algorithms.schedule import PenaltySchedule
from dgalign.curvature import penalties as closed
from dgalign.curvature.autodiff import hessian_gradient_product, hutchinson_diag
from dgalign.curvature.penalties import MEAN_TERMS, REDUCTIONS, Form
from dgalign.curvature.risk import mean_loss
from dgalign.errors import ConfigError
from dgalign.hparams import (
    HParam,
    boolean,
    const,
    integer,
    log_uniform,
    nonnegative,
    one_of,
    zero_or,
)
from dgalign.utils.tensors import flatten

Terms = dict[str, Tensor]


def alignment_form(hparams: dict[str, Any]) -> Form:
    """The `Form` (mean term, detach, reduction) the hyper-parameters ask for."""
    mean_term = hparams.get("mean_term", "pooled")
    reduction = hparams.get("reduction", "mean")
    if mean_term not in MEAN_TERMS:
        raise ConfigError(f"mean_term must be one of {MEAN_TERMS}, got {mean_term!r}")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return Form(mean_term, bool(hparams.get("detach_mean", True)), reduction)


def autograd_alignment(
    params: Sequence[Tensor],
    logits: Tensor,
    y: Tensor,
    counts: Sequence[int],
    form: Form,
    n_probes: int = 0,
    share_probes: bool = False,
) -> Terms:
    """HGP terms (`n_probes` 0: T = H g by grad ||g||^2 / 2) or Hutchinson terms (m probes
    by batched double backward) over any head's `params`: the path of nonlinear heads."""
    parts = list(zip(logits.split(list(counts)), y.split(list(counts)), strict=True))
    losses = [mean_loss(lg, t) for lg, t in parts]
    w = form.weights(counts)
    loss_bar = sum(wi * loss for wi, loss in zip(w, losses, strict=True))
    if n_probes == 0:
        per = [hessian_gradient_product(loss, params) for loss in losses]
        t_bar, g_bar = hessian_gradient_product(loss_bar, params, create_graph=not form.detach_mean)
        ts, gs = [flatten(t) for t, _ in per], [flatten(g) for _, g in per]
        t_bar, g_bar = flatten(t_bar), flatten(g_bar)
    else:
        seed = int(torch.randint(0, 2**62, ())) if share_probes else None

        def estimate(loss: Tensor, graph: bool) -> Tensor:
            gen = None if seed is None else torch.Generator(params[0].device).manual_seed(seed)
            return flatten(hutchinson_diag(loss, params, n_probes, gen, create_graph=graph))

        gs = [flatten(torch.autograd.grad(loss, params, create_graph=True)) for loss in losses]
        g_bar = flatten(
            torch.autograd.grad(
                loss_bar, params, create_graph=not form.detach_mean, retain_graph=True
            )
        )
        ts = [estimate(loss, True) for loss in losses]
        t_bar = estimate(loss_bar, not form.detach_mean)
    if form.detach_mean:
        t_bar, g_bar = t_bar.detach(), g_bar.detach()
    return {
        "hess_penalty": form.reduce(torch.stack([(t - t_bar).square().sum() for t in ts])),
        "grad_penalty": form.reduce(torch.stack([(g - g_bar).square().sum() for g in gs])),
    }


class HeadAlignment(AnnealedPenalty):
    """Featurizer -> classifier trained on Lbar + w_t sum_k weight_k P_k: shared by the
    curvature-alignment methods. Subclasses give the terms of a linear head in
    `head_penalties` (a classmethod, so the Colored MNIST reproduction runs the same penalty on
    its batched restarts) and map each term to the hyper-parameter weighing it in
    `TERM_WEIGHTS`."""

    TERM_WEIGHTS: ClassVar[dict[str, str | None]] = {
        "hess_penalty": "hess_weight",
        "grad_penalty": "grad_weight",
    }
    LINEAR_HEAD: ClassVar[bool] = False  # closed forms only: needs an nn.Linear head

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
        self.check_hparams(self.hparams)

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any]) -> None:
        """ConfigError (one line) for options the penalty cannot use."""
        alignment_form(hparams)

    @classmethod
    def penalty_schedule(cls, hparams: dict[str, Any]) -> PenaltySchedule:
        return PenaltySchedule(int(hparams.get("penalty_anneal_iters", 0)), 1.0, 0.0)

    def nonlinear_penalties(self, z: Tensor, y: Tensor, counts: list[int]) -> tuple[Tensor, Terms]:
        """The terms for a head that is not an nn.Linear (autograd over its parameters)."""
        raise ConfigError(f"{type(self).__name__} needs a linear head")

    def penalties(self, z: Tensor, y: Tensor, counts: list[int]) -> tuple[Tensor, Terms]:
        """Logits and the unweighted penalty terms of features z (domains of `counts` rows)."""
        if isinstance(self.classifier, nn.Linear):
            head = self.classifier
            return self.head_penalties(z, head.weight, head.bias, y, counts, self.hparams)
        return self.nonlinear_penalties(z, y, counts)

    def objective_terms(self, minibatches: Minibatches, penalties: bool = True) -> Terms:
        """`nll` (pooled mean loss) and, if asked, every penalty term, as graph tensors."""
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        if penalties:
            logits, terms = self.penalties(z, all_y, sizes(minibatches))
        else:
            logits, terms = self.classifier(z), {}
        return {"nll": mean_loss(logits, all_y), **terms}

    def update(self, minibatches: Minibatches) -> Logs:
        switch = self.schedule_weight()
        terms = self.objective_terms(minibatches, penalties=switch > 0)
        loss = terms["nll"]
        penalty = self.weighted_penalty({k: v for k, v in terms.items() if k != "nll"})
        if penalty is not None:
            loss = loss + switch * penalty
        self.step(loss)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}


REDUCTION_HPARAM = HParam(
    "reduction",
    "mean",
    const("mean"),
    "mean or sum of the domain terms (sum: CMNIST)",
    one_of(*REDUCTIONS),
)


def alignment_hparams(
    hess: float,
    hess_rng: tuple[float, float],
    grad: float,
    grad_rng: tuple[float, float],
    src: str,
) -> tuple[HParam, ...]:
    """hess_weight (Hessian term, formerly alpha), grad_weight (gradient term, formerly beta)
    and the penalty-form options."""
    return (
        HParam(
            "hess_weight",
            hess,
            log_uniform(*hess_rng),
            f"Hessian-term weight (formerly alpha); {src}",
            nonnegative(),
            aliases=("alpha",),
        ),
        HParam(
            "grad_weight",
            grad,
            log_uniform(*grad_rng),
            f"gradient-term weight (formerly beta); {src}",
            nonnegative(),
            aliases=("beta",),
        ),
        HParam(
            "detach_mean",
            True,
            const(True),
            "stop-gradient on the mean terms (False: CMNIST)",
            boolean(),
        ),
        HParam(
            "mean_term",
            "pooled",
            const("pooled"),
            "mean terms from the pooled loss, or envs: the mean of the domain losses (CMNIST)",
            one_of("pooled", "envs"),
        ),
        REDUCTION_HPARAM,
        HParam(
            "penalty_anneal_iters",
            0,
            const(0),
            "steps with penalty weight 0 (Adam reset after)",
            integer(0),
        ),
    )


_CODE = "range and default of the authors' DomainBed code"
_MID = (
    "range of the authors' DomainBed code (the paper's text says otherwise), "
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
    """Hessian-gradient-product alignment: T_e = H_e g_e over the head (weights + bias), closed
    form H v = (1/n) sum_i (S_i v z~_i) z~_i^T on a linear head, grad(||g||^2 / 2) otherwise.

    Ranges 10^U(-5,-3) (hess_weight), 10^U(-3,-1) (grad_weight), defaults 1e-4, 5e-3: the
    authors' DomainBed code; the paper's text gives the same HGP ranges."""

    DESCRIPTION = "Align head Hessian-gradient products and gradients across domains"
    PAPER = "Hemati et al., 2023"
    HPARAMS = alignment_hparams(1e-4, (-5, -3), 5e-3, (-3, -1), _CODE)

    @classmethod
    def head_penalties(cls, z, weight, bias, y, counts, hparams) -> tuple[Tensor, Terms]:
        return closed.hgp_alignment(z, weight, bias, y, counts, alignment_form(hparams))

    def nonlinear_penalties(self, z: Tensor, y: Tensor, counts: list[int]) -> tuple[Tensor, Terms]:
        logits = self.classifier(z)
        params = list(self.classifier.parameters())
        return logits, autograd_alignment(params, logits, y, counts, alignment_form(self.hparams))


@register
class Hutchinson(HeadAlignment):
    """Hessian-diagonal alignment with Hutchinson's estimator over the head (`n_probes`
    Rademacher probes, fresh for every domain and the mean unless `share_probes`); on a linear
    head by the closed form (explicit per-domain Hessians when small, closed-form H r products
    otherwise), else by batched double backward.

    Ranges 10^U(1,4) (hess_weight), 10^U(2,6) (grad_weight) are the authors' DomainBed code; the
    paper's text gives (-1,-3) and (-2,-4) instead. Defaults (300, 1e4) are the log-midpoints."""

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

    @classmethod
    def head_penalties(cls, z, weight, bias, y, counts, hparams) -> tuple[Tensor, Terms]:
        return closed.hutchinson_alignment(
            z,
            weight,
            bias,
            y,
            counts,
            alignment_form(hparams),
            int(hparams["n_probes"]),
            bool(hparams["share_probes"]),
        )

    def nonlinear_penalties(self, z: Tensor, y: Tensor, counts: list[int]) -> tuple[Tensor, Terms]:
        logits = self.classifier(z)
        params = list(self.classifier.parameters())
        form = alignment_form(self.hparams)
        m, share = int(self.hparams["n_probes"]), bool(self.hparams["share_probes"])
        return logits, autograd_alignment(params, logits, y, counts, form, m, share)


#: HessianDiag's curv_weight: 0 (off) w.p. 1/4, else 10^U(-2, 3); the default hess_weight 300
#: puts the 150-probe point (hess_weight / 150) at 2
CURV_WEIGHT_RANGE = zero_or(0.25, log_uniform(-2, 3))


@register
class HessianDiag(HeadAlignment):
    """Hutchinson's objective with the exact closed-form head Hessian diagonal (no sampling),
    plus curv_weight * curv_penalty, the off-diagonal curvature magnitude (module docstring).

    With `expected_probes` = m > 0 the curvature weight is hess_weight / m, so the penalty
    equals the expectation of Hutchinson's penalty with m probes (drawn as `share_probes`
    says). Same ranges and defaults as Hutchinson (the paper's text differs); curv_weight has
    no reference value: off by default, 0 w.p. 1/4 or 10^U(-2, 3) in a random search."""

    DESCRIPTION = "Align exact head Hessian diagonals (closed form) and gradients"
    PAPER = "Hemati et al., 2023 (exact diagonal)"
    HPARAMS = (
        *_HUTCHINSON,
        HParam(
            "expected_probes",
            0,
            const(0),
            "m > 0: curv_weight = hess_weight / m (Hutchinson's m-probe mean)",
            integer(0),
        ),
        HParam(
            "curv_weight",
            0.0,
            CURV_WEIGHT_RANGE,
            "off-diagonal curvature-magnitude weight (no reference value; 0 = off)",
            nonnegative(),
        ),
    )
    TERM_WEIGHTS: ClassVar[dict[str, str | None]] = {
        "hess_penalty": "hess_weight",
        "grad_penalty": "grad_weight",
        "curv_penalty": "curv_weight",
    }
    LINEAR_HEAD = True

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any]) -> None:
        super().check_hparams(hparams)
        if int(hparams.get("expected_probes", 0)) > 0 and float(hparams.get("curv_weight", 0)):
            raise ConfigError(
                "HessianDiag: expected_probes sets curv_weight = hess_weight / expected_probes; "
                "give one of them (the other 0)"
            )

    @classmethod
    def curvature_weight(cls, hparams: dict[str, Any]) -> float:
        """lambda: hess_weight / expected_probes when that is > 0, else curv_weight."""
        m = int(hparams.get("expected_probes", 0))
        if m > 0:
            return float(hparams["hess_weight"]) / m
        return float(hparams.get("curv_weight", 0.0))

    @classmethod
    def term_weights(cls, hparams: dict[str, Any], num_classes: int) -> dict[str, float]:
        weights = super().term_weights({"curv_weight": 0.0, **hparams}, num_classes)
        weights["curv_penalty"] = cls.curvature_weight(hparams)
        return weights

    @classmethod
    def head_penalties(cls, z, weight, bias, y, counts, hparams) -> tuple[Tensor, Terms]:
        cls.check_hparams(hparams)
        form = alignment_form(hparams)
        if cls.curvature_weight(hparams) > 0:
            share = bool(hparams["share_probes"])
            return closed.curvature_magnitude(z, weight, bias, y, counts, form, share)
        return closed.diag_alignment(z, weight, bias, y, counts, form)
