"""CMA: closed-form moment alignment of head gradients and Hessians.

Linear head with the bias folded in as a constant feature (our curvature functions put the 1
last, z~ = [z, 1]; every norm below is the same). For K domains with n_e samples each:
    G_e = (P - Y)^T Z~ / n_e,      H_e = (1/n_e) sum_i S_i (x) z~_i z~_i^T,
    S_i = diag(p_i) - p_i p_i^T  (p_i (1 - p_i) for a one-logit sigmoid head),
    penalty = grad_weight red_e ||G_e - Gbar||^2 + hess_weight red_e ||H_e - Hbar||_F^2
with Gbar, Hbar the plain means over the K domains, nothing detached, red = (1/K) sum_e
(`reduction` "mean", the authors'; "sum" for the Colored MNIST rows); the objective is the
pooled mean loss plus the penalty, which is 0 for `penalty_anneal_iters` steps (Adam is
re-created when it switches on).

`normalization` "authors" (default) follows the CMA authors' DomainBed code, whose default
weights (5000, 1000) and ranges 10^U(1, 4) assume it: their code divides the head gradient and
the Hessian by C, so both terms are divided by C^2 here, and with a ResNet backbone (resnet18,
resnet50) it further divides the gradient weight by 2048/384 and the Hessian weight by
(2048/384)^2. "none" uses the terms and weights as written above.

The Hessian term has these evaluations (`hessian_mode`, dispatched through
`curvature.penalties.CMA_MODES`, where new modes are added):
    full  builds every H_e, [C(d+1)]^2 entries each (the paper's "speed" mode); refused with a
          ConfigError, before anything is allocated, when about (2K + 3) Hessian-sized tensors
          (per restart) would exceed `hessian_memory_mb`;
    gram  (the paper's "memory" mode) from quadratic forms of the per-sample terms,
              ||H_e - Hbar||^2 = sum_{i,j} w_i w_j tr(S_i S_j) (z~_i . z~_j)^2,
          (`curvature.forms`: O(n^2 (C + d)) time, O(n) memory per block row): equal to `full`
          for any C and d, without ever building a Hessian;
    diag  aligns only the diagonals: red_e ||diag H_e - mean_f diag H_f||^2.
    kfac  aligns the Kronecker-factored Hessians H_e ~ E[S] (x) E[z~ z~^T]
          (`dgalign.curvature.kfac`, O(n^2 d + n C^2), never builds a factor product).
`curv_weight` = lambda > 0 adds lambda red_e (||H_e||_F^2 + ||Hbar||_F^2), the full curvature
magnitude of each domain's head Hessian and of the mean one (`curvature.penalties
.full_magnitude`, quadratic forms in every mode); it has no reference value (off by default,
0 w.p. 1/4 or 10^U(-1, 3) in a random search) and is normalised like the Hessian term.
`order=3` adds gamma red_e ||T_e - Tbar||_F^2 over the third-derivative tensors of the head
loss, from their Gram form (`dgalign.curvature.third_order`, O(n^2 (C + d))); the authors have
no third-order term, so it is not rescaled by `normalization`. `kfac` and `order=3` take one
model at a time (features [n, d]), not the reproduction's stacked restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor

from dgalign.algorithms.hessian import REDUCTION_HPARAM, HeadAlignment, Terms
from dgalign.algorithms.registry import register
from dgalign.curvature import penalties as closed
from dgalign.curvature.kfac import kfac_penalty
from dgalign.curvature.third_order import third_order_penalty
from dgalign.errors import ConfigError
from dgalign.hparams import (
    LEARNING_RATE,
    SMALL_IMAGES,
    HParam,
    const,
    int_log_uniform,
    integer,
    log_uniform,
    nonnegative,
    one_of,
    zero_or,
)

HESSIAN_MODES = (*closed.CMA_MODES, "kfac")
ORDERS = (2, 3)
NORMALIZATIONS = ("authors", "none")
#: the CMA authors' weight scale for ResNet features (2048-d) against ViT-S (384-d)
RESNET_SCALE = 2048 / 384
RESNET_BACKBONES = ("resnet18", "resnet50")


def full_hessian_bytes(num_domains: int, num_classes: int, d: int, itemsize: int = 4) -> int:
    """Estimated peak bytes of `full` mode: (2K + 3) tensors of [C(d+1)]^2 entries."""
    size = num_classes * (d + 1)
    return (2 * num_domains + 3) * size * size * itemsize


def check_full_budget(
    num_domains: int, num_classes: int, d: int, itemsize: int, budget_mb: float
) -> None:
    """ConfigError (one line) if `full` mode would need more than `budget_mb` MiB."""
    need = full_hessian_bytes(num_domains, num_classes, d, itemsize)
    if need > budget_mb * 2**20:
        size = num_classes * (d + 1)
        raise ConfigError(
            f"CMA hessian_mode 'full' needs about {need / 2**30:.1f} GiB ({2 * num_domains + 3} "
            f"Hessians of {size} x {size} for {num_domains} domains, C={num_classes}, "
            f"d+1={d + 1}), over hessian_memory_mb={budget_mb:g}; use hessian_mode 'gram' "
            "(the same penalty without building Hessians) or raise hessian_memory_mb"
        )


def authors_term_scale(num_classes: int) -> float:
    """1 / C^2: the authors divide G_e and H_e by C."""
    return 1.0 / num_classes**2


@register
class CMA(HeadAlignment):
    """Closed-form moment alignment (module docstring): pooled loss +
    grad_weight red_e ||G_e - Gbar||^2 + hess_weight red_e ||H_e - Hbar||_F^2 on the linear
    head, after `penalty_anneal_iters` steps; nothing detached; the authors' normalisation.

    Defaults and ranges are the CMA authors' DomainBed code: weights 5000 / 1000 (their names
    grad_alpha / hess_beta, still accepted), 10^U(1,4) each, anneal steps int(10^U(2,4)), lr
    5e-5 (1e-3 on ColoredMNIST). The default number of anneal steps is not recorded there: 1500
    (DomainBed's Fishr default, inside the range)."""

    DESCRIPTION = "Closed-form moment alignment of head gradients and Hessians (CMA)"
    PAPER = "Moment Alignment: Unifying Gradient and Hessian Matching for DG, arXiv:2506.07378"
    HPARAMS = (
        HParam(
            "grad_weight",
            5000.0,
            log_uniform(1, 4),
            "gradient-alignment weight (authors; their grad_alpha)",
            nonnegative(),
            aliases=("grad_alpha",),
        ),
        HParam(
            "hess_weight",
            1000.0,
            log_uniform(1, 4),
            "Hessian-alignment weight (authors; their hess_beta)",
            nonnegative(),
            aliases=("hess_beta",),
        ),
        HParam(
            "penalty_anneal_iters",
            1500,
            int_log_uniform(10, 2, 4),
            "steps without penalties, Adam re-created after (range: authors; default: Fishr's)",
            integer(0),
        ),
        HParam(
            "hessian_mode",
            "gram",
            const("gram"),
            "full, gram (same value, no H), diag or kfac",
            one_of(*HESSIAN_MODES),
        ),
        HParam(
            "hessian_memory_mb",
            1024,
            const(1024),
            "budget for hessian_mode full (MiB)",
            integer(1),
        ),
        REDUCTION_HPARAM,
        HParam(
            "normalization",
            "authors",
            const("authors"),
            "authors: terms / C^2, ResNet weights / 2048/384 (Hessian: squared); none",
            one_of(*NORMALIZATIONS),
        ),
        HParam(
            "curv_weight",
            0.0,
            zero_or(0.25, log_uniform(-1, 3)),
            "full curvature-magnitude weight (no reference value; 0 = off)",
            nonnegative(),
        ),
        HParam(
            "order",
            2,
            const(2),
            "3: also align third-derivative tensors (weight gamma)",
            integer(2),  # 2 or 3: check_hparams
        ),
        HParam(
            "gamma",
            1000.0,
            log_uniform(1, 4),
            "third-order weight (no reference value)",
            nonnegative(),
        ),
    )
    TERM_WEIGHTS: ClassVar[dict[str, str | None]] = {
        "grad_penalty": "grad_weight",
        "hess_penalty": "hess_weight",
        "curv_penalty": "curv_weight",
        "third_penalty": "gamma",
    }
    LINEAR_HEAD = True

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        """The authors' learning rate: 1e-3 on ColoredMNIST, 5e-5 elsewhere (DomainBed's
        random rule for the dataset is kept)."""
        small = dataset in SMALL_IMAGES
        lr = HParam(
            "lr",
            1e-3 if dataset == "ColoredMNIST" else 5e-5,
            log_uniform(-4.5, -2.5) if small else log_uniform(-5, -3.5),
            "Adam learning rate (CMA authors' default)",
            LEARNING_RATE,
        )
        return [*cls.HPARAMS, lr]

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any]) -> None:
        mode = hparams["hessian_mode"]
        if mode not in HESSIAN_MODES:
            raise ConfigError(f"hessian_mode must be one of {HESSIAN_MODES}, got {mode!r}")
        if hparams.get("order", 2) not in ORDERS:
            raise ConfigError(f"CMA order must be one of {ORDERS}, got {hparams['order']!r}")
        if hparams.get("reduction", "mean") not in closed.REDUCTIONS:
            raise ConfigError(
                f"reduction must be one of {closed.REDUCTIONS}, got {hparams['reduction']!r}"
            )
        if hparams.get("normalization", "authors") not in NORMALIZATIONS:
            raise ConfigError(
                f"normalization must be one of {NORMALIZATIONS}, got {hparams['normalization']!r}"
            )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        if self.hparams["hessian_mode"] == "full":
            weight = self.classifier.weight
            check_full_budget(
                num_domains,
                weight.shape[0],
                weight.shape[1],
                weight.element_size(),
                float(self.hparams["hessian_memory_mb"]),
            )

    @classmethod
    def head_penalties(cls, z, weight, bias, y, counts, hparams) -> tuple[Tensor, Terms]:
        cls.check_hparams(hparams)
        mode, order = hparams["hessian_mode"], hparams.get("order", 2)
        reduction = hparams.get("reduction", "mean")
        c, d = weight.shape[-2], weight.shape[-1]
        if mode == "full":
            restarts = z[..., 0, 0].numel()
            itemsize = z.element_size() * restarts
            check_full_budget(len(counts), c, d, itemsize, float(hparams["hessian_memory_mb"]))
        closed_mode = "diag" if mode == "kfac" else mode  # its hess_penalty is replaced below
        magnitude = float(hparams.get("curv_weight", 0.0)) > 0
        logits, terms = closed.cma_alignment(
            z, weight, bias, y, counts, closed_mode, reduction, magnitude
        )
        extra = {}
        if mode == "kfac" or order == 3:
            if z.dim() != 2:
                raise ConfigError(
                    "CMA hessian_mode 'kfac' and order 3 take one model's features [n, d], "
                    f"got a tensor of shape {tuple(z.shape)}; use hessian_mode gram, order 2"
                )
            zs, lgs = list(z.split(list(counts))), list(logits.split(list(counts)))
            scale = len(counts) if reduction == "sum" else 1
            if mode == "kfac":
                terms["hess_penalty"] = kfac_penalty(zs, lgs) * scale
            if order == 3:
                extra["third_penalty"] = third_order_penalty(zs, lgs) * scale
        if hparams.get("normalization", "authors") == "authors":
            norm = authors_term_scale(c)
            terms = {k: v * norm for k, v in terms.items()}
        return logits, {**terms, **extra}

    @classmethod
    def term_weights(cls, hparams: dict[str, Any], num_classes: int) -> dict[str, float]:
        weights = super().term_weights({"curv_weight": 0.0, **hparams}, num_classes)
        authors = hparams.get("normalization", "authors") == "authors"
        backbone = hparams.get("backbone", "")
        if backbone == "resnet50" and hparams.get("resnet18", False):
            backbone = "resnet18"
        if authors and backbone in RESNET_BACKBONES:
            weights["grad_penalty"] /= RESNET_SCALE
            weights["hess_penalty"] /= RESNET_SCALE**2
            weights["curv_penalty"] /= RESNET_SCALE**2
        return weights
