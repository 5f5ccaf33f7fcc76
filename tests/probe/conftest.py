"""Fixtures of the probing tests: a synthetic feature folder with a spurious feature, and one
intra-op thread (tiny tensors on a shared machine)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dgalign.probe.features import VERSION, save_features


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_feature_dir(
    folder: Path, n: int = 240, dim: int = 5, num_classes: int = 2, seed: int = 0
) -> Path:
    """Features [n, dim]: column 0 carries the label (noisily), column 1 the attribute, which
    agrees with the label 90% of the time in train and val, 10% in test; the rest is noise.
    Splits 60/20/20 %; environment = attribute."""
    rng = np.random.default_rng(seed)
    split = np.repeat(np.array([0, 1, 2], dtype=np.int8), [n * 3 // 5, n // 5, n - n * 4 // 5])
    label = rng.integers(0, num_classes, n)
    agree = np.where(split == 2, 0.1, 0.9)
    attribute = np.where(rng.random(n) < agree, label % 2, 1 - label % 2)
    x = rng.normal(size=(n, dim))
    x[:, 0] += 1.0 * (2 * label - 1)
    x[:, 1] += 3.0 * (2 * attribute - 1)
    meta = {
        "format": "dgalign-probe-features",
        "version": VERSION,
        "dataset": {
            "name": "synthetic",
            "num_classes": num_classes,
            "num_attributes": 2,
            "num_environments": 2,
            "rows": n,
        },
        "extractor": {"backbone": "none"},
        "dim": dim,
    }
    arrays = {
        "features": x,
        "label": label,
        "attribute": attribute,
        "environment": attribute,
        "split": split,
    }
    save_features(folder, arrays, meta)
    return folder


@pytest.fixture
def feature_dir(tmp_path: Path) -> Path:
    return write_feature_dir(tmp_path / "features")


@pytest.fixture
def make_feature_dir(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "f", **kwargs) -> Path:
        return write_feature_dir(tmp_path / name, **kwargs)

    return make
