"""Methods that match the domains' gradients: IGA (gradient means), Fish (first-order
inner-product matching), Fishr (gradient variances)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import autograd, nn
from torch.func import functional_call, grad, vmap

from dgalign.algorithms._common import (
    AnnealedPenalty,
    concat,
    domain_gradients,
    domain_losses,
    sizes,
)
from dgalign.algorithms.base import FeaturizerClassifier, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import (
    HParam,
    choice,
    int_uniform,
    integer,
    interval,
    log_uniform,
    nonnegative,
    uniform,
)


@register
class IGA(FeaturizerClassifier):
    """min Rbar + lambda * sum_e ||grad R_e - sg(grad Rbar)||^2 over all network parameters,
    Rbar = (1/E) sum_e R_e, sg = stop-gradient (the mean gradient is a constant)."""

    DESCRIPTION = "Inter-environmental gradient alignment (penalise gradient deviations)"
    PAPER = "Koyama & Yamaguchi, 2020"
    HPARAMS = (
        HParam(
            "penalty",
            1000.0,
            log_uniform(1, 5),
            "gradient-alignment penalty weight",
            nonnegative(),
        ),
    )

    def update(self, minibatches: Minibatches) -> dict[str, float]:
        params = list(self.network.parameters())
        all_x, _ = concat(minibatches)
        logits = self.network(all_x)
        losses = domain_losses(logits, minibatches)
        env_grads = domain_gradients(losses, params, create_graph=True)
        nll = torch.stack(losses).mean()
        mean_grad = [g.detach() for g in autograd.grad(nll, params, retain_graph=True)]
        penalty = sum(
            (g - m).pow(2).sum()
            for grads in env_grads
            for g, m in zip(grads, mean_grad, strict=True)
        )
        loss = nll + self.hparams["penalty"] * penalty
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item()}


@register
class Fish(FeaturizerClassifier):
    """theta <- theta + meta_lr * (theta~ - theta), theta~ = Adam steps on a copy of theta over
    the domains in turn (one step per domain minibatch): first-order matching of the domains'
    gradient inner products. The inner Adam state carries over between updates (DomainBed)."""

    DESCRIPTION = "Fish: first-order gradient matching via sequential inner steps"
    PAPER = "Shi et al., 2022"
    HPARAMS = (
        HParam(
            "meta_lr",
            0.5,
            choice([0.05, 0.1, 0.5]),
            "outer interpolation step toward theta~",
            interval(0.0, 1.0, lo_open=True),
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
        self.inner_optimizer_state: dict[str, Any] | None = None

    def update(self, minibatches: Minibatches) -> dict[str, float]:
        inner = copy.deepcopy(self.network)
        inner_opt = torch.optim.Adam(
            inner.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        if self.inner_optimizer_state is not None:
            inner_opt.load_state_dict(self.inner_optimizer_state)
        losses = []
        for x, y in minibatches:
            loss = F.cross_entropy(inner(x), y)
            inner_opt.zero_grad()
            loss.backward()
            inner_opt.step()
            losses.append(loss.item())
        self.inner_optimizer_state = inner_opt.state_dict()
        meta_lr = self.hparams["meta_lr"]
        inner_state = inner.state_dict()
        with torch.no_grad():
            for name, value in self.network.state_dict().items():
                if value.is_floating_point():
                    value.add_(meta_lr * (inner_state[name] - value))
        return {"loss": sum(losses) / len(losses)}

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        state["inner_optimizer_state"] = self.inner_optimizer_state
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.inner_optimizer_state = state.pop("inner_optimizer_state", None)
        super().load_extra_state(state)


def per_sample_grads(module: nn.Module, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[n, P]: the gradient of each sample's cross-entropy w.r.t. `module`'s parameters
    (flattened in `named_parameters` order), by torch.func (vmap over grad). The result keeps
    the autograd graph to `inputs` and to the parameters."""
    params = dict(module.named_parameters())

    def sample_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(module, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, inputs, y)
    return torch.cat([grads[name].reshape(len(y), -1) for name in params], dim=1)


def fishr_penalty(variances: torch.Tensor) -> torch.Tensor:
    """(1/E) sum_e mean_p (v_e - vbar)_p^2 for per-domain gradient variances `variances` [E, P]."""
    return (variances - variances.mean(0, keepdim=True)).pow(2).mean(1).mean(0)


@register
class Fishr(AnnealedPenalty):
    """min CE + lambda_t * (1/E) sum_e mean((v_e - vbar)^2), v_e = EMA over steps of the
    per-domain (centred) variance of the per-sample classifier-head gradients; lambda_t = 0
    before `penalty_anneal_iters` steps (Adam reset at the switch) and `lambda` after."""

    DESCRIPTION = "Fishr: match the domains' per-sample gradient variances on the head"
    PAPER = "Rame et al., 2022"
    HPARAMS = (
        HParam(
            "lambda", 1000.0, log_uniform(1, 4), "variance-matching penalty weight", nonnegative()
        ),
        HParam(
            "penalty_anneal_iters",
            1500,
            int_uniform(0, 5000),
            "steps without the penalty (Adam is reset when it switches on)",
            integer(0),
        ),
        HParam(
            "ema",
            0.95,
            uniform(0.90, 0.99),
            "moving-average factor of the variances",
            interval(0.0, 1.0),
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
        n_head = sum(p.numel() for p in self.classifier.parameters())
        # Uncorrected EMA of each domain's gradient variance (DomainBed's MovingAverage).
        self.register_buffer("variance_ema", torch.zeros(num_domains, n_head))

    def domain_variances(self, z: torch.Tensor, y: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """[E, P] centred variances of the per-sample head gradients of each domain."""
        grads = per_sample_grads(self.classifier, z, y).split(counts)
        return torch.stack([(g - g.mean(0, keepdim=True)).pow(2).mean(0) for g in grads])

    def update(self, minibatches: Minibatches) -> dict[str, float]:
        if len(minibatches) != len(self.variance_ema):
            raise ValueError(
                f"Fishr was built for {len(self.variance_ema)} domains, got {len(minibatches)}"
            )
        weight = self.penalty_weight(
            self.hparams["penalty_anneal_iters"], self.hparams["lambda"], 0.0
        )
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        nll = F.cross_entropy(self.classifier(z), all_y)
        ema = float(self.hparams["ema"])
        ema_var = ema * self.variance_ema + (1 - ema) * self.domain_variances(
            z, all_y, sizes(minibatches)
        )
        self.variance_ema.copy_(ema_var.detach())
        penalty = fishr_penalty(ema_var / (1 - ema))
        loss = nll + weight * penalty
        self.step(loss)
        return {"loss": loss.item(), "nll": nll.item(), "penalty": penalty.item()}
