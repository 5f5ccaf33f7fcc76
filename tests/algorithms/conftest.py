"""Fixtures for the algorithm tests: small datasets, per-domain batches, tiny float64 models."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from dgalign import algorithms
from dgalign.algorithms import Algorithm
from dgalign.algorithms.spaces import default_hparams
from dgalign.data import ColoredMNIST, Spurious28

BATCH = 8  # samples per training domain


def _colored_mnist() -> ColoredMNIST:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (96,), generator=g)
    state = torch.get_rng_state()
    torch.manual_seed(0)
    try:
        return ColoredMNIST(pool=(images, labels))
    finally:
        torch.set_rng_state(state)


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Run each test with one intra-op thread: these tiny batches gain nothing from a second
    thread, and on a shared 2-core machine two spinning OpenMP threads per process made this
    directory about 8x slower (115 s instead of 15 s under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def small_datasets() -> dict[str, Any]:
    """Spurious28 and a ColoredMNIST built from a random 96-image pool."""
    return {"Spurious28": Spurious28(), "ColoredMNIST": _colored_mnist()}


def env_batches(dataset: Any, envs: tuple[int, ...] = (0, 1), start: int = 0) -> list:
    """One minibatch of BATCH samples per environment, sliced from the env tensors."""
    window = slice(start, start + BATCH)
    return [(dataset[e].x[window], dataset[e].y[window]) for e in envs]


@pytest.fixture
def batches() -> Callable[..., list]:
    return env_batches


def tiny_algorithm(
    name: str, input_dim: int = 4, num_classes: int = 3, num_domains: int = 2, **overrides: Any
) -> Algorithm:
    """`name` with an MLP featurizer 4 -> 6 -> 6 -> 6, linear head, float64, seeded."""
    hparams = default_hparams(name, "Spurious28")
    hparams.update(backbone="mlp", mlp_width=6, mlp_depth=3, mlp_dropout=0.0)
    hparams.update(overrides)
    torch.manual_seed(0)
    cls = algorithms.get(name)
    return cls((input_dim,), num_classes, num_domains, hparams).double()


def tiny_batches(
    n: int = 8, input_dim: int = 4, num_classes: int = 3, num_domains: int = 2, seed: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random float64 minibatches, one per domain, with shifted means per domain."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in range(num_domains):
        x = torch.randn(n, input_dim, generator=g, dtype=torch.float64) + 0.5 * e
        y = torch.randint(0, num_classes, (n,), generator=g)
        out.append((x, y))
    return out


@pytest.fixture
def tiny() -> Callable[..., Algorithm]:
    return tiny_algorithm


@pytest.fixture
def tiny_data() -> Callable[..., list]:
    return tiny_batches


def check_logs(logs: dict) -> None:
    """The contract of `update`'s logged values: Python floats or detached 0-dim floating
    tensors (left on the device), all finite."""
    for key, value in logs.items():
        if isinstance(value, torch.Tensor):
            assert value.dim() == 0 and value.is_floating_point(), f"{key} = {value!r}"
            assert not value.requires_grad, f"{key} is attached to the graph"
            value = float(value)
        else:
            assert type(value) is float, f"{key} is {type(value).__name__}, not float"
        assert math.isfinite(value), f"{key} = {value}"
