"""FGMix: flatness-aware gradient-based mixup of latent codes across domains (Wang et al.).

The math of the policy is in `dgalign.algorithms.fgmix_policy`; this module holds the training
state and the order of the updates in one step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgalign.algorithms._common import concat, sizes
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.fgmix_policy import (
    CompatibilityScore,
    Discriminator,
    MixPlan,
    cosine_scores,
    dirichlet_weights,
    discriminator_loss,
    flatness_gap,
    fooling_loss,
    gather,
    masked_softmax,
    plan_mixes,
    scale_shift,
)
from dgalign.algorithms.registry import register
from dgalign.curvature import head_per_sample_gradients, per_sample_grads
from dgalign.errors import ConfigError
from dgalign.hparams import (
    LEARNING_RATE,
    HParam,
    boolean,
    choice,
    const,
    integer,
    interval,
    nonnegative,
    one_of,
    positive,
)

VARIANTS = ("A", "B", "C", "D", "E", "F", "full")
LEARNED = ("E", "F", "full")  # the policy (f, tau) is trained by the flatness loss
ADVERSARIAL = ("F", "full")  # ... plus gamma x the prior-matching loss
GRADIENT_INPUTS = ("C", "D", "E", "full")  # weights from per-example head gradients


def default_start_step(dataset: str) -> int:
    """3/5 of the dataset's default number of steps, as the paper's 3,000 of 5,000 (9,000 of
    15,000 for DomainNet): 3000 for the MNIST datasets (5,001 steps), 60 for Spurious28."""
    from dgalign.data import DATASETS  # local import: keeps algorithms independent of data

    known = DATASETS.get(dataset) if dataset in DATASETS else None
    n_steps = 15000 if dataset == "DomainNet" else getattr(known, "N_STEPS", 5000)
    return int(n_steps) * 3 // 5


@register
class FGMix(FeaturizerClassifier):
    """ERM on the original latent codes plus same-class mixes across the K domains:
    min (1/(n+M)) [sum_i CE(h(z_i), y_i) + sum_m CE(h(z~_m), y_m)], z~_m = sum_k l'_mk z_mk,
    with weights l' from a learned policy (see `fgmix_policy` for the formulas). From
    `start_step` on, each step:

    1. picks `mixup_batch` class-aware tuples (one example of the class from each domain's
       minibatch that holds one; `mix_missing`);
    2. weights: softmax of s_mk = sum_{j != k} f([g_mk, g_mj]) over per-example head gradients
       g (closed form for a linear head), then l' = tau l - (tau - 1)/K, tau learnable;
    3. policy (f, tau) step on F + gamma A: F = mean over `n_directions` unit u of
       L(theta_h + rho u) - L(theta_h), L the CE of the head on original + mixed codes (codes
       and theta_h detached), A = the policy's loss against a discriminator that separates
       N(mu, diag sigma^2) (moving averages of the batch latent mean / variance) from mixes;
    4. discriminator step; 5. base-model step (featurizer and classifier) on the objective
       above, mixing weights detached.
    Each step's losses only move their own parameters (autograd.grad, no stray .grad).

    Choices where the paper is open (all hyper-parameters): f and D are
    in -> 64 -> ReLU -> 64 -> ReLU -> 1; gradients are L2-normalised before f
    (`score_normalize`); one learning rate for policy and discriminator (`policy_lr`); tau is
    an unconstrained scalar; the prior's moments are EMAs with `prior_momentum`, updated every
    step from the detached latent codes; the policy's adversarial loss is non-saturating
    (`adv_form`); a class missing from a domain's batch is mixed over the domains that have it
    (`mix_missing`); original and mixed codes weigh equally in the base loss.

    Ablations (`variant`, section 4.4): A random Dirichlet(`dirichlet_alpha`) weights; B softmax
    of summed cosine similarities of latent codes; C the same on head gradients; D C with
    scaling/shifting at fixed tau = `tau_init` (the paper fixes 3, our default); E learned f
    and tau trained by the flatness loss only; F full FGMix with f on latent codes instead of
    gradients; full = E + the adversarial prior matching. A-D train no policy; their flatness
    is still computed and logged.
    Logged: tau, extrap_frac (mixes with a negative weight), flatness, adv_loss, policy_loss,
    disc_loss, mix_loss."""

    DESCRIPTION = "Flatness-aware gradient-based latent mixup with extrapolation"
    PAPER = "Wang et al., Learning Gradient-based Mixup towards Flatter Minima for DG"
    HPARAMS = (
        HParam(
            "variant",
            "full",
            const("full"),
            "ablation: A, B, C, D, E, F or full (sec. 4.4)",
            one_of(*VARIANTS),
        ),
        HParam(
            "start_step",
            3000,
            const(3000),
            "first step of mixup and policy learning",
            integer(0),
        ),
        HParam(
            "tau_init",
            3.0,
            choice([1.0, 3.0, 5.0, 8.0]),
            "initial scale tau (1 = none)",
            positive(),
        ),
        HParam(
            "gamma",
            0.1,
            choice([0.01, 0.03, 0.1, 0.3]),
            "weight of the adversarial loss",
            nonnegative(),
        ),
        HParam(
            "policy_lr",
            1e-3,
            choice([1e-4, 1e-3, 1e-2]),
            "Adam lr of policy and critic",
            LEARNING_RATE,
        ),
        HParam(
            "rho",
            0.5,
            choice([0.1, 0.5, 1.0]),
            "radius of the flatness perturbations",
            nonnegative(),
        ),
        HParam(
            "n_directions",
            100,
            const(100),
            "random directions of the flatness loss",
            integer(1),
        ),
        HParam("mixup_batch", 32, const(32), "mixed codes per step", integer(1)),
        HParam(
            "dirichlet_alpha",
            1.0,
            const(1.0),
            "Dirichlet concentration (variant A)",
            positive(),
        ),
        HParam(
            "mix_missing",
            "available",
            const("available"),
            "available or skip (see doc)",
            one_of("available", "skip"),
        ),
        HParam("score_normalize", True, const(True), "L2-normalise the inputs of f", boolean()),
        HParam(
            "prior_momentum",
            0.99,
            const(0.99),
            "EMA momentum of the prior's moments",
            interval(0.0, 1.0, hi_open=True),
        ),
        HParam(
            "adv_form",
            "nonsaturating",
            const("nonsaturating"),
            "or minimax",
            one_of("nonsaturating", "minimax"),
        ),
    )

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        start = default_start_step(dataset)
        return [
            HParam(h.name, start, const(start), h.help, h.domain) if h.name == "start_step" else h
            for h in cls.HPARAMS
        ]

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.variant = str(self.hparams["variant"])
        if self.variant not in VARIANTS:
            raise ConfigError(
                f"FGMix variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}"
            )
        d = self.featurizer.n_outputs
        n_head = sum(p.numel() for p in self.classifier.parameters())
        self.policy = CompatibilityScore(
            d if self.variant == "F" else n_head,
            float(self.hparams["tau_init"]),
            bool(self.hparams["score_normalize"]),
        )
        self.discriminator = Discriminator(d)
        lr = float(self.hparams["policy_lr"])
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr)
        self.count_updates()
        self.register_buffer("prior_mean", torch.zeros(d))
        self.register_buffer("prior_var", torch.ones(d))
        self.register_buffer("prior_seen", torch.tensor(0, dtype=torch.long))

    # -- pieces of one step ------------------------------------------------------------------

    def tau(self) -> Tensor | float:
        """The scale in use: learned (E, F, full), `tau_init` (D), or 1 (A, B, C)."""
        if self.variant in LEARNED:
            return self.policy.tau
        return float(self.hparams["tau_init"]) if self.variant == "D" else 1.0

    @torch.no_grad()
    def track_prior(self, z: Tensor) -> None:
        """EMA of the batch mean and (biased) variance of the latent codes."""
        mean, var = z.mean(0), z.var(0, unbiased=False)
        first, m = self.prior_seen == 0, float(self.hparams["prior_momentum"])
        for average, value in ((self.prior_mean, mean), (self.prior_var, var)):
            average.copy_(torch.where(first, value, average.mul(m).add(value, alpha=1 - m)))
        self.prior_seen += 1

    def sample_prior(self, n: int) -> Tensor:
        """n samples of N(prior_mean, diag prior_var)."""
        mean = self.prior_mean
        eps = torch.randn(n, mean.numel(), dtype=mean.dtype, device=mean.device)
        return mean + eps * self.prior_var.sqrt()

    def head_gradients(self, z: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        """Per-example gradients of CE w.r.t. the classifier, [n, P], detached."""
        z, logits = z.detach(), logits.detach()
        if isinstance(self.classifier, nn.Linear):
            return head_per_sample_gradients(z, logits, y).flatten(1)
        params = {k: p.detach() for k, p in self.classifier.named_parameters()}
        grads = per_sample_grads(self.classifier, params, F.cross_entropy, z, y)
        return torch.cat([g.flatten(1) for g in grads.values()], 1).detach()

    def mix_weights(self, inputs: Tensor | None, mask: Tensor) -> Tensor:
        """l' [M, K] for the variant; differentiable w.r.t. the policy when it is learned.
        `inputs` [M, K, P] are gradients (C, D, E, full) or latent codes (B, F)."""
        if self.variant == "A":
            return dirichlet_weights(mask, float(self.hparams["dirichlet_alpha"]))
        if self.variant in LEARNED:
            scores = self.policy(inputs, mask)
        else:
            scores = cosine_scores(inputs, mask)
        return scale_shift(masked_softmax(scores, mask), self.tau(), mask)

    def policy_step(
        self, z: Tensor, y: Tensor, codes: Tensor, plan: MixPlan, weights: Tensor
    ) -> tuple[dict[str, float], Tensor]:
        """One Adam step of the policy on flatness + gamma * fooling loss (learned variants);
        only the policy's parameters receive gradients. Returns the logged values and the
        mixed codes (detached)."""
        mixed = (weights[..., None] * codes.detach()).sum(1)
        all_z, all_y = torch.cat([z.detach(), mixed]), torch.cat([y, plan.y])
        head = {k: p.detach() for k, p in self.classifier.named_parameters()}

        def loss_fn(params: dict[str, Tensor]) -> Tensor:
            logits = torch.func.functional_call(self.classifier, params, (all_z,))
            return F.cross_entropy(logits, all_y)

        learned = self.variant in LEARNED and weights.requires_grad
        with torch.set_grad_enabled(learned):
            flat = flatness_gap(
                loss_fn, head, float(self.hparams["rho"]), int(self.hparams["n_directions"])
            )
        logs = {"flatness": flat.detach(), "adv_loss": 0.0, "policy_loss": 0.0}
        if not learned:
            return logs, mixed.detach()
        objective = flat
        if self.variant in ADVERSARIAL:
            adv = fooling_loss(self.discriminator(mixed), str(self.hparams["adv_form"]))
            objective = objective + float(self.hparams["gamma"]) * adv
            logs["adv_loss"] = adv.detach()
        params = list(self.policy.parameters())
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        self.policy_optimizer.zero_grad()
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.zeros_like(p) if g is None else g
        self.policy_optimizer.step()
        logs["policy_loss"] = objective.detach()
        return logs, mixed.detach()

    def discriminator_step(self, mixed: Tensor) -> Tensor:
        """One Adam step of the discriminator: prior samples (real) vs mixed codes (fake)."""
        prior = self.sample_prior(len(mixed))
        loss = discriminator_loss(self.discriminator(prior), self.discriminator(mixed.detach()))
        params = list(self.discriminator.parameters())
        grads = torch.autograd.grad(loss, params)
        self.disc_optimizer.zero_grad()
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.disc_optimizer.step()
        return loss.detach()

    # -- the step ----------------------------------------------------------------------------

    def update(self, minibatches: Minibatches) -> Logs:
        x, y = concat(minibatches)
        z = self.featurizer(x)
        logits = self.classifier(z)
        loss_orig = F.cross_entropy(logits, y)
        self.track_prior(z.detach())
        logs = {
            "loss_orig": loss_orig.detach(),
            "mix_loss": 0.0,
            "extrap_frac": 0.0,
            "flatness": 0.0,
            "adv_loss": 0.0,
            "policy_loss": 0.0,
            "disc_loss": 0.0,
        }
        loss = loss_orig
        plan = None
        if self.updates >= int(self.hparams["start_step"]):
            labels = [yk for _, yk in minibatches]
            plan = plan_mixes(
                labels,
                int(self.hparams["mixup_batch"]),
                self.hparams["mix_missing"],
                self.num_classes,
            )
        if plan is not None:
            split = sizes(minibatches)
            codes = gather(list(z.split(split)), plan)  # [M, K, d], graph to the featurizer
            if self.variant in GRADIENT_INPUTS:
                grads = self.head_gradients(z, logits, y)
                inputs = gather(list(grads.split(split)), plan)
            else:
                inputs = codes.detach()
            weights = self.mix_weights(inputs, plan.mask).to(codes.dtype)
            policy_logs, mixed = self.policy_step(z, y, codes, plan, weights)
            logs.update(policy_logs)
            if self.variant in ADVERSARIAL:
                logs["disc_loss"] = self.discriminator_step(mixed)
            w = weights.detach()
            mix_loss = F.cross_entropy(self.classifier((w[..., None] * codes).sum(1)), plan.y)
            n, m = len(y), len(plan.y)
            loss = (n * loss_orig + m * mix_loss) / (n + m)
            logs["mix_loss"] = mix_loss.detach()
            logs["extrap_frac"] = ((w < 0) & plan.mask).any(1).float().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.counted()
        logs["loss"] = loss.detach()
        tau = self.tau()
        logs["tau"] = tau.detach().clone() if isinstance(tau, Tensor) else float(tau)
        return logs
