"""URM, uniform risk minimization (Krishnamachari et al., 2024), as in DomainBed: ERM whose
features are pushed towards the uniform distribution on a box by an adversarial
discriminator.

The featurizer's output goes through a bounded activation (`urm_generator_output`: tanh, box
[-1, 1]^d; relu / sigmoid, box [0, 1]^d; DomainBed draws noise in [0, 1) for relu too). A
discriminator D (d -> 100 -> LeakyReLU -> [100 -> LeakyReLU] x hidden_layers -> 1 logit) is
trained with BCE to call uniform noise real and features fake,

    L_D = BCE(D(u), 1) + lambda BCE(D(z.detach()), 0),   u ~ U(box),

(targets optionally smoothed: real ~ U(1 - s, 1), fake ~ U(0, s)), and the network minimises

    L = CE(h(z), y) + lambda BCE(D(z), 1).

Order per update, as DomainBed: the network step, then the discriminator step on the features
computed before it.
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
from dgalign.errors import ConfigError
from dgalign.hparams import (
    LEARNING_RATE,
    SMALL_IMAGES,
    HParam,
    choice,
    const,
    integer,
    interval,
    log_uniform,
    nonnegative,
    one_of,
    uniform,
)

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
NOISE_BOX = {"tanh": (-1.0, 1.0), "relu": (0.0, 1.0), "sigmoid": (0.0, 1.0)}


class ActivatedFeaturizer(nn.Module):
    """`featurizer` followed by an output activation; keeps `n_outputs`."""

    def __init__(self, featurizer: nn.Module, activation: nn.Module) -> None:
        super().__init__()
        self.base = featurizer
        self.activation = activation
        self.n_outputs = featurizer.n_outputs

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.base(x))


def uniform_discriminator(d: int, hidden_layers: int) -> nn.Sequential:
    """d -> 100 -> LeakyReLU -> (100 -> LeakyReLU) x hidden_layers -> 1."""
    layers: list[nn.Module] = [nn.Linear(d, 100), nn.LeakyReLU()]
    for _ in range(hidden_layers):
        layers += [nn.Linear(100, 100), nn.LeakyReLU()]
    layers.append(nn.Linear(100, 1))
    return nn.Sequential(*layers)


@register
class URM(FeaturizerClassifier):
    """min CE(h(z), y) + lambda BCE(D(z), 1), D trained to tell uniform noise from z
    (module docstring)."""

    DESCRIPTION = "Uniform risk minimization: adversarially uniform feature distribution"
    PAPER = "Krishnamachari et al., 2024"

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        small = dataset in SMALL_IMAGES
        return [
            HParam(
                "urm",
                "adversarial",
                const("adversarial"),
                "URM variant (adversarial only)",
                one_of("adversarial"),
            ),
            HParam(
                "urm_adv_lambda",
                0.1,
                uniform(0, 0.2),
                "weight lambda of the adversary",
                nonnegative(),
            ),
            HParam(
                "urm_discriminator_label_smoothing",
                0.0,
                uniform(0, 0),
                "label smoothing s of the discriminator",
                interval(0.0, 1.0, hi_open=True),
            ),
            HParam(
                "urm_discriminator_optimizer",
                "adam",
                const("adam"),
                "adam or sgd (momentum 0.9)",
                one_of("adam", "sgd"),
            ),
            HParam(
                "urm_discriminator_hidden_layers",
                1,
                choice([1, 2, 3]),
                "hidden 100-unit layers",
                integer(1),
            ),
            HParam(
                "urm_generator_output",
                "tanh",
                choice(["tanh", "relu"]),
                "feature activation",
                one_of("tanh", "relu"),
            ),
            HParam(
                "urm_discriminator_lr",
                1e-3 if small else 5e-5,
                log_uniform(-5.5, -3.5) if small else log_uniform(-6, -4.5),
                "discriminator learning rate",
                LEARNING_RATE,
            ),
        ]

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        output = self.hparams["urm_generator_output"]
        if output not in NOISE_BOX:
            raise ConfigError(
                f"urm_generator_output must be one of {', '.join(NOISE_BOX)}, got {output!r}"
            )
        self.replace_featurizer(ActivatedFeaturizer(self.featurizer, ACTIVATIONS[output]()))
        self.discriminator = uniform_discriminator(
            self.featurizer.n_outputs, int(self.hparams["urm_discriminator_hidden_layers"])
        )
        lr, wd = self.hparams["urm_discriminator_lr"], self.hparams["weight_decay"]
        kind = self.hparams["urm_discriminator_optimizer"]
        params = self.discriminator.parameters()
        if kind == "sgd":
            self.discriminator_opt = torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9)
        elif kind == "adam":
            self.discriminator_opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
        else:
            raise ConfigError(f"urm_discriminator_optimizer must be adam or sgd, got {kind!r}")

    def noise(self, like: Tensor) -> Tensor:
        """Uniform noise in the activation's box, shaped like `like`."""
        a, b = NOISE_BOX[self.hparams["urm_generator_output"]]
        return (b - a) * torch.rand_like(like) + a

    def _targets(self, n: int, real: bool, like: Tensor) -> Tensor:
        s = float(self.hparams["urm_discriminator_label_smoothing"])
        if not s:
            return torch.full((n,), 1.0 if real else 0.0, dtype=like.dtype, device=like.device)
        lo, hi = (1.0 - s, 1.0) if real else (0.0, s)
        return (hi - lo) * torch.rand(n, dtype=like.dtype, device=like.device) + lo

    def discriminator_loss(self, z: Tensor) -> Tensor:
        """BCE(D(u), real) + lambda BCE(D(z), fake) with z detached."""
        z = z.detach()
        u = self.noise(z)
        real = F.binary_cross_entropy_with_logits(
            self.discriminator(u).squeeze(1), self._targets(len(u), True, z)
        )
        fake = F.binary_cross_entropy_with_logits(
            self.discriminator(z).squeeze(1), self._targets(len(z), False, z)
        )
        return real + self.hparams["urm_adv_lambda"] * fake

    def update(self, minibatches: Minibatches) -> Logs:
        all_x, all_y = concat(minibatches)
        z = self.featurizer(all_x)
        ce = F.cross_entropy(self.classifier(z), all_y)
        fool = F.binary_cross_entropy_with_logits(
            self.discriminator(z).squeeze(1), torch.ones(len(z), dtype=z.dtype, device=z.device)
        )
        loss = ce + self.hparams["urm_adv_lambda"] * fool
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        d_loss = self.discriminator_loss(z)
        self.discriminator_opt.zero_grad()
        d_loss.backward()
        self.discriminator_opt.step()
        return {"loss": loss.detach(), "nll": ce.detach(), "disc_loss": d_loss.detach()}
