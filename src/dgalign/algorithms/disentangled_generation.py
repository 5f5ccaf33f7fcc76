"""DDG, disentanglement for domain generalization (Zhang et al., 2022), in two stages.

A semantic encoder (the featurizer f, with the head h) and a variation encoder f_v factor an
input into s = f(x) and v = f_v(x); a generator G(s, v) rebuilds it, and a discriminator D keeps
generated inputs realistic. Swapping variations, x' = G(s_i, v_j), makes an input with x_i's
semantics and x_j's variation. Stage 1 (the first `ddg_pretrain_steps` updates): the generator
pre-trains (reconstruction + GAN, with s detached) while f and h train by ERM. Stage 2: the
classifier solves the paper's constrained problem

    min CE(h(f(x)), y)  subject to  L_inv = mean ||p(x') - p(x)||^2 <= gamma,

p the head's softmax and x' = G(f(x), f_v(x[perm])) for a random permutation, by primal-dual
steps: the primal loss CE + mu L_inv, then the dual mu <- max(0, mu + eta (L_inv - gamma)); the
generator goes on training as in stage 1. The paper trains 25,000 + 10,000 steps at batch 2:
`--steps 35000 --hparams '{"batch_size": 2, "ddg_pretrain_steps": 25000}'`.

Where the paper is open, our choices: G is a decoder from [s, v] (a linear map to a
quarter-resolution map and two transposed convolutions; an MLP for vector inputs); f_v and D are
small conv networks (MLPs for vectors); the losses are L1 reconstruction and the non-saturating
GAN loss. Everything (stage counter, dual variable, all optimizers) is checkpointed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgalign.algorithms._common import concat
from dgalign.algorithms.base import FeaturizerClassifier, Logs, Minibatches
from dgalign.algorithms.registry import register
from dgalign.hparams import LEARNING_RATE, HParam, choice, integer, log_uniform, nonnegative

VARIATION_DIM = 16
WIDTH = 32


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class VariationEncoder(nn.Module):
    """x -> v in R^VARIATION_DIM."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        if len(input_shape) == 3:
            self.net = nn.Sequential(
                nn.Conv2d(int(input_shape[0]), WIDTH, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(WIDTH, WIDTH, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(WIDTH, VARIATION_DIM),
            )
        else:
            self.net = nn.Sequential(
                nn.Flatten(),
                nn.Linear(_numel(input_shape), 64),
                nn.ReLU(),
                nn.Linear(64, VARIATION_DIM),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """[s, v] -> an input of `input_shape` (module docstring)."""

    def __init__(self, input_shape: Sequence[int], semantic_dim: int) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        n_in = semantic_dim + VARIATION_DIM
        if len(self.input_shape) == 3:
            c, h, w = self.input_shape
            self.h4, self.w4 = -(-h // 4), -(-w // 4)
            self.fc = nn.Linear(n_in, WIDTH * self.h4 * self.w4)
            self.net = nn.Sequential(
                nn.ReLU(),
                nn.ConvTranspose2d(WIDTH, WIDTH, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(WIDTH, c, 4, stride=2, padding=1),
            )
        else:
            self.fc = nn.Linear(n_in, 64)
            self.net = nn.Sequential(nn.ReLU(), nn.Linear(64, _numel(self.input_shape)))

    def forward(self, s: Tensor, v: Tensor) -> Tensor:
        out = self.fc(torch.cat([s, v], dim=1))
        if len(self.input_shape) == 3:
            out = self.net(out.view(len(s), WIDTH, self.h4, self.w4))
            return out[:, :, : self.input_shape[1], : self.input_shape[2]]
        return self.net(out).view(len(s), *self.input_shape)


class Critic(nn.Module):
    """Discriminator: an input -> one logit (real)."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.encoder = VariationEncoder(input_shape)
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(VARIATION_DIM, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.encoder(x)).squeeze(1)


@register
class DDG(FeaturizerClassifier):
    """Stage 1: generator pre-training next to ERM; stage 2: primal-dual ERM under the
    invariance constraint on variation-swapped inputs (module docstring)."""

    DESCRIPTION = "Disentangled domain generalization: invariance to generated variations"
    PAPER = "Zhang et al., 2022"
    HPARAMS = (
        HParam(
            "ddg_pretrain_steps",
            3000,
            choice([1000, 3000]),
            "stage-1 (generator) updates",
            integer(0),
        ),
        HParam("ddg_gamma", 0.01, log_uniform(-3, -1), "invariance margin gamma", nonnegative()),
        HParam("ddg_dual_lr", 0.01, log_uniform(-3, -1), "dual step size eta", LEARNING_RATE),
        HParam("ddg_lr_g", 2e-4, log_uniform(-4.5, -3), "Adam lr of f_v, G and D", LEARNING_RATE),
        HParam(
            "ddg_recon",
            10.0,
            choice([1.0, 10.0]),
            "weight of the reconstruction loss",
            nonnegative(),
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
        self.variation = VariationEncoder(input_shape)
        self.generator = Decoder(input_shape, self.featurizer.n_outputs)
        self.critic = Critic(input_shape)
        lr = self.hparams["ddg_lr_g"]
        self.generator_optimizer = torch.optim.Adam(
            [*self.variation.parameters(), *self.generator.parameters()], lr=lr, betas=(0.5, 0.999)
        )
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters(), lr=lr, betas=(0.5, 0.999)
        )
        self.count_updates()
        self.register_buffer("dual", torch.tensor(0.0))

    def swapped(self, x: Tensor, s: Tensor) -> Tensor:
        """G(s_i, f_v(x_perm(i))): each input's semantics with another's variation."""
        perm = torch.randperm(len(x), device=x.device)
        return self.generator(s, self.variation(x[perm]))

    def generator_step(self, x: Tensor) -> Logs:
        """One step of D, then of f_v and G (reconstruction + fooling D), s detached."""
        s = self.featurizer(x).detach()
        fake = self.swapped(x, s)
        real_logit, fake_logit = self.critic(x), self.critic(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real_logit, torch.ones_like(real_logit)
        ) + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        self.critic_optimizer.zero_grad()
        d_loss.backward()
        self.critic_optimizer.step()
        recon = (self.generator(s, self.variation(x)) - x).abs().mean()
        fool_logit = self.critic(fake)
        fool = F.binary_cross_entropy_with_logits(fool_logit, torch.ones_like(fool_logit))
        g_loss = self.hparams["ddg_recon"] * recon + fool
        self.generator_optimizer.zero_grad()
        g_loss.backward()
        self.generator_optimizer.step()
        return {"recon": recon.detach(), "gan_g": fool.detach(), "gan_d": d_loss.detach()}

    def invariance(self, x: Tensor, z: Tensor) -> Tensor:
        """mean ||p(x') - p(x)||^2 over the batch, x' variation-swapped (generator fixed)."""
        with torch.no_grad():
            x_swap = self.swapped(x, z.detach())
        p = F.softmax(self.classifier(z), dim=1)
        p_swap = F.softmax(self.predict(x_swap), dim=1)
        return (p_swap - p).pow(2).sum(1).mean()

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        logs = self.generator_step(all_x)
        stage2 = self.updates >= int(self.hparams["ddg_pretrain_steps"])
        z = self.featurizer(all_x)
        ce = F.cross_entropy(self.classifier(z), all_y)
        loss = ce
        if stage2:
            inv = self.invariance(all_x, z)
            loss = ce + self.dual * inv
            logs["invariance"] = inv.detach()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if stage2:
            step = float(self.hparams["ddg_dual_lr"]) * (
                logs["invariance"] - self.hparams["ddg_gamma"]
            )
            self.dual.copy_((self.dual + step).clamp_min(0.0))
        self.counted()
        return {
            "loss": loss.detach(),
            "nll": ce.detach(),
            "dual": self.dual.detach().clone(),
            "stage": 2.0 if stage2 else 1.0,
            **logs,
        }
