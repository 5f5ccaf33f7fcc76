"""GLSD_SSD and GLSD_FSD (DomainBed main): domain generalization by making the distribution of
per-sample utilities u = -CE dominate, at second (SSD) or first (FSD) order, a reference
distribution of past utilities, under affine combinations of the training domains. The math is
in `dgalign.algorithms.dominance`.

One update, with n domains, b samples each, lambda_min = -gamma / sqrt(n):

1. Affine weights: K - 1 random points of the affine hull (plus the n domains themselves when
   `glsd_dominate_all_domains`) and the worst combination, pi lambda_max + (1 - pi)
   lambda_min, pi a softmax over the domains of how far each one's Fk lies above the others'.
   pi is re-estimated every `glsd_update_worst_env_every_steps` steps and blended linearly
   from the previous estimate over the first steps / `glsd_lambda_alpha_div` of each period.
2. Classifier loss: the mean over the K combinations of the SSD (or FSD) loss of this step's
   pooled utilities against nb utilities drawn from a replay buffer of past steps' (capacity
   5 n batch_size, seeded with this step's on the first update), each sample weighted
   lambda_domain / nb. The SSD loss adds a margin m_t = m_{t-1} (1 - min(t / T, 1)), m = 0.2
   at the start, T = `glsd_margin_steps` (it moves the loss value, not its gradient).
3. Regularizer on the utilities `glsd_utype` of -CE: the mean absolute pairwise gap between
   the Fk curves of the combinations (`imagined_domains`: the random ones;
   `bestworst` / `imagined_domains&bestworst`: those plus the two extreme ones, as in
   DomainBed both options take the random ones too), or `VREx`: the variance over all entries
   u_k lambda_ck / nb of those combinations (DomainBed's reading).
4. loss = L_cls + w_t L_reg with w_t = `glsd_penalty_lambda_min` for t < warm-up; from
   t = `glsd_lossbalancer_warmup` on (where the optimizer is re-created) both terms are divided
   by exponential moving averages of their absolute values (factor `glsd_lossbalancer_alpha`)
   and w_t = min + max * (1 - exp(-((t - warm-up) / tau)^power)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dgalign.algorithms import dominance as D
from dgalign.algorithms._common import concat, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.glsd_hparams import GLSD_HPARAMS
from dgalign.algorithms.registry import register
from dgalign.errors import ConfigError

INITIAL_MARGIN = 0.2
BUFFER_STEPS = 5  # the replay buffer holds this many steps of pooled utilities
BALANCER_EPS = 1e-8
BEST, WORST = 1, 0  # rows of `pi`: the "dominating" and "dominated" estimates


class _GLSD(FeaturizerClassifier):
    """Shared by GLSD_SSD (`ORDER` 2) and GLSD_FSD (`ORDER` 1); module docstring."""

    ORDER = 2
    HPARAMS = GLSD_HPARAMS
    PAPER = "Cen et al., 2024, arXiv:2402.02698"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.count_updates()
        capacity = BUFFER_STEPS * num_domains * int(self.hparams["batch_size"])
        self.register_buffer("ref_utilities", torch.zeros(capacity))
        self.register_buffer("ref_domains", torch.zeros(capacity, dtype=torch.long))
        self.ref_index, self.ref_size = 0, 0
        pi = torch.rand(2, num_domains)
        self.register_buffer("pi", pi / pi.sum(1, keepdim=True))
        pi_prev = torch.rand(2, num_domains)
        self.register_buffer("pi_prev", pi_prev / pi_prev.sum(1, keepdim=True))
        self.register_buffer("margin", torch.tensor(INITIAL_MARGIN))
        self.register_buffer("balance", torch.zeros(2))  # moving |L_cls|, |L_reg|
        self.balancing = False

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam or AdamW (`glsd_optimizer`) with `lr` and `weight_decay`."""
        kind = torch.optim.AdamW if self.hparams["glsd_optimizer"] == "adamw" else torch.optim.Adam
        return kind(
            self.network.parameters(),
            lr=self.hparams["lr"],
            weight_decay=self.hparams["weight_decay"],
        )

    # -- the affine combinations ---------------------------------------------------------

    def _lambda_min(self, n: int) -> float:
        return -float(self.hparams["glsd_affine_hull_gamma"]) / math.sqrt(n)

    def _extreme(self, pi_new: Tensor, row: int, lambda_min: float) -> Tensor:
        """The blended extreme weights of `pi` row `row`, storing `pi_new` at a period start."""
        every = int(self.hparams["glsd_update_worst_env_every_steps"])
        ministep = self.updates % every
        if ministep == 0:
            self.pi_prev[row] = self.pi[row]
            self.pi[row] = pi_new
        alpha = min(ministep / (every / float(self.hparams["glsd_lambda_alpha_div"])), 1.0)
        pi = alpha * self.pi[row] + (1 - alpha) * self.pi_prev[row]
        return D.extreme_lambda(pi, lambda_min)

    def _lambdas(self, u: Tensor, dominating: bool, dominated: bool) -> Tensor:
        """(n, K') affine weights: the imagined ones, then the extreme ones asked for."""
        n = u.shape[0]
        lo = self._lambda_min(n)
        columns = [D.affine_hull_samples(int(self.hparams["glsd_K"]) - 1, n, lo, u.device)]
        if self.hparams["glsd_dominate_all_domains"]:
            columns.append(torch.eye(n, device=u.device))
        if dominated:
            pi = D.worst_domain_weights(u.detach(), self.ORDER, dominating=False)
            columns.append(self._extreme(pi, WORST, lo)[:, None])
        if dominating:
            pi = D.worst_domain_weights(u.detach(), self.ORDER, dominating=True)
            columns.append(self._extreme(pi, BEST, lo)[:, None])
        return torch.cat(columns, dim=1).to(u.dtype).detach()

    # -- the replay buffer of reference utilities ---------------------------------------

    def _remember(self, utilities: Tensor, domains: Tensor) -> None:
        capacity = len(self.ref_utilities)
        m = len(utilities)
        slots = (self.ref_index + torch.arange(m, device=utilities.device)) % capacity
        self.ref_utilities[slots] = utilities.detach().to(self.ref_utilities.dtype)
        self.ref_domains[slots] = domains
        self.ref_index = (self.ref_index + m) % capacity
        self.ref_size = min(self.ref_size + m, capacity)

    def _reference(self, m: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """m draws with replacement from the buffer's entries."""
        capacity = len(self.ref_utilities)
        start = (self.ref_index - self.ref_size) % capacity
        draws = torch.randint(0, self.ref_size, (min(m, self.ref_size),), device=like.device)
        slots = (start + draws) % capacity
        return self.ref_utilities[slots].to(like.dtype), self.ref_domains[slots]

    # -- one step ------------------------------------------------------------------------

    def _per_sample_losses(self, minibatches: Minibatches) -> Tensor:
        counts = sizes(minibatches)
        if len(set(counts)) != 1:
            raise ConfigError(f"GLSD needs equal minibatch sizes per domain, got {counts}")
        all_x, all_y = concat(minibatches)
        losses = F.cross_entropy(self.network(all_x), all_y, reduction="none")
        return losses.view(len(minibatches), counts[0])

    def _classifier_loss(self, u: Tensor) -> Tensor:
        lambdas = self._lambdas(u, dominating=True, dominated=False)
        eta, rows, _ = D.pooled(u)
        m = len(eta)
        if m > len(self.ref_utilities):
            raise ConfigError(
                f"GLSD's replay buffer holds {len(self.ref_utilities)} utilities, fewer than "
                f"one step's {m}: set batch_size to the minibatch size per domain"
            )
        if self.ref_size == 0:
            self._remember(eta, rows)
        ref, ref_rows = self._reference(m, eta)
        steps = int(self.hparams["glsd_margin_steps"])
        self.margin.mul_(1.0 - min(self.updates / steps, 1.0))
        total = eta.new_zeros(())
        for c in range(lambdas.shape[1]):
            wx, wref = lambdas[rows, c] / m, lambdas[ref_rows, c] / m
            if self.ORDER == 2:
                total = total + D.ssd_loss(eta, ref, wx, wref, self.margin)
            else:
                total = total + D.fsd_loss(eta, ref, wx, wref)
        self._remember(eta, rows)
        return total / lambdas.shape[1]

    def _regularizer(self, losses: Tensor) -> Tensor:
        kind = self.hparams["glsd_regularizer"]
        u = D.utility(-losses, int(self.hparams["glsd_utype"]), float(self.hparams["glsd_u_tau"]))
        extremes = kind != "imagined_domains"
        lambdas = self._lambdas(u, dominating=extremes, dominated=extremes)
        eta, rows, _ = D.pooled(u)
        if kind == "VREx":
            weighted = eta[None, :] * lambdas[rows].T / len(eta)
            return weighted.var()
        f1, f2 = D.mixture_cdfs(eta, rows, lambdas)
        return D.pairwise_gap(f2 if self.ORDER == 2 else f1)

    def penalty_weight(self, t: int) -> float:
        """min + max (1 - exp(-(t / tau)^power)) (t >= 0: steps since the warm-up)."""
        h = self.hparams
        ramp = 1.0 - math.exp(-((t / float(h["glsd_penalty_tau"])) ** h["glsd_penalty_power"]))
        return float(h["glsd_penalty_lambda_min"]) + max(ramp * h["glsd_penalty_lambda_max"], 0.0)

    def _balanced(self, terms: Tensor) -> Tensor:
        """Terms (2,) divided by the moving averages of their absolute values."""
        size = terms.detach().abs()
        if self.balancing:
            alpha = float(self.hparams["glsd_lossbalancer_alpha"])
            self.balance.mul_(alpha).add_((1 - alpha) * size)
        else:
            self.balance.copy_(size)
            self.balancing = True
        return terms / (self.balance + BALANCER_EPS)

    def update(self, minibatches: Minibatches) -> Logs:
        step, warmup = self.updates, int(self.hparams["glsd_lossbalancer_warmup"])
        losses = self._per_sample_losses(minibatches)
        cls = self._classifier_loss(-losses)
        penalty = self._regularizer(losses)
        terms = torch.stack([cls, penalty])
        if step == warmup:
            self.optimizer = self.make_optimizer()
        if step >= warmup:
            terms = self._balanced(terms)
            weight = self.penalty_weight(step - warmup)
        else:
            weight = float(self.hparams["glsd_penalty_lambda_min"])
        loss = terms[0] + weight * terms[1]
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.counted()
        return {
            "loss": loss.detach(),
            "cls": terms[0].detach(),
            "penalty": terms[1].detach(),
            "w_penalty": weight,
            "margin": self.margin.detach().clone(),
        }

    def extra_state(self) -> dict[str, Any]:
        return {
            **super().extra_state(),
            "buffer": {"index": self.ref_index, "size": self.ref_size},
            "balancing": self.balancing,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        buffer = state.pop("buffer")
        self.ref_index, self.ref_size = int(buffer["index"]), int(buffer["size"])
        self.balancing = bool(state.pop("balancing"))
        super().load_extra_state(state)


@register
class GLSD_SSD(_GLSD):
    """Second-order stochastic dominance over affine combinations of the domains."""

    DESCRIPTION = "Second-order stochastic dominance over affine mixtures of the domains"
    ORDER = 2


@register
class GLSD_FSD(_GLSD):
    """First-order stochastic dominance over affine combinations of the domains."""

    DESCRIPTION = "First-order stochastic dominance over affine mixtures of the domains"
    ORDER = 1
