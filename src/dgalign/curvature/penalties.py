"""The alignment penalties of a linear head, built on the closed-form kernels.

Every function takes features z [..., N, d] of all domains (domain e = the next `sizes[e]`
rows), the head weight [..., C, d] and bias [..., C], labels y [..., N], and returns the logits
[..., N, C] with a dict of unweighted penalty terms [...] (leading dims: restarts trained
together). One kernel call computes the logits and every per-domain moment, so `loss.backward()`
runs the head's backward and the penalties' in one pass over the features.

Alignment (HGP, Hutchinson, exact diagonal): for per-domain curvature terms T_e and gradients
g_e of the head,
    hess_penalty = red_e ||T_e - Tbar||^2,   grad_penalty = red_e ||g_e - gbar||^2,
with `Form`: the mean terms from the pooled loss (weights n_e / N) or the mean of the domain
losses (1 / E), detached or not, `red` the mean or the sum over domains. Tbar is the same
construction on the mean Hessian Hbar = sum_e w_e H_e: Hbar gbar (HGP), Hutchinson's estimate
of diag Hbar with its own probes, or diag Hbar.

Curvature magnitude (a term of its own, weighed by `curv_weight`): the squared off-diagonal
(HessianDiag, `curvature_magnitude`) or full (CMA, `full_magnitude`) Frobenius norms of each
domain's head Hessian and of the mean one, red_e (||H_e||^2 + ||Hbar||^2). 1/m times the
off-diagonal one is what Hutchinson's m-probe sampling adds to the exact-diagonal penalty in
expectation (`expected_probe_variance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dgalign.curvature.forms import hessian_forms
from dgalign.curvature.hvp import head_hgp, head_hutchinson_probes
from dgalign.curvature.moments import head_moments

MEAN_TERMS = ("pooled", "envs")
REDUCTIONS = ("mean", "sum")
#: explicit per-domain Hessians are used while they have at most this many entries
HESSIAN_MAX_ELEMENTS = 1 << 24

Terms = dict[str, Tensor]


@dataclass(frozen=True)
class Form:
    """How the mean terms are built and how the domain terms are reduced."""

    mean_term: str = "pooled"
    detach_mean: bool = True
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.mean_term not in MEAN_TERMS:
            raise ValueError(f"mean_term must be one of {MEAN_TERMS}, got {self.mean_term!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")

    def weights(self, sizes: Sequence[int]) -> list[float]:
        """w_e of the mean terms: n_e / N (pooled) or 1 / E (envs)."""
        if self.mean_term == "envs":
            return [1.0 / len(sizes)] * len(sizes)
        total = float(sum(sizes))
        return [n / total for n in sizes]

    def mean(self, x: Tensor, sizes: Sequence[int]) -> Tensor:
        """sum_e w_e x_e over the domain dim -3 of x [..., E, C, D], detached if asked."""
        w = x.new_tensor(self.weights(sizes))
        out = (x * w[:, None, None]).sum(-3)
        return out.detach() if self.detach_mean else out

    def reduce(self, per_domain: Tensor) -> Tensor:
        """Mean or sum over the last dim (domains)."""
        return per_domain.mean(-1) if self.reduction == "mean" else per_domain.sum(-1)

    def align(self, x: Tensor, mean: Tensor) -> Tensor:
        """red_e ||x_e - mean||^2 for x [..., E, C, D], mean [..., C, D]."""
        return self.reduce((x - mean[..., None, :, :]).square().sum((-2, -1)))


DOMAINBED = Form()  # the authors' DomainBed code: pooled mean term, detached, mean over domains


def _check_probes(n_probes: int) -> int:
    if int(n_probes) < 1:
        raise ValueError(f"the number of probes must be a positive integer, got {n_probes}")
    return int(n_probes)


def hessian_fits(num_logits: int, width: int) -> bool:
    """Whether per-domain head Hessians of C (d + 1) x C (d + 1) entries are small enough."""
    return (num_logits * (width + 1)) ** 2 <= HESSIAN_MAX_ELEMENTS


def diag_alignment(z, weight, bias, y, sizes, form: Form = DOMAINBED) -> tuple[Tensor, Terms]:
    """HessianDiag: T_e = diag H_e = (1/n) s^T (Z~ * Z~), exact."""
    logits, grads, diags = head_moments(z, weight, bias, y, sizes, square="hessian_diag")
    return logits, {
        "hess_penalty": form.align(diags, form.mean(diags, sizes)),
        "grad_penalty": form.align(grads, form.mean(grads, sizes)),
    }


def hgp_alignment(z, weight, bias, y, sizes, form: Form = DOMAINBED) -> tuple[Tensor, Terms]:
    """HGP: T_e = H_e g_e, Tbar = Hbar gbar = sum_e w_e H_e gbar (closed-form H v)."""
    w = form.weights(sizes)
    logits, grads, prods, means = head_hgp(z, weight, bias, y, sizes, w)
    t_bar = (means * means.new_tensor(w)[:, None, None]).sum(-3)
    t_bar = t_bar.detach() if form.detach_mean else t_bar
    return logits, {
        "hess_penalty": form.align(prods, t_bar),
        "grad_penalty": form.align(grads, form.mean(grads, sizes)),
    }


def draw_probes(batch: Sequence[int], size: int, n_probes: int, like: Tensor) -> Tensor:
    """Rademacher probes [*batch, size, m] (size = C (d + 1), index c (d + 1) + j) from the
    global torch RNG."""
    shape = (*batch, size, n_probes)
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


def _outer(probes: Tensor) -> Tensor:
    """(1/m) P P^T for probes [..., size, m]: the estimate is rowsum(H * that)."""
    return probes @ probes.mT / probes.shape[-1]


def hutchinson_alignment(
    z,
    weight,
    bias,
    y,
    sizes,
    form: Form = DOMAINBED,
    n_probes: int = 300,
    share_probes: bool = False,
    method: str = "auto",
) -> tuple[Tensor, Terms]:
    """Hutchinson: T_e = (1/m) sum_k r_k * (H_e r_k), m = `n_probes` Rademacher probes, fresh
    for every domain and for the mean (drawn in that order from the global RNG) or one draw for
    all (`share_probes`). method "hessian": T_e = rowsum(H_e * R_e), R_e = (1/m) sum_k r_k r_k^T
    with explicit per-domain Hessians; "probes": closed-form H r products, for heads too wide
    for that; "auto": "hessian" where the Hessian is cheaper (C (d + 1) <= 5 m) and fits."""
    m = _check_probes(n_probes)
    c, d = weight.shape[-2], weight.shape[-1]
    size = c * (d + 1)
    if method == "auto":
        method = "hessian" if size <= 5 * m and hessian_fits(c, d) else "probes"
    num = len(sizes)
    w = form.weights(sizes)
    batch = tuple(z.shape[:-2])
    if method == "hessian":
        logits, grads, hessians = head_moments(z, weight, bias, y, sizes, hessian=True)
        sets = 1 if share_probes else num + 1
        outers = [_outer(draw_probes(batch, size, m, z)) for _ in range(sets)]
        own = torch.stack(outers[:num] if not share_probes else outers * num, -3)
        est = (hessians * own).sum(-1).unflatten(-1, (c, d + 1))
        h_bar = (hessians * hessians.new_tensor(w)[:, None, None]).sum(-3)
        t_bar = (h_bar * outers[-1]).sum(-1).unflatten(-1, (c, d + 1))
    elif method == "probes":
        count = 1 if share_probes else num + 1
        seeds = [int(s) for s in torch.randint(0, 2**62, (count,))]
        rows = [[seeds[0]]] * num if share_probes else [[seeds[e], seeds[-1]] for e in range(num)]
        logits, grads, both = head_hutchinson_probes(z, weight, bias, y, sizes, rows, m)
        est = both[..., 0, :, :]
        means = both[..., -1, :, :]
        t_bar = (means * means.new_tensor(w)[:, None, None]).sum(-3)
    else:
        raise ValueError(f"method must be auto, hessian or probes, got {method!r}")
    t_bar = t_bar.detach() if form.detach_mean else t_bar
    return logits, {
        "hess_penalty": form.align(est, t_bar),
        "grad_penalty": form.align(grads, form.mean(grads, sizes)),
    }


def _offdiag_sq(h: Tensor) -> Tensor:
    return h.square().sum((-2, -1)) - torch.diagonal(h, dim1=-2, dim2=-1).square().sum(-1)


def _domain_weights(
    sizes: Sequence[int], rows: Sequence[Sequence[float]], device: torch.device
) -> Tensor:
    """[K, N] weights on `device`: row k gives every sample of domain e the weight
    rows[k][e] / n_e."""
    cols = [torch.full((n,), 1.0 / n, dtype=torch.float64, device=device) for n in sizes]
    return torch.stack([torch.cat([r[e] * cols[e] for e in range(len(sizes))]) for r in rows])


def curvature_magnitude(
    z,
    weight,
    bias,
    y,
    sizes,
    form: Form = DOMAINBED,
    share_probes: bool = False,
    method: str = "auto",
) -> tuple[Tensor, Terms]:
    """HessianDiag's terms plus the off-diagonal curvature magnitude of the head
        curv_penalty = red_e (||off H_e||_F^2 + ||off Hbar||_F^2)   (default)
                     = red_e ||off (H_e - Hbar)||_F^2                (`share_probes`),
    Hbar = sum_e w_e H_e, detached with the mean terms (its term then only adds a constant to
    the value). (1/m) curv_penalty is the expected excess of Hutchinson's m-probe penalty over
    the exact diagonal one (`algorithms.hessian`). method "hessian" (explicit Hessians), "gram"
    (quadratic forms, never building H), "auto": "hessian" where it fits."""
    c, d = weight.shape[-2], weight.shape[-1]
    if method == "auto":
        method = "hessian" if hessian_fits(c, d) else "gram"
    w = form.weights(sizes)
    if method == "hessian":
        logits, grads, hessians = head_moments(z, weight, bias, y, sizes, hessian=True)
        diags = torch.diagonal(hessians, dim1=-2, dim2=-1).unflatten(-1, (c, d + 1))
        h_bar = (hessians * hessians.new_tensor(w)[:, None, None]).sum(-3)
        h_bar = h_bar.detach() if form.detach_mean else h_bar
        if share_probes:
            per = _offdiag_sq(hessians - h_bar[..., None, :, :])
        else:
            per = _offdiag_sq(hessians) + _offdiag_sq(h_bar)[..., None]
    elif method == "gram":
        logits, grads, diags = head_moments(z, weight, bias, y, sizes, square="hessian_diag")
        d_bar = form.mean(diags, sizes)
        num = len(sizes)
        lg = logits.detach() if form.detach_mean else logits
        zz = z.detach() if form.detach_mean else z
        if share_probes:  # ||H_e - Hbar||^2 on [z, z (detached as `form` says)]
            rows = [[float(f == e) for f in range(num)] + [-v for v in w] for e in range(num)]
            wts = _domain_weights([*sizes, *sizes], rows, z.device)
            sq = hessian_forms(torch.cat([z, zz], -2), torch.cat([logits, lg], -2), wts)
            per = sq - (diags - d_bar[..., None, :, :]).square().sum((-2, -1))
        else:
            eye = [[float(f == e) for f in range(num)] for e in range(num)]
            sq = hessian_forms(z, logits, _domain_weights(sizes, eye, z.device))
            sq_bar = hessian_forms(zz, lg, _domain_weights(sizes, [w], z.device))[..., 0]
            d_bar_sq = d_bar.square().sum((-2, -1))
            per = sq - diags.square().sum((-2, -1)) + (sq_bar - d_bar_sq)[..., None]
    else:
        raise ValueError(f"method must be auto, hessian or gram, got {method!r}")
    d_bar = form.mean(diags, sizes)
    return logits, {
        "hess_penalty": form.align(diags, d_bar),
        "grad_penalty": form.align(grads, form.mean(grads, sizes)),
        "curv_penalty": form.reduce(per),
    }


def expected_probe_variance(
    z,
    weight,
    bias,
    y,
    sizes,
    n_probes: int,
    form: Form = DOMAINBED,
    share_probes: bool = False,
    method: str = "auto",
) -> tuple[Tensor, Terms]:
    """HessianDiag with Hutchinson's expected probe variance (see `algorithms.hessian`): the
    diagonal alignment terms plus probe_variance = (1/m) curv_penalty (`curvature_magnitude`)
        = red_e (1/m) (||off H_e||_F^2 + ||off Hbar||_F^2)   (independent probes)
        = red_e (1/m) ||off (H_e - Hbar)||_F^2              (`share_probes`)."""
    m = _check_probes(n_probes)
    logits, terms = curvature_magnitude(z, weight, bias, y, sizes, form, share_probes, method)
    terms["probe_variance"] = terms.pop("curv_penalty") / m
    return logits, terms


def _cma_full(z, weight, bias, y, sizes, form: Form) -> tuple[Tensor, Tensor, Tensor]:
    logits, grads, hessians = head_moments(z, weight, bias, y, sizes, hessian=True)
    return logits, grads, form.align(hessians, form.mean(hessians, sizes))


def _cma_gram(z, weight, bias, y, sizes, form: Form) -> tuple[Tensor, Tensor, Tensor]:
    logits, grads = head_moments(z, weight, bias, y, sizes)
    if form.detach_mean:
        raise ValueError(
            "the gram mode builds ||H_e - Hbar||^2 as one form: Hbar cannot be detached"
        )
    w = form.weights(sizes)
    rows = [[float(f == e) - w[f] for f in range(len(sizes))] for e in range(len(sizes))]
    per = hessian_forms(z, logits, _domain_weights(sizes, rows, z.device))
    return logits, grads, form.reduce(per)


def _cma_diag(z, weight, bias, y, sizes, form: Form) -> tuple[Tensor, Tensor, Tensor]:
    logits, grads, diags = head_moments(z, weight, bias, y, sizes, square="hessian_diag")
    return logits, grads, form.align(diags, form.mean(diags, sizes))


#: CMA's Hessian-term evaluations: mode -> (z, weight, bias, y, sizes, form) -> (logits, G, term)
CMA_MODES = {"full": _cma_full, "gram": _cma_gram, "diag": _cma_diag}


def full_magnitude(z, logits, sizes, form: Form) -> Tensor:
    """red_e (||H_e||_F^2 + ||Hbar||_F^2), Hbar = sum_e w_e H_e (not detached), from the
    quadratic forms of `forms` (never building H)."""
    num = len(sizes)
    rows = [[float(f == e) for f in range(num)] for e in range(num)] + [form.weights(sizes)]
    sq = hessian_forms(z, logits, _domain_weights(sizes, rows, z.device))
    return form.reduce(sq[..., :num] + sq[..., num:])


def cma_alignment(
    z,
    weight,
    bias,
    y,
    sizes,
    mode: str = "gram",
    reduction: str = "mean",
    magnitude: bool = False,
) -> tuple[Tensor, Terms]:
    """CMA: grad_penalty = red_e ||G_e - Gbar||^2, hess_penalty = red_e ||H_e - Hbar||_F^2
    ("full": explicit Hessians; "gram": quadratic forms, never building H; "diag": diagonals
    only), plain means over the domains, nothing detached; with `magnitude` also
    curv_penalty = red_e (||H_e||_F^2 + ||Hbar||_F^2) (`full_magnitude`, any mode)."""
    if mode not in CMA_MODES:
        raise ValueError(f"mode must be one of {tuple(CMA_MODES)}, got {mode!r}")
    form = Form("envs", False, reduction)
    logits, grads, hess = CMA_MODES[mode](z, weight, bias, y, sizes, form)
    terms = {"grad_penalty": form.align(grads, form.mean(grads, sizes)), "hess_penalty": hess}
    if magnitude:
        terms["curv_penalty"] = full_magnitude(z, logits, sizes, form)
    return logits, terms


FISHR_FORMS = ("mean", "sum")


def gradient_variances(z, weight, bias, y, sizes) -> tuple[Tensor, Tensor]:
    """(logits, v [..., E, C, D]): per coordinate of the head, the variance over domain e's
    samples of the per-sample gradients r_i (x) z~_i, v_e = (1/n) (r * r)^T (Z~ * Z~) - G_e^2."""
    logits, grads, second = head_moments(z, weight, bias, y, sizes, square="gradient_square")
    return logits, second - grads.square()


def fishr_penalty(variances: Tensor, form: str = "mean") -> Tensor:
    """Fishr's distance of the domains' gradient variances [..., E, C, D] to their mean:
    "mean": (1/E) sum_e mean_p (v_e - vbar)_p^2 (DomainBed); "sum": sum_e sum_p (the Colored
    MNIST script)."""
    if form not in FISHR_FORMS:
        raise ValueError(f"Fishr's penalty form must be one of {FISHR_FORMS}, got {form!r}")
    dev = (variances - variances.mean(-3, keepdim=True)).square()
    if form == "mean":
        return dev.mean((-2, -1)).mean(-1)
    return dev.sum((-3, -2, -1))
