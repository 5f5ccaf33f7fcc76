"""Penalties of the Colored MNIST scripts, evaluated for R restarts at once.

Notation (one restart, two training envs e; the head theta = Linear(390, 1) weights + bias):
z_e features [n_e, 390], l_e logits, y_e labels, L_e = mean BCE, p = sigmoid(l), and the mean
term from the mean of the env losses Lbar = (1/E) sum_e L_e (the scripts' `train_nll`;
`mean="pooled"` uses the pooled loss of all samples instead, as `algorithms.hessian` does; the
two agree when the envs have equal sizes, i.e. without label shift). Penalties (per restart):
    IRM         (1/E) sum_e (d/ds L_e(s l_e) at s = 1)^2 = (1/E) sum_e (mean_i (p_i - y_i) l_i)^2
    VREx        (L_0 - L_1)^2                                          (Fishr's script)
    Fishr       sum_e ||v_e - vbar||^2, v_e = centred variance over i of the per-sample head
                gradients (p_i - y_i) [z_i, 1], vbar = mean_e v_e
    HGP         alpha sum_e ||H_e g_e - Hbar gbar||^2 + beta sum_e ||g_e - gbar||^2
    Hutchinson  the same with T_e = (1/m) sum_k r_k * (H_e r_k) (fresh Rademacher probes for
                every env and for the mean) instead of H_e g_e
    HessianDiag the same with the exact diag H_e; with expected probes m it adds
                alpha (1/m) sum_e (||off H_e||_F^2 + ||off Hbar||_F^2), the expectation of
                Hutchinson's extra variance (see `algorithms.hessian`)
    CMA         alpha sum_e ||H_e - Hbar||_F^2 + beta sum_e ||G_e - Gbar||^2 (cma.py's terms,
                sum over envs instead of their mean)
Nothing is detached. HGP and Hutchinson run autograd on the batched head: theta_r are slices
of w3 [R, 390, 1], b3 [R, 1, 1] and sum_r L_r has a block-diagonal Hessian, so the gradient,
H g and H r of that sum are the per-restart ones (each restart gets its own probes). The closed
forms (Fishr, HessianDiag, CMA) are the `curvature` / `algorithms` functions under
`torch.func.vmap` over restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dgalign.algorithms.cma import cma_gradient_penalty, cma_hessian_penalty
from dgalign.algorithms.hessian import Terms, alignment_penalties, exact_diag_terms, probe_variance
from dgalign.curvature import (
    head_hessian,
    head_per_sample_gradients,
    hessian_gradient_product,
)
from dgalign.errors import ConfigError

KINDS = ("erm", "irm", "vrex", "fishr", "hgp", "hutchinson", "hessdiag", "cma")
MEANS = ("envs", "pooled")


@dataclass(frozen=True)
class Method:
    """A row of the tables: penalty `kind`, alpha (Hessian term), beta (gradient term),
    Hutchinson probes (0: 150 balanced / 200 label shift) and HessianDiag's expected probes."""

    name: str
    kind: str
    alpha: float = 1.0
    beta: float = 1.0
    n_probes: int = 0
    expected_probes: int = 0

    def probes(self, label_shift: bool) -> int:
        """Hutchinson's probe count: as set, else the scripts' 150 (balanced) / 200 (shift)."""
        return self.n_probes or (200 if label_shift else 150)


METHODS = {
    m.name: m
    for m in (
        Method("ERM", "erm"),
        Method("IRM", "irm"),
        Method("VREx", "vrex"),
        Method("Fishr", "fishr"),
        Method("HGP", "hgp"),
        Method("Hutchinson", "hutchinson"),
        Method("HessianDiag", "hessdiag"),
        Method("HessianDiag-E150", "hessdiag", expected_probes=150),
        Method("CMA", "cma"),
    )
}
ABLATIONS = {
    m.name: m
    for m in (
        Method("HGP(alpha=0)", "hgp", alpha=0.0),
        Method("HGP(beta=0)", "hgp", beta=0.0),
        Method("Hutchinson(alpha=0)", "hutchinson", alpha=0.0),
        Method("Hutchinson(beta=0)", "hutchinson", beta=0.0),
    )
}


@dataclass
class Batch:
    """One step's training-env tensors for R restarts: features [R, n_e, H], logits
    [R, n_e, 1], labels [R, n_e] (0/1 floats), losses L_e [R], and the head (w3, b3)."""

    zs: list[Tensor]
    logits: list[Tensor]
    ys: list[Tensor]
    nlls: list[Tensor]
    head: tuple[Tensor, Tensor]


def bce(logits: Tensor, y: Tensor) -> Tensor:
    """Mean binary cross-entropy with logits per restart: logits [R, n, 1], y [R, n] -> [R]."""
    return F.binary_cross_entropy_with_logits(logits[..., 0], y, reduction="none").mean(-1)


def irm_penalty(batch: Batch) -> Tensor:
    """(1/E) sum_e (mean_i (sigmoid(l_i) - y_i) l_i)^2: the squared derivative of L_e(s l) at
    s = 1 (the dummy-scale gradient of the IRM script), in closed form."""
    per = [
        ((torch.sigmoid(lg[..., 0]) - y) * lg[..., 0]).mean(-1).square()
        for lg, y in zip(batch.logits, batch.ys, strict=True)
    ]
    return torch.stack(per).mean(0)


def vrex_penalty(batch: Batch) -> Tensor:
    """(L_0 - L_1)^2, the V-REx penalty of Fishr's Colored MNIST script (two envs)."""
    if len(batch.nlls) != 2:
        raise ConfigError(f"the scripts' V-REx penalty needs 2 envs, got {len(batch.nlls)}")
    return (batch.nlls[0] - batch.nlls[1]).square()


def fishr_penalty(batch: Batch) -> Tensor:
    """sum_e ||v_e - vbar||^2 with v_e the per-coordinate (population) variance of the
    per-sample head gradients of env e (`curvature.head_per_sample_gradients`)."""
    per_sample = torch.func.vmap(head_per_sample_gradients)
    variances = torch.stack(
        [
            per_sample(z, lg, y).var(dim=1, unbiased=False).flatten(1)
            for z, lg, y in zip(batch.zs, batch.logits, batch.ys, strict=True)
        ]
    )  # [E, R, H + 1]
    return (variances - variances.mean(0)).square().sum((0, 2))


def _flat(tensors: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """Per-restart flattening [R, ...] -> [R, P] (weight entries, then the bias)."""
    return torch.cat([t.flatten(1) for t in tensors], dim=1)


def _mean_loss(batch: Batch, mean: str) -> Tensor:
    """sum_r Lbar_r: mean of the env losses ("envs") or the pooled loss ("pooled")."""
    if mean == "envs":
        return torch.stack(batch.nlls).mean(0).sum()
    if mean == "pooled":
        return bce(torch.cat(batch.logits, 1), torch.cat(batch.ys, 1)).sum()
    raise ConfigError(f"mean must be one of {MEANS}, got {mean!r}")


def hgp_batch_terms(batch: Batch, mean: str = "envs") -> Terms:
    """Terms [R, P]: T_e = H_e g_e and g_e. With mean="envs", gbar = mean_e g_e and
    Hbar gbar = mean_e H_e gbar, every H v by the closed form `head_hvp` (one product per env
    for g_e and gbar together); with mean="pooled", `curvature.hessian_gradient_product`
    (H g = grad ||g||^2 / 2) by autograd on the batched head for each env and the pooled loss.
    The tests check both against `algorithms.hessian.hgp_terms`."""
    params = list(batch.head)
    if mean == "pooled":
        per = [hessian_gradient_product(nll.sum(), params) for nll in batch.nlls]
        hg_bar, g_bar = hessian_gradient_product(_mean_loss(batch, mean), params)
        hess, grads = [_flat(h) for h, _ in per], [_flat(g) for _, g in per]
        return Terms(hess, _flat(hg_bar), grads, _flat(g_bar))
    if mean != "envs":
        raise ConfigError(f"mean must be one of {MEANS}, got {mean!r}")
    grads = [
        torch.autograd.grad(nll.sum(), params, create_graph=True) for nll in batch.nlls
    ]  # ([R, H, 1], [R, 1, 1]) per env
    g_bar = [sum(g[i] for g in grads) / len(grads) for i in (0, 1)]
    hess, hv_bar = [], []
    for z, lg, g in zip(batch.zs, batch.logits, grads, strict=True):
        hw, hb = head_hvp(z, lg, (torch.cat([g[0], g_bar[0]], 2), torch.cat([g[1], g_bar[1]], 2)))
        hess.append(_flat((hw[..., :1], hb[..., :1])))
        hv_bar.append(_flat((hw[..., 1:], hb[..., 1:])))
    g_flat = [_flat(g) for g in grads]
    return Terms(hess, sum(hv_bar) / len(hv_bar), g_flat, _flat(g_bar))


Probes = tuple[Tensor, Tensor]


def rademacher_probes(r: int, h: int, m: int, like: Tensor) -> Probes:
    """m Rademacher probes per restart for the head: weight part [R, H, m], bias part [R, 1, m]."""
    draw = torch.randint(0, 2, (r, h + 1, m), device=like.device).to(like.dtype) * 2 - 1
    return draw[:, :h], draw[:, h:]


def head_hvp(z: Tensor, logits: Tensor, probes: Probes) -> Probes:
    """H v for m vectors at once, closed form for the sigmoid-BCE linear head:
    H v = (1/n) Z~^T (s * (Z~ v)), s = p (1 - p), Z~ = [z, 1]; z [R, n, H] -> [R, H, m], [R, 1, m]
    """
    p = torch.sigmoid(logits)
    v = torch.baddbmm(probes[1], z, probes[0]) * (p * (1 - p))  # [R, n, m]
    n = z.shape[1]
    return z.transpose(1, 2) @ v / n, v.sum(1, keepdim=True) / n


def hutchinson_batch_terms(
    batch: Batch, n_probes: int, mean: str = "envs", probes: list[Probes] | None = None
) -> Terms:
    """Terms [R, P]: T_e = (1/m) sum_k r_k * (H_e r_k), Hutchinson's diag H_e estimate with m =
    `n_probes` Rademacher probes drawn afresh for every env and for the mean (independently per
    restart; `probes` = [env0, env1, ..., mean] gives them explicitly), and g_e by autograd.

    H r is the closed form `head_hvp`, i.e. what `curvature.hutchinson_diag` gets from
    grad(g . r) (the tests check both agree given the same probes) without the batched double
    backward, which under vmap expands the features once per probe. Hbar r = (1/E) sum_e H_e r
    ("envs") or the pooled samples' H r ("pooled")."""
    r, _, h = batch.zs[0].shape
    if probes is None:
        probes = [rademacher_probes(r, h, n_probes, batch.zs[0]) for _ in range(len(batch.zs) + 1)]

    def diag(hv: Probes, pr: Probes) -> Tensor:
        return torch.cat([(pr[0] * hv[0]).mean(-1), (pr[1] * hv[1]).mean(-1)], 1)

    pairs = list(zip(batch.zs, batch.logits, strict=True))
    last = probes[len(pairs)]
    params = list(batch.head)

    def grad(loss: Tensor) -> Tensor:
        return _flat(torch.autograd.grad(loss, params, create_graph=True))

    grads = [grad(nll.sum()) for nll in batch.nlls]
    if mean == "envs":  # one product per env for its own probes and the mean's probes
        m = last[0].shape[2]
        hess, hv_parts = [], []
        for (z, lg), pr in zip(pairs, probes, strict=False):
            both = (torch.cat([pr[0], last[0]], 2), torch.cat([pr[1], last[1]], 2))
            hw, hb = head_hvp(z, lg, both)
            hess.append(diag((hw[..., :-m], hb[..., :-m]), pr))
            hv_parts.append((hw[..., -m:], hb[..., -m:]))
        hv_bar = tuple(sum(part[i] for part in hv_parts) / len(pairs) for i in (0, 1))
        return Terms(hess, diag(hv_bar, last), grads, torch.stack(grads).mean(0))
    if mean != "pooled":
        raise ConfigError(f"mean must be one of {MEANS}, got {mean!r}")
    hess = [diag(head_hvp(z, lg, pr), pr) for (z, lg), pr in zip(pairs, probes, strict=False)]
    hv_bar = head_hvp(torch.cat(batch.zs, 1), torch.cat(batch.logits, 1), last)
    return Terms(hess, diag(hv_bar, last), grads, grad(_mean_loss(batch, mean)))


def exact_diag_batch_terms(batch: Batch, mean: str = "envs") -> Terms:
    """Terms [R, 1, P]: `algorithms.hessian.exact_diag_terms` under vmap over restarts; with
    mean="envs" the mean terms become the mean of the env terms (diag and gradient are linear
    in the loss)."""
    labels = [y[..., None] for y in batch.ys]
    terms = torch.func.vmap(lambda zs, lgs, ys: exact_diag_terms(zs, lgs, ys, False))(
        batch.zs, batch.logits, labels
    )
    if mean == "pooled":
        return terms
    if mean != "envs":
        raise ConfigError(f"mean must be one of {MEANS}, got {mean!r}")
    return terms._replace(
        hess_mean=torch.stack(terms.hess).mean(0), grad_mean=torch.stack(terms.grad).mean(0)
    )


def expected_probe_variance(batch: Batch, n_probes: int, mean: str = "envs") -> Tensor:
    """(1/m) sum_e (||off H_e||^2 + ||off Hbar||^2) [R]; Hbar = mean_e H_e ("envs", built from
    `curvature.head_hessian` once per env) or the pooled Hessian (`algorithms.hessian.
    probe_variance` under vmap)."""
    if mean == "pooled":
        fn = lambda zs, lgs: probe_variance(zs, lgs, n_probes, False, False, "sum")  # noqa: E731
        return torch.func.vmap(fn)(batch.zs, batch.logits)
    build = torch.func.vmap(head_hessian)
    hessians = [build(z, lg) for z, lg in zip(batch.zs, batch.logits, strict=True)]

    def off(h: Tensor) -> Tensor:
        return h.square().sum((1, 2)) - torch.diagonal(h, dim1=1, dim2=2).square().sum(1)

    h_bar = torch.stack(hessians).mean(0)
    return (sum(off(h) for h in hessians) + len(hessians) * off(h_bar)) / n_probes


def cma_penalty(batch: Batch, alpha: float, beta: float) -> Tensor:
    """E [alpha cma_hessian_penalty (full) + beta cma_gradient_penalty] (cma.py's (1/E) means
    times E = sums over envs) under vmap over restarts."""
    labels = [y[..., None] for y in batch.ys]
    k = len(batch.zs)

    def one(zs: list[Tensor], lgs: list[Tensor], ys: list[Tensor]) -> Tensor:
        return k * (
            alpha * cma_hessian_penalty(zs, lgs, "full") + beta * cma_gradient_penalty(zs, lgs, ys)
        )

    return torch.func.vmap(one)(batch.zs, batch.logits, labels)


def per_restart_alignment(terms: Terms, alpha: float, beta: float) -> Tensor:
    """alpha hess_penalty + beta grad_penalty per restart [R], each restart's value from
    `algorithms.hessian.alignment_penalties` (reduction "sum": sum over envs)."""
    n = terms.grad_mean.shape[0]
    out = []
    for r in range(n):
        part = alignment_penalties(
            Terms(
                [t[r] for t in terms.hess],
                terms.hess_mean[r],
                [g[r] for g in terms.grad],
                terms.grad_mean[r],
            ),
            "sum",
        )
        out.append(alpha * part["hess_penalty"] + beta * part["grad_penalty"])
    return torch.stack(out)


def penalty(method: Method, batch: Batch, label_shift: bool, mean: str = "envs") -> Tensor:
    """The method's penalty for every restart, [R] (zeros for ERM)."""
    kind = method.kind
    simple: dict[str, Callable[[Batch], Tensor]] = {
        "irm": irm_penalty,
        "vrex": vrex_penalty,
        "fishr": fishr_penalty,
    }
    if kind == "erm":
        return torch.zeros_like(batch.nlls[0])
    if kind in simple:
        return simple[kind](batch)
    if kind == "cma":
        return cma_penalty(batch, method.alpha, method.beta)
    if kind == "hgp":
        terms = hgp_batch_terms(batch, mean)
    elif kind == "hutchinson":
        terms = hutchinson_batch_terms(batch, method.probes(label_shift), mean)
    elif kind == "hessdiag":
        terms = exact_diag_batch_terms(batch, mean)
    else:
        raise ConfigError(f"unknown penalty kind {kind!r}; valid: {', '.join(KINDS)}")
    value = per_restart_alignment(terms, method.alpha, method.beta)
    if kind == "hessdiag" and method.expected_probes > 0:
        value = value + method.alpha * expected_probe_variance(batch, method.expected_probes, mean)
    return value
