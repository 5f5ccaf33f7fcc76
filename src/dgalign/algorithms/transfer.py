"""Transferability of predictors across domains: TRM (Xu & Jaakkola, 2022) and Transfer
(Zhang et al., 2021), as in DomainBed.

TRM keeps one linear head w_e per training domain, fitted on that domain's (detached)
features by 30 SGD steps per update. After `iters` ERM steps it adds, for every domain Q,

    sum_{i != Q} alpha_Qi CE_i(w_Q)  -  cos_lambda * <H_Q^{-1} g_P, g_Q>,

g_Q = d CE_Q(w_Q) / d W_Q, g_P = d sum_i alpha_Qi CE_i(w_Q) / d W_Q (detached), H_Q^{-1} g_P a
10-term Neumann series of the inverse Hessian of CE_Q at W_Q (stopped early if it diverges),
and updates the domain weights alpha_Qi <- alpha_Qi exp(eta alpha_Qi CE_i(w_Q)) (the weighted
loss, as DomainBed; rows renormalised before use). The heads and alpha are part of the module
state (DomainBed keeps the heads in a plain list, outside its checkpoints).

Transfer alternates, every update: (1) an ERM step of featurizer and head; (2) a step of the
featurizer on t_lambda * gap(h'), gap = max_e CE_e - min_e CE_e of an adversarial head h'
started at the head; (3) `d_steps_per_g` SGD ascent steps of h' on the gap, each projected
back to the Euclidean ball of radius `delta` around the head. DomainBed's random search always
sets `gda`, where its optimizer holds only h' (so featurizer and head never train); here `gda`
means plain SGD (learning rate `lr`) for featurizer and head instead of Adam.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, autograd, nn

from dgalign.algorithms._common import concat, sizes
from dgalign.algorithms.base import Algorithm, FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import (
    LEARNING_RATE,
    HParam,
    boolean,
    choice,
    const,
    int_log_uniform,
    integer,
    interval,
    log_uniform,
    nonnegative,
    positive,
    uniform,
)
from dgalign.networks import build_featurizer
from dgalign.utils.tensors import flatten

NEUMANN_TERMS = 10
NEUMANN_LIMIT = 10.0
HEAD_STEPS = 30
HEAD_LR = 0.1


def neumann_inverse_hvp(v: Tensor, head: nn.Linear, z: Tensor, y: Tensor) -> Tensor:
    """H^{-1} v ~ sum_{k=0}^{K} (I - H)^k v for H the Hessian of CE(head(z), y) w.r.t. the
    head weight (K = 10; stops once an entry exceeds 10 in magnitude)."""
    v = v.detach()
    estimate = v
    z, y = z.detach(), y.detach()
    for _ in range(NEUMANN_TERMS):
        loss = F.cross_entropy(head(z), y)
        (grad,) = autograd.grad(loss, head.weight, create_graph=True)
        (hv,) = autograd.grad(flatten([grad]) @ v, head.weight)
        v = (v - hv.reshape(-1)).detach()
        estimate = (estimate + v).detach()
        if estimate.abs().max() > NEUMANN_LIMIT:
            break
    return estimate


@register
class TRM(Algorithm):
    """ERM for `iters` steps, then CE + (1/E) sum_Q [sum_{i != Q} alpha_Qi CE_i(w_Q)
    - cos_lambda <H_Q^{-1} g_P, g_Q>] (module docstring)."""

    DESCRIPTION = "Transfer risk minimization: per-domain heads that transfer to other domains"
    PAPER = "Xu & Jaakkola, 2022"
    HPARAMS = (
        HParam(
            "cos_lambda",
            1e-4,
            log_uniform(-5, 0),
            "weight of the gradient-alignment term",
            nonnegative(),
        ),
        HParam(
            "iters",
            200,
            int_log_uniform(10, 0, 4),
            "ERM steps before the transfer risk",
            integer(0),
        ),
        HParam(
            "groupdro_eta", 1e-2, log_uniform(-3, -1), "step size of the domain weights", positive()
        ),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer = build_featurizer(input_shape, self.hparams)
        d = self.featurizer.n_outputs
        self.classifier = nn.Linear(d, num_classes)
        self.heads = nn.ModuleList(nn.Linear(d, num_classes) for _ in range(num_domains))
        self.head_optimizers = [torch.optim.SGD(h.parameters(), lr=HEAD_LR) for h in self.heads]
        lr, wd = self.hparams["lr"], self.hparams["weight_decay"]
        self.optimizer_f = torch.optim.Adam(self.featurizer.parameters(), lr=lr, weight_decay=wd)
        self.optimizer_c = torch.optim.Adam(self.classifier.parameters(), lr=lr, weight_decay=wd)
        self.register_buffer("alpha", 1.0 - torch.eye(num_domains))
        self.count_updates()

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        state["head_optimizers"] = [o.state_dict() for o in self.head_optimizers]
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for opt, saved in zip(self.head_optimizers, state.pop("head_optimizers"), strict=True):
            opt.load_state_dict(saved)
        super().load_extra_state(state)

    def _fit_heads(self, features: list[Tensor], labels: list[Tensor]) -> None:
        for _ in range(HEAD_STEPS):
            loss = sum(
                F.cross_entropy(h(z.detach()), y)
                for h, z, y in zip(self.heads, features, labels, strict=True)
            )
            for opt in self.head_optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in self.head_optimizers:
                opt.step()

    def transfer_risk(self, features: list[Tensor], labels: list[Tensor]) -> Tensor:
        """(1/E) sum_Q [sum_{i != Q} alpha_Qi CE_i(w_Q) - cos_lambda <H_Q^-1 g_P, g_Q>]; also
        updates alpha (module docstring)."""
        total = features[0].new_zeros(())
        n = len(features)
        if n < 2:
            return total
        for q in range(n):
            head = self.heads[q]
            loss_q = F.cross_entropy(head(features[q]), labels[q])
            (grad_q,) = autograd.grad(loss_q, head.weight, create_graph=True)
            weights = self.alpha[q].clone()
            losses_p = [
                F.cross_entropy(head(features[i]), labels[i]) * weights[i]
                for i in range(n)
                if i != q
            ]
            loss_p = torch.stack(losses_p).sum()
            (grad_p,) = autograd.grad(loss_p, head.weight, create_graph=True)
            inv_hvp = neumann_inverse_hvp(grad_p.reshape(-1), head, features[q], labels[q])
            total = total + loss_p - self.hparams["cos_lambda"] * (inv_hvp @ grad_q.reshape(-1))
            with torch.no_grad():
                others = [i for i in range(n) if i != q]
                for i, lp in zip(others, losses_p, strict=True):
                    self.alpha[q, i] *= torch.exp(self.hparams["groupdro_eta"] * lp.detach())
        return total / n

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        loss = F.cross_entropy(self.classifier(z), all_y)
        objective = loss
        trm = loss.new_zeros(())
        if self.updates >= int(self.hparams["iters"]):
            if self.hparams["class_balanced"]:
                for head in self.heads:
                    head.weight.data.copy_(self.classifier.weight.data)
            self.alpha /= self.alpha.sum(1, keepdim=True)
            features = list(z.split(sizes(minibatches)))
            labels = [y for _, y in minibatches]
            self._fit_heads(features, labels)
            trm = self.transfer_risk(features, labels)
            objective = loss + trm
        self.optimizer_f.zero_grad()
        self.optimizer_c.zero_grad()
        objective.backward()
        self.optimizer_f.step()
        self.optimizer_c.step()
        self.counted()
        return {"loss": objective.detach(), "nll": loss.detach(), "trm_loss": trm.detach()}

    def predict(self, x: Tensor) -> Tensor:
        return self.classifier(self.featurizer(x))


def project_to_ball(adversary: nn.Module, center: nn.Module, delta: float) -> Tensor:
    """Move `adversary`'s parameters onto the ball ||theta' - theta|| <= delta around
    `center`'s (Euclidean norm over all parameters); returns the distance before (0-dim).
    Branch-free: the host never waits for the comparison."""
    with torch.no_grad():
        pairs = list(zip(adversary.parameters(), center.parameters(), strict=True))
        dist = torch.sqrt(sum(((a - c) ** 2).sum() for a, c in pairs))
        outside = dist > delta
        ratio = delta / dist
        for a, c in pairs:
            a.copy_(torch.where(outside, c + ratio * (a - c), a))
    return dist


@register
class Transfer(FeaturizerClassifier):
    """Per update: ERM step; featurizer step on t_lambda * gap(h'); `d_steps_per_g` projected
    ascent steps of the adversarial head h' on the gap (module docstring)."""

    DESCRIPTION = "Transferability: minimise the worst domain-loss gap of nearby heads"
    PAPER = "Zhang et al., 2021"
    HPARAMS = (
        HParam("t_lambda", 1.0, log_uniform(-2, 1), "weight of the loss gap", nonnegative()),
        HParam(
            "delta", 2.0, uniform(0.1, 3.0), "radius of the adversarial heads' ball", nonnegative()
        ),
        HParam("d_steps_per_g", 10, choice([1, 2, 5]), "ascent steps of h' per update", integer(1)),
        HParam(
            "weight_decay_d", 0.0, log_uniform(-6, -2), "unused (DomainBed lists it)", nonnegative()
        ),
        HParam(
            "gda",
            False,
            const(True),
            "plain gradient descent-ascent: SGD (lr) instead of Adam for featurizer + head",
            boolean(),
        ),
        HParam(
            "beta1",
            0.5,
            choice([0.0, 0.5]),
            "unused (DomainBed lists it)",
            interval(0.0, 1.0, hi_open=True),
        ),
        HParam(
            "lr_d",
            1e-3,
            log_uniform(-4.5, -2.5),
            "SGD learning rate of the adversary",
            LEARNING_RATE,
        ),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.adv_classifier = copy.deepcopy(self.classifier)
        self.adv_opt = torch.optim.SGD(self.adv_classifier.parameters(), lr=self.hparams["lr_d"])

    def make_optimizer(self) -> torch.optim.Optimizer:
        if self.hparams["gda"]:
            return torch.optim.SGD(self.network.parameters(), lr=self.hparams["lr"])
        return super().make_optimizer()

    def loss_gap(self, minibatches: Minibatches) -> Tensor:
        """max_e CE_e(h') - min_e CE_e(h') on the current features."""
        losses = torch.stack(
            [F.cross_entropy(self.adv_classifier(self.featurizer(x)), y) for x, y in minibatches]
        )
        return losses.max() - losses.min()

    def update(self, minibatches: Minibatches) -> Logs:
        loss = self.erm_step(minibatches)
        gap = self.hparams["t_lambda"] * self.loss_gap(minibatches)
        self.optimizer.zero_grad()
        gap.backward()
        self.optimizer.step()
        self.adv_classifier.load_state_dict(self.classifier.state_dict())
        for _ in range(int(self.hparams["d_steps_per_g"])):
            self.adv_opt.zero_grad()
            gap = -self.hparams["t_lambda"] * self.loss_gap(minibatches)
            gap.backward()
            self.adv_opt.step()
            project_to_ball(self.adv_classifier, self.classifier, float(self.hparams["delta"]))
        self.optimizer.zero_grad()  # the ascent steps left gradients on the featurizer
        return {"loss": loss.detach(), "gap": -gap.detach()}
