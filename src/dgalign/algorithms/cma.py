"""CMA: closed-form moment alignment of head gradients and Hessians (PROTOCOLS.md section 3).

Linear head with the bias folded in as a constant feature (our curvature functions put the 1
last, z~ = [z, 1]; every norm below is the same). For K domains with n_e samples each:
    G_e = (P - Y)^T Z~ / n_e,      H_e = (1/n_e) sum_i S_i (x) z~_i z~_i^T,
    S_i = diag(p_i) - p_i p_i^T  (p_i (1 - p_i) for a one-logit sigmoid head),
    penalty = grad_alpha (1/K) sum_e ||G_e - Gbar||^2 + hess_beta (1/K) sum_e ||H_e - Hbar||_F^2
with Gbar, Hbar the plain means over the K domains and nothing detached; the objective is the
pooled mean loss plus the penalty, which is 0 for `penalty_anneal_iters` steps (Adam is
re-created when it switches on). The Hessian term has three evaluations (`hessian_mode`):
    full  builds every H_e, [C(d+1)]^2 entries each (the paper's "speed" mode); refused with a
          ConfigError, before anything is allocated, when about (2K + 3) Hessian-sized tensors
          (the K Hessians, the K differences kept for backward, the mean and the construction
          temporaries) would exceed `hessian_memory_mb`;
    gram  (the paper's "memory" mode) with the K x K Gram matrix M_ef = <H_e, H_f>_F,
              sum_e ||H_e - Hbar||^2 = sum_e M_ee - 2 sum_e <H_e, Hbar> + K <Hbar, Hbar>
                                     = tr M - (1/K) 1^T M 1,
          each M_ef from `head_hessian_inner` (O(n_e n_f (C + d)) time, O(n_e n_f) memory): equal
          to `full` for any C and d, without ever building a Hessian;
    diag  aligns only the diagonals: (1/K) sum_e ||diag H_e - mean_f diag H_f||^2;
    kfac  aligns the Kronecker-factored Hessians H_e ~ E[S] (x) E[z~ z~^T]
          (`dgalign.curvature.kfac`, O(n^2 d + n C^2), never builds a factor product).
`order=3` adds gamma (1/K) sum_e ||T_e - Tbar||_F^2 over the third-derivative tensors of the
head loss, from their Gram form (`dgalign.curvature.third_order`, O(n^2 (C + d))).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from dgalign.algorithms.hessian import HeadAlignment, Penalties
from dgalign.algorithms.registry import register
from dgalign.curvature import head_gradient, head_hessian, head_hessian_diag, head_hessian_inner
from dgalign.curvature.kfac import kfac_penalty
from dgalign.curvature.third_order import third_order_penalty
from dgalign.errors import ConfigError
from dgalign.hparams import SMALL_IMAGES, HParam, const, int_log_uniform, log_uniform

HESSIAN_MODES = ("full", "gram", "diag", "kfac")
ORDERS = (2, 3)


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


def cma_gradient_penalty(
    zs: Sequence[Tensor], logits: Sequence[Tensor], ys: Sequence[Tensor]
) -> Tensor:
    """(1/K) sum_e ||G_e - Gbar||^2, G_e the closed-form head gradient of domain e."""
    grads = torch.stack([head_gradient(z, lg, y) for z, lg, y in zip(zs, logits, ys, strict=True)])
    return (grads - grads.mean(0)).square().sum() / len(grads)


def hessian_gram(zs: Sequence[Tensor], logits: Sequence[Tensor]) -> Tensor:
    """The K x K matrix of Frobenius inner products <H_e, H_f> of the domains' head Hessians."""
    k = len(zs)
    entries: dict[tuple[int, int], Tensor] = {}
    for e in range(k):
        for f in range(e, k):
            entries[e, f] = head_hessian_inner(zs[e], logits[e], zs[f], logits[f])
    return torch.stack(
        [torch.stack([entries[min(e, f), max(e, f)] for f in range(k)]) for e in range(k)]
    )


def cma_hessian_penalty(
    zs: Sequence[Tensor],
    logits: Sequence[Tensor],
    mode: str = "gram",
    memory_mb: float = 1024,
) -> Tensor:
    """(1/K) sum_e ||H_e - Hbar||_F^2 (`full`, `gram`) or its diagonal-only version (`diag`)."""
    k = len(zs)
    if mode == "gram":
        gram = hessian_gram(zs, logits)
        return (torch.diagonal(gram).sum() - gram.sum() / k) / k
    if mode == "kfac":
        return kfac_penalty(zs, logits)
    if mode == "diag":
        diags = torch.stack([head_hessian_diag(z, lg) for z, lg in zip(zs, logits, strict=True)])
        return (diags - diags.mean(0)).square().sum() / k
    if mode == "full":
        z0, l0 = zs[0], logits[0]
        itemsize = torch.promote_types(z0.dtype, l0.dtype).itemsize
        check_full_budget(k, l0.shape[1], z0.shape[1], itemsize, memory_mb)
        hessians = [head_hessian(z, lg) for z, lg in zip(zs, logits, strict=True)]
        mean = sum(hessians) / k
        return sum((h - mean).square().sum() for h in hessians) / k
    raise ConfigError(f"hessian_mode must be one of {HESSIAN_MODES}, got {mode!r}")


@register
class CMA(HeadAlignment):
    """Closed-form moment alignment (module docstring): pooled loss +
    grad_alpha (1/K) sum_e ||G_e - Gbar||^2 + hess_beta (1/K) sum_e ||H_e - Hbar||_F^2 on the
    linear head, after `penalty_anneal_iters` steps; nothing detached.

    Defaults and ranges are the CMA authors' DomainBed code (PROTOCOLS.md section 3): weights
    5000 / 1000, 10^U(1,4) each, anneal steps int(10^U(2,4)), lr 5e-5 (1e-3 on ColoredMNIST).
    The default number of anneal steps is not recorded there: 1500 (DomainBed's Fishr default,
    inside the range)."""

    DESCRIPTION = "Closed-form moment alignment of head gradients and Hessians (CMA)"
    PAPER = "Moment Alignment: Unifying Gradient and Hessian Matching for DG, arXiv:2506.07378"
    HPARAMS = (
        HParam("grad_alpha", 5000.0, log_uniform(1, 4), "gradient-alignment weight (authors)"),
        HParam("hess_beta", 1000.0, log_uniform(1, 4), "Hessian-alignment weight (authors)"),
        HParam(
            "penalty_anneal_iters",
            1500,
            int_log_uniform(10, 2, 4),
            "steps without penalties, Adam re-created after (range: authors; default: Fishr's)",
        ),
        HParam("hessian_mode", "gram", const("gram"), "full, gram (same value, no H), diag, kfac"),
        HParam("hessian_memory_mb", 1024, const(1024), "budget for hessian_mode full (MiB)"),
        HParam("order", 2, const(2), "3: also align third-derivative tensors (weight gamma)"),
        HParam("gamma", 1000.0, log_uniform(1, 4), "third-order weight (no reference value)"),
    )
    WEIGHTS: ClassVar[dict[str, str]] = {
        "grad_penalty": "grad_alpha",
        "hess_penalty": "hess_beta",
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
        )
        return [*cls.HPARAMS, lr]

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        mode = self.hparams["hessian_mode"]
        if mode not in HESSIAN_MODES:
            raise ConfigError(f"hessian_mode must be one of {HESSIAN_MODES}, got {mode!r}")
        if self.hparams.get("order", 2) not in ORDERS:
            raise ConfigError(f"CMA order must be one of {ORDERS}, got {self.hparams['order']!r}")
        if mode == "full":
            weight = self.classifier.weight
            check_full_budget(
                num_domains,
                weight.shape[0],
                weight.shape[1],
                weight.element_size(),
                float(self.hparams["hessian_memory_mb"]),
            )

    def penalties(self, zs: list[Tensor], logits: list[Tensor], ys: list[Tensor]) -> Penalties:
        mode, budget = self.hparams["hessian_mode"], float(self.hparams["hessian_memory_mb"])
        out = {
            "grad_penalty": cma_gradient_penalty(zs, logits, ys),
            "hess_penalty": cma_hessian_penalty(zs, logits, mode, budget),
        }
        if self.hparams.get("order", 2) == 3:
            out["third_penalty"] = third_order_penalty(zs, logits)
        return out
