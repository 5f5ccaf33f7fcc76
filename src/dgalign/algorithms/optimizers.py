"""Optimizers some algorithms offer besides Adam: LARS (You et al., 2017), as DomainBed's ERM++
uses it (MoCo v3's variant: no trust ratio and no weight decay for parameters of <= 1 dim)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio. For a weight p of >= 2 dims:
    d = grad + wd * p, d <- d * eta ||p|| / ||d|| (when both norms are > 0); for biases and
    normalisation parameters d = grad. Then mu <- momentum * mu + d, p <- p - lr * mu."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "trust_coefficient": trust_coefficient,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    p_norm, d_norm = torch.norm(p), torch.norm(d)
                    one = torch.ones_like(p_norm)
                    ratio = torch.where(
                        (p_norm > 0) & (d_norm > 0),
                        group["trust_coefficient"] * p_norm / d_norm,
                        one,
                    )
                    d = d.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(d)
                p.add_(mu, alpha=-group["lr"])
        return loss
