"""Methods that match the domains' gradients: IGA (gradient means), Fish (first-order
inner-product matching), Fishr (gradient variances)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import autograd, nn

from dgalign.algorithms._common import (
    AnnealedPenalty,
    concat,
    domain_gradients,
    domain_losses,
    sizes,
)
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.algorithms.schedule import PenaltySchedule
from dgalign.curvature.autodiff import per_sample_grads
from dgalign.curvature.penalties import FISHR_FORMS, fishr_penalty, gradient_variances
from dgalign.curvature.risk import mean_loss
from dgalign.errors import ConfigError
from dgalign.hparams import (
    HParam,
    choice,
    const,
    int_uniform,
    integer,
    interval,
    log_uniform,
    nonnegative,
    one_of,
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

    def update(self, minibatches: Minibatches) -> Logs:
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
        return {"loss": loss.detach(), "nll": nll.detach(), "penalty": penalty.detach()}


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

    def update(self, minibatches: Minibatches) -> Logs:
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
            losses.append(loss.detach())
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


def flat_per_sample_grads(module: nn.Module, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[n, P]: the gradient of each sample's cross-entropy w.r.t. `module`'s parameters,
    flattened in `named_parameters` order (`curvature.per_sample_grads`); keeps the graph to
    `inputs` and to the parameters."""
    grads = per_sample_grads(module, None, F.cross_entropy, inputs, y)
    return torch.cat([g.reshape(len(y), -1) for g in grads.values()], dim=1)


def head_order(variances: torch.Tensor) -> torch.Tensor:
    """[..., C, d + 1] (bias last per class) -> [..., C d + C] in nn.Linear's parameter order
    (all weights row-major, then the biases), the layout of Fishr's moving-average buffer."""
    return torch.cat([variances[..., :-1].flatten(-2), variances[..., -1]], -1)


@register
class Fishr(AnnealedPenalty):
    """min CE + lambda_t * fishr_penalty(v), v_e = EMA over steps of the per-domain (centred)
    variance of the per-sample classifier-head gradients (closed form on a linear head:
    (1/n) (r * r)^T (Z~ * Z~) - G_e^2); lambda_t = 0 before `penalty_anneal_iters` steps (Adam
    reset at the switch) and `lambda` after. `penalty_form` "mean": (1/E) sum_e mean_p
    (v_e - vbar)_p^2 (DomainBed), "sum": sum_e sum_p (the Colored MNIST script). The stateless
    `head_penalties` is the EMA's first step, i.e. no moving average (set `ema` 0 to train so)."""

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
        HParam(
            "penalty_form",
            "mean",
            const("mean"),
            "mean over domains and coordinates (DomainBed) or sum (the Colored MNIST script)",
            one_of(*FISHR_FORMS),
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
        if self.hparams.get("penalty_form", "mean") not in FISHR_FORMS:
            form = self.hparams["penalty_form"]
            raise ConfigError(f"Fishr penalty_form must be one of {FISHR_FORMS}, got {form!r}")
        n_head = sum(p.numel() for p in self.classifier.parameters())
        # Uncorrected EMA of each domain's gradient variance (DomainBed's MovingAverage).
        self.register_buffer("variance_ema", torch.zeros(num_domains, n_head))

    @classmethod
    def penalty_schedule(cls, hparams: dict[str, Any]) -> PenaltySchedule:
        return PenaltySchedule(int(hparams["penalty_anneal_iters"]), float(hparams["lambda"]))

    @classmethod
    def head_penalties(cls, z, weight, bias, y, counts, hparams) -> tuple[torch.Tensor, dict]:
        logits, v = gradient_variances(z, weight, bias, y, counts)
        return logits, {"penalty": fishr_penalty(v, hparams.get("penalty_form", "mean"))}

    def domain_variances(
        self, z: torch.Tensor, y: torch.Tensor, counts: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the [E, P] centred variances of the per-sample head gradients."""
        if isinstance(self.classifier, nn.Linear):
            head = self.classifier
            logits, v = gradient_variances(z, head.weight, head.bias, y, counts)
            return logits, head_order(v)
        grads = flat_per_sample_grads(self.classifier, z, y).split(counts)
        v = torch.stack([(g - g.mean(0, keepdim=True)).pow(2).mean(0) for g in grads])
        return self.classifier(z), v

    def update(self, minibatches: Minibatches) -> Logs:
        if len(minibatches) != len(self.variance_ema):
            raise ValueError(
                f"Fishr was built for {len(self.variance_ema)} domains, got {len(minibatches)}"
            )
        weight = self.schedule_weight()
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        logits, variances = self.domain_variances(z, all_y, sizes(minibatches))
        nll = mean_loss(logits, all_y)
        ema = float(self.hparams["ema"])
        ema_var = ema * self.variance_ema + (1 - ema) * variances
        self.variance_ema.copy_(ema_var.detach())
        form = self.hparams.get("penalty_form", "mean")
        penalty = fishr_penalty((ema_var / (1 - ema))[:, None, :], form)
        loss = nll + weight * penalty
        self.step(loss)
        return {"loss": loss.detach(), "nll": nll.detach(), "penalty": penalty.detach()}
