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

Variants (`VARIANTS`, `dgalign reproduce cmnist --variant NAME`): other shifts built the same
way, changing only the colour-flip rates of the environments (`color_flip` = env0, env1, test;
the gray env takes the test rate's label noise), the label-noise rate (`label_flip`) or the
binary task (`task`: "low-high" y = 1[digit < 5], "parity" y = 1[digit odd]; with label shift
"digit<5" reads "label 1 of the task", e.g. odd digits). "paper" is the protocol above.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dgalign.errors import ConfigError
from dgalign.experiments.cmnist_model import init_restart

TRAIN_POOL = 50_000
COLOR_FLIP = {"env0": 0.2, "env1": 0.1, "test": 0.9, "gray": 0.9}
PAPER_COLOR_FLIP = (COLOR_FLIP["env0"], COLOR_FLIP["env1"], COLOR_FLIP["test"])
ENV_NAMES = ("env0", "env1", "test", "gray")
SPLITS = ("script", "per-class")
TASKS = ("low-high", "parity")


def binary_label(digits: Tensor, task: str = "low-high") -> Tensor:
    """The clean binary label of the task: 1[digit < 5] (low-high) or 1[digit odd] (parity)."""
    if task == "low-high":
        return (digits < 5).long()
    if task == "parity":
        return (digits % 2).long()
    raise ConfigError(f"task must be one of {TASKS}, got {task!r}")


@dataclass(frozen=True)
class DataConfig:
    """What defines the environments. `pool` < 50,000 takes the first `pool` images of each
    restart's shuffled 50,000 (the QUICK variant); `label_shift` uses `majority` and `split`."""

    label_shift: bool = False
    majority: float = 0.97
    split: str = "script"
    pool: int = TRAIN_POOL
    label_flip: float = 0.25
    color_flip: tuple[float, float, float] = PAPER_COLOR_FLIP
    task: str = "low-high"

    def identity(self) -> dict:
        """The fields that define the data; `color_flip` and `task` only where they differ
        from the paper's (so run dirs of the paper's protocol keep their identity)."""
        out = {
            "label_shift": self.label_shift,
            "majority": self.majority,
            "split": self.split,
            "pool": self.pool,
            "label_flip": self.label_flip,
        }
        if tuple(self.color_flip) != PAPER_COLOR_FLIP:
            out["color_flip"] = list(self.color_flip)
        if self.task != "low-high":
            out["task"] = self.task
        return out

    def validate(self) -> None:
        """ConfigError (one line) for values that cannot work."""
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.color_flip) != 3 or not all(0.0 <= p <= 1.0 for p in self.color_flip):
            raise ConfigError(
                f"color flips must be 3 probabilities (env0, env1, test), got {self.color_flip}"
            )
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
    task: str = "low-high",
) -> ColoredEnv:
    """The scripts' `make_environment`: subsample, binary label with noise, color = label XOR
    Bernoulli(color_flip). Draws n label-flip and then n color uniforms from `gen`."""
    images = images28[:, ::2, ::2].contiguous()
    labels = binary_label(digits, task) ^ _bernoulli(label_flip, len(digits), gen)
    colors = labels ^ _bernoulli(color_flip, len(digits), gen)
    return ColoredEnv(images, labels.float(), None if grayscale else colors, digits.clone())


def label_shift_split(
    digits: Tensor, majority: float, split: str, task: str = "low-high"
) -> tuple[Tensor, Tensor]:
    """Positions of env0 and env1 in the shuffled pool (module docstring): env0 = the first
    cut0 class-1 (digit<5) and the first cut1 class-0 (digit>=5) images of the task, env1 the
    rest, the digit<5 block first."""
    clean = binary_label(digits, task)
    class0 = torch.nonzero(clean == 1).flatten()
    class1 = torch.nonzero(clean == 0).flatten()
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
        idx0, idx1 = label_shift_split(pool_d, config.majority, config.split, config.task)
    else:
        idx0, idx1 = torch.arange(0, len(perm), 2), torch.arange(1, len(perm), 2)
    test_x, test_d = images[TRAIN_POOL:], digits[TRAIN_POOL:]
    flip, task = config.label_flip, config.task
    c0, c1, ct = config.color_flip
    return RestartData(
        (
            make_environment(pool_x[idx0], pool_d[idx0], c0, gen, flip, task=task),
            make_environment(pool_x[idx1], pool_d[idx1], c1, gen, flip, task=task),
            make_environment(test_x, test_d, ct, gen, flip, task=task),
            make_environment(test_x, test_d, ct, gen, flip, grayscale=True, task=task),
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


@dataclass(frozen=True)
class Variant:
    """A named shift built from MNIST: what it changes in `DataConfig` and why."""

    name: str
    changes: dict
    description: str

    def apply(self, config: DataConfig) -> DataConfig:
        """`config` with this variant's changes."""
        return dataclasses.replace(config, **self.changes)


VARIANTS = {
    v.name: v
    for v in (
        Variant("paper", {}, "the IRM protocol: colour flips 0.2 / 0.1 / 0.9, label noise 0.25"),
        Variant(
            "close-colors",
            {"color_flip": (0.15, 0.1, 0.9)},
            "training envs closer together (colour flips 0.15 / 0.1): less variation to align",
        ),
        Variant(
            "label-noise-15",
            {"label_flip": 0.15},
            "label noise 0.15: shape (85%) beats colour in env0 (80%), not in env1 (90%)",
        ),
        Variant(
            "parity",
            {"task": "parity"},
            "another binary split of the digits: y = 1[digit odd] instead of 1[digit < 5]",
        ),
    )
}


def variant(name: str) -> Variant:
    """The variant `name`; ConfigError (one line) naming the valid ones."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]
