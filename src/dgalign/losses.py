"""Domain-generalization penalties as drop-in modules for any PyTorch training loop.

Each module is called with the per-domain features, labels (and, where the penalty needs
them, the classifier head or the logits) and returns `(penalty, terms)`: the weighted penalty
to add to your task loss, and a dict of its unweighted terms (tensors, for logging)::

    align = HessianAlignment("hgp")            # the defaults of the registered HGP algorithm
    zs = [featurizer(x) for x, _ in batches]  # one tensor [n_e, d] per domain
    ys = [y for _, y in batches]
    penalty, terms = align(zs, ys, head)       # head: the nn.Linear classifier
    loss = F.cross_entropy(head(torch.cat(zs)), torch.cat(ys)) + penalty

Every module runs the registered algorithm's own penalty functions (its `head_penalties`,
`logit_penalty` or `feature_penalty` classmethods and `term_weights`), and its defaults are
that algorithm's `HPARAMS` defaults; keyword arguments override them (by the same names,
older aliases such as `alpha`/`beta` accepted). The penalty is at full strength: the
algorithms' warm-up (`*_anneal_iters`, a weight 0 or 1 before it) is left to your loop.

- `HessianAlignment(kind)`: "hgp" (HGP: Hessian-gradient products), "hutchinson"
  (Hutchinson's estimate of the Hessian diagonal), "diag" (the exact diagonal, HessianDiag),
  "expected" (the exact expectation of Hutchinson's penalty with `expected_probes` probes);
  penalty = hess_weight * hess_penalty + grad_weight * grad_penalty over the head.
- `CMA()`: closed-form moment alignment of head gradients and Hessians (linear head).
- `Fishr()`: lambda * the distance between the domains' per-sample head-gradient variances
  (one step's variances; the algorithm also averages them over steps).
- `IRM()`: irm_lambda * the IRMv1 penalty from the logits; `VREx()`: vrex_lambda * the
  variance of the domain risks; `CORAL()`: mmd_gamma * the mean CORAL distance of the domain
  pairs of features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dgalign import algorithms
from dgalign.errors import ConfigError
from dgalign.hparams import alias_map, apply_overrides, check_hparams

Terms = dict[str, Tensor]

#: The algorithm whose penalty each `HessianAlignment` kind is.
KINDS = {"hgp": "HGP", "hutchinson": "Hutchinson", "diag": "HessianDiag", "expected": "HessianDiag"}


def algorithm_defaults(name: str, **overrides: Any) -> dict[str, Any]:
    """The `HPARAMS` defaults of registered algorithm `name` with `overrides` (names or their
    aliases); ConfigError for unknown names and values outside their domains."""
    space = list(algorithms.get(name).HPARAMS)
    aliases = alias_map(space)
    renamed = {aliases.get(key, key): value for key, value in overrides.items()}
    values = apply_overrides({h.name: h.default for h in space}, renamed, owner=name)
    return check_hparams(values, space)


def _batch(tensors: Sequence[Tensor], labels: Sequence[Tensor]) -> tuple[Tensor, Tensor, list[int]]:
    if isinstance(tensors, Tensor) or isinstance(labels, Tensor):
        raise ConfigError("pass one tensor per domain: lists of features (or logits) and labels")
    if len(tensors) != len(labels) or len(tensors) < 1:
        raise ConfigError(
            f"got {len(tensors)} feature tensors and {len(labels)} label tensors; pass one of "
            "each per domain"
        )
    return torch.cat(list(tensors)), torch.cat(list(labels)), [len(y) for y in labels]


class DomainPenalty(nn.Module):
    """Base class: the hyper-parameters of algorithm `ALGORITHM` (its defaults, overridden by
    keyword arguments) and the penalty's overall weight (what the algorithm's schedule
    reaches after its warm-up)."""

    ALGORITHM: ClassVar[str] = ""

    def __init__(self, **hparams: Any) -> None:
        super().__init__()
        self.hparams = algorithm_defaults(self.ALGORITHM, **hparams)
        self.algorithm = algorithms.get(self.ALGORITHM)
        check = getattr(self.algorithm, "check_hparams", None)
        if check is not None:
            check(self.hparams)

    def scale(self) -> float:
        """The weight the algorithm's schedule gives the penalty after its warm-up."""
        return float(self.algorithm.penalty_schedule(self.hparams).after)

    def weigh(self, terms: Terms, num_classes: int) -> Tensor:
        """scale * sum_k weight_k term_k (the algorithm's `term_weights`)."""
        weights = self.algorithm.term_weights(self.hparams, num_classes)
        return self.scale() * sum(weights[k] * v for k, v in terms.items())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())


class _HeadPenalty(DomainPenalty):
    """A penalty on a linear head's features: the algorithm's `head_penalties`."""

    def nonlinear(self, z: Tensor, y: Tensor, counts: list[int], head: nn.Module) -> Terms:
        raise ConfigError(f"{type(self).__name__} needs an nn.Linear head (closed forms)")

    def forward(
        self, features: Sequence[Tensor], labels: Sequence[Tensor], head: nn.Module
    ) -> tuple[Tensor, Terms]:
        """(penalty, terms) of the domains' `features` [n_e, d] with `labels` [n_e] under
        classifier `head`."""
        z, y, counts = _batch(features, labels)
        if isinstance(head, nn.Linear):
            _, terms = self.algorithm.head_penalties(
                z, head.weight, head.bias, y, counts, self.hparams
            )
            num_classes = head.out_features
        else:
            terms = self.nonlinear(z, y, counts, head)
            num_classes = int(head(z[:1]).shape[-1])
        return self.weigh(terms, num_classes), terms


class HessianAlignment(_HeadPenalty):
    """Hessian and gradient alignment over the head (Hemati et al.): `kind` "hgp",
    "hutchinson", "diag" or "expected" (module docstring). A head that is not an nn.Linear
    works for "hgp" and "hutchinson" (autograd over its parameters)."""

    def __init__(self, kind: str = "hgp", **hparams: Any) -> None:
        if kind not in KINDS:
            raise ConfigError(
                f"HessianAlignment kind must be one of {', '.join(KINDS)}, got {kind!r}"
            )
        self.ALGORITHM = KINDS[kind]
        if kind == "expected" and "expected_probes" not in hparams:
            hparams["expected_probes"] = algorithm_defaults("Hutchinson")["n_probes"]
        super().__init__(**hparams)
        if kind == "diag" and int(self.hparams["expected_probes"]) != 0:
            raise ConfigError('HessianAlignment("diag") takes no expected_probes; use "expected"')
        if kind == "expected" and int(self.hparams["expected_probes"]) < 1:
            raise ConfigError('HessianAlignment("expected") needs expected_probes >= 1')
        self.kind = kind

    def nonlinear(self, z: Tensor, y: Tensor, counts: list[int], head: nn.Module) -> Terms:
        from dgalign.algorithms.hessian import alignment_form, autograd_alignment

        if self.kind not in ("hgp", "hutchinson"):
            return super().nonlinear(z, y, counts, head)
        probes = int(self.hparams["n_probes"]) if self.kind == "hutchinson" else 0
        share = bool(self.hparams.get("share_probes", False))
        params = list(head.parameters())
        form = alignment_form(self.hparams)
        return autograd_alignment(params, head(z), y, counts, form, probes, share)


class CMA(_HeadPenalty):
    """Closed-form moment alignment of the head's gradients and Hessians (nn.Linear head)."""

    ALGORITHM = "CMA"


class Fishr(_HeadPenalty):
    """Fishr's matching of the per-sample head-gradient variances (nn.Linear head), on this
    batch's variances (the algorithm's moving average over steps is not kept)."""

    ALGORITHM = "Fishr"


class _LogitPenalty(DomainPenalty):
    def forward(
        self,
        logits: Sequence[Tensor],
        labels: Sequence[Tensor],
        head: nn.Module | None = None,
    ) -> tuple[Tensor, Terms]:
        """(penalty, terms) from the domains' `logits` [n_e, C] and `labels`; given `head`,
        the first argument holds features and the logits are `head(features)`."""
        if head is not None:
            logits = [head(z) for z in logits]
        out, y, counts = _batch(logits, labels)
        terms = {"penalty": self.algorithm.logit_penalty(out, y, counts, self.hparams)}
        return self.weigh(terms, int(out.shape[-1])), terms


class IRM(_LogitPenalty):
    """IRMv1's penalty (the gradient of each domain's risk w.r.t. a dummy logit scale)."""

    ALGORITHM = "IRM"


class VREx(_LogitPenalty):
    """V-REx's penalty: the variance of the domain risks."""

    ALGORITHM = "VREx"


class CORAL(DomainPenalty):
    """Deep CORAL: mean over domain pairs of the distance of feature means and covariances."""

    ALGORITHM = "CORAL"

    def scale(self) -> float:
        return float(self.hparams["mmd_gamma"])

    def forward(
        self, features: Sequence[Tensor], labels: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, Terms]:
        """(penalty, terms) of the domains' `features` [n_e, d]; `labels` are not used."""
        if isinstance(features, Tensor):
            raise ConfigError("pass one feature tensor per domain")
        terms = {"penalty": self.algorithm.feature_penalty(list(features))}
        return self.scale() * terms["penalty"], terms


__all__ = [
    "CMA",
    "CORAL",
    "IRM",
    "KINDS",
    "DomainPenalty",
    "Fishr",
    "HessianAlignment",
    "VREx",
    "algorithm_defaults",
]
