"""The Colored MNIST environments of the IRM protocol (docs/protocols.md section 1).

Per restart, from MNIST's training set:
    pool  = the 50,000 images train[:50000], reshuffled (one NumPy permutation per restart);
            env0 = even positions, env1 = odd positions (25,000 each);
    test  = train[50000:] (10,000 images); "gray" = the same images with both channels kept.
Every environment: 14x14 by x[:, ::2, ::2]; label y = 1[digit < 5] flipped w.p. 0.25;
color c = y XOR Bernoulli(e), e = 0.2 (env0), 0.1 (env1), 0.9 (test); the image becomes two
channels (red, green) and channel 1 - c is zeroed; pixel values uint8 / 255.

Randomness follows the scripts (IRM / Fishr / the Hessian authors'): one NumPy RandomState and
one torch generator, both seeded once before all restarts; per restart: the permutation, then
for env0, env1, test, gray in turn the label flips and the colors (`torch.rand(n) < p`; the
gray environment draws its own label noise, as `make_environment(..., grayscale=True)` does),
then the MLP's initialisation (`cmnist_model.init_restart`). With the default seed 0 this is the
stream of the IRM/Fishr scripts, so restart k gets the scripts' restart-k data and weights.

Label shift ("imbalanced", Tables 3 and 8): the shuffled pool is split by class before label
noise. The authors' script cuts at round(m * N) and round((1 - m) * N) with N the pool size
(the length of the boolean class mask), not the class counts: env0 = the first round(m N)
digit<5 images (with N = 50,000 that is all of them, about 25,500) + the first round((1-m) N)
= 1,500 digit>=5 images; env1 = the remaining digit>=5 images (about 23,000) and no digit<5
image. So env0 holds about 94.5% / 5.5% (the paper's "95% / 5%") and env1 0% / 100%.
`split="script"` (default) reproduces that; `split="per-class"` cuts each class at the ratio of its
own count (env0 = the first m of each class's count of digit<5 images and 1 - m of the digit>=5
images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dgalign.errors import ConfigError
from dgalign.experiments.cmnist_model import init_restart

TRAIN_POOL = 50_000
COLOR_FLIP = {"env0": 0.2, "env1": 0.1, "test": 0.9, "gray": 0.9}
ENV_NAMES = ("env0", "env1", "test", "gray")
SPLITS = ("script", "per-class")


@dataclass(frozen=True)
class DataConfig:
    """What defines the environments. `pool` < 50,000 takes the first `pool` images of each
    restart's shuffled 50,000 (the QUICK variant); `label_shift` uses `majority` and `split`."""

    label_shift: bool = False
    majority: float = 0.97
    split: str = "script"
    pool: int = TRAIN_POOL
    label_flip: float = 0.25

    def validate(self) -> None:
        """ConfigError (one line) for values that cannot work."""
        if self.split not in SPLITS:
            raise ConfigError(f"label-shift split must be one of {SPLITS}, got {self.split!r}")
        if not 0.5 <= self.majority <= 1.0:
            raise ConfigError(f"--majority must be in [0.5, 1], got {self.majority}")
        if not 2 <= self.pool <= TRAIN_POOL:
            raise ConfigError(f"pool size must be in [2, {TRAIN_POOL}], got {self.pool}")
        if not 0.0 <= self.label_flip <= 1.0:
            raise ConfigError(f"label flip probability must be in [0, 1], got {self.label_flip}")


@dataclass
class ColoredEnv:
    """One environment: 14x14 uint8 images, noisy labels y in {0, 1}, colors (None: gray)
    and the original digits (for statistics)."""

    images: Tensor
    labels: Tensor
    colors: Tensor | None
    digits: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def inputs(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The network input [n, 392]: channels (red, green) of 14x14, channel c = image/255
        and channel 1 - c = 0 (gray: both channels = image/255), flattened channel-major."""
        img = self.images.to(dtype) / 255.0
        x = torch.stack([img, img], dim=1)
        if self.colors is not None:
            x[torch.arange(len(self)), 1 - self.colors.long()] = 0
        return x.reshape(len(self), -1)


def _bernoulli(p: float, n: int, gen: torch.Generator) -> Tensor:
    return (torch.rand(n, generator=gen) < p).long()


def make_environment(
    images28: Tensor,
    digits: Tensor,
    color_flip: float,
    gen: torch.Generator,
    label_flip: float = 0.25,
    grayscale: bool = False,
) -> ColoredEnv:
    """The scripts' `make_environment`: subsample, binary label with noise, color = label XOR
    Bernoulli(color_flip). Draws n label-flip and then n color uniforms from `gen`."""
    images = images28[:, ::2, ::2].contiguous()
    labels = (digits < 5).long() ^ _bernoulli(label_flip, len(digits), gen)
    colors = labels ^ _bernoulli(color_flip, len(digits), gen)
    return ColoredEnv(images, labels.float(), None if grayscale else colors, digits.clone())


def label_shift_split(digits: Tensor, majority: float, split: str) -> tuple[Tensor, Tensor]:
    """Positions of env0 and env1 in the shuffled pool (module docstring): env0 = the first
    cut0 digit<5 and the first cut1 digit>=5 images, env1 the rest, class-0 block first."""
    class0 = torch.nonzero(digits < 5).flatten()
    class1 = torch.nonzero(digits >= 5).flatten()
    if split == "script":
        n0 = n1 = len(digits)
    elif split == "per-class":
        n0, n1 = len(class0), len(class1)
    else:
        raise ConfigError(f"label-shift split must be one of {SPLITS}, got {split!r}")
    cut0, cut1 = round(majority * n0), round((1 - majority) * n1)
    env0 = torch.cat([class0[:cut0], class1[:cut1]])
    env1 = torch.cat([class0[cut0:], class1[cut1:]])
    if len(env0) == 0 or len(env1) == 0:
        raise ConfigError(f"label-shift split {split!r}, majority {majority} leaves an env empty")
    return env0, env1


@dataclass
class RestartData:
    """The four environments of one restart, in `ENV_NAMES` order."""

    envs: tuple[ColoredEnv, ColoredEnv, ColoredEnv, ColoredEnv]

    def __getitem__(self, name: str) -> ColoredEnv:
        return self.envs[ENV_NAMES.index(name)]


def build_restart(
    images: Tensor,
    digits: Tensor,
    config: DataConfig,
    np_rng: np.random.RandomState,
    gen: torch.Generator,
) -> RestartData:
    """One restart's environments from MNIST's 60,000 training images and digits."""
    perm = torch.from_numpy(np_rng.permutation(TRAIN_POOL))[: config.pool]
    pool_x, pool_d = images[:TRAIN_POOL][perm], digits[:TRAIN_POOL][perm]
    if config.label_shift:
        idx0, idx1 = label_shift_split(pool_d, config.majority, config.split)
    else:
        idx0, idx1 = torch.arange(0, len(perm), 2), torch.arange(1, len(perm), 2)
    test_x, test_d = images[TRAIN_POOL:], digits[TRAIN_POOL:]
    flip = config.label_flip
    return RestartData(
        (
            make_environment(pool_x[idx0], pool_d[idx0], COLOR_FLIP["env0"], gen, flip),
            make_environment(pool_x[idx1], pool_d[idx1], COLOR_FLIP["env1"], gen, flip),
            make_environment(test_x, test_d, COLOR_FLIP["test"], gen, flip),
            make_environment(test_x, test_d, COLOR_FLIP["gray"], gen, flip, grayscale=True),
        )
    )


def load_mnist_train(data_dir: str | None) -> tuple[Tensor, Tensor]:
    """MNIST's 60,000 training images (uint8 [60000, 28, 28]) and digits (int64)."""
    from dgalign.data.sources import fetch_mnist, resolve_data_dir

    arrays = fetch_mnist(resolve_data_dir(data_dir))
    return torch.from_numpy(np.asarray(arrays.train_images)), torch.from_numpy(
        np.asarray(arrays.train_labels)
    ).long()


def generate_restarts(
    seed: int, config: DataConfig, hidden: int, data_dir: str | None, count: int
) -> tuple[list[RestartData], list[dict]]:
    """Environments and initial weights of restarts 0..count-1, drawn in order from one NumPy
    RandomState and one torch generator seeded with `seed` (as the scripts seed once)."""
    images, digits = load_mnist_train(data_dir)
    np_rng = np.random.RandomState(seed)
    gen = torch.Generator().manual_seed(seed)
    data, inits = [], []
    for _ in range(count):
        data.append(build_restart(images, digits, config, np_rng, gen))
        inits.append(init_restart(gen, hidden))
    return data, inits
