"""The protocol's environments: flip rates, colors, gray env, label-shift splits, seeding."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from dgalign.errors import ConfigError
from dgalign.experiments.cmnist_data import (
    DataConfig,
    build_restart,
    label_shift_split,
    make_environment,
)
from dgalign.experiments.cmnist_model import init_restart

from .conftest import synthetic_mnist


def _within(rate: float, p: float, n: int, k: float = 5.0) -> bool:
    return abs(rate - p) <= k * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("e", [0.2, 0.1, 0.9])
def test_label_and_color_flip_rates(e):
    images, digits = synthetic_mnist(20000)
    env = make_environment(images, digits, e, torch.Generator().manual_seed(1))
    clean = (digits < 5).float()
    assert _within(float((env.labels != clean).float().mean()), 0.25, 20000)
    assert _within(float((env.colors != env.labels).float().mean()), e, 20000)


def test_inputs_zero_the_other_channel_and_scale():
    images, digits = synthetic_mnist(200)
    env = make_environment(images, digits, 0.2, torch.Generator().manual_seed(0))
    x = env.inputs().reshape(200, 2, 14, 14)
    idx = torch.arange(200)
    assert torch.equal(x[idx, 1 - env.colors], torch.zeros(200, 14, 14))
    assert torch.allclose(x[idx, env.colors], images[:, ::2, ::2].float() / 255)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_gray_env_has_no_color_signal():
    images, digits = synthetic_mnist(300)
    env = make_environment(images, digits, 0.9, torch.Generator().manual_seed(0), grayscale=True)
    x = env.inputs().reshape(300, 2, 14, 14)
    assert env.colors is None
    assert torch.equal(x[:, 0], x[:, 1])


def test_label_shift_script_split_cuts_at_fractions_of_the_pool():
    _, digits = synthetic_mnist(50000)
    env0, env1 = label_shift_split(digits, 0.97, "script")
    d0, d1 = digits[env0], digits[env1]
    # round(0.97 * 50000) exceeds the ~25,000 digit<5 images: env0 gets all of them
    assert int((d0 < 5).sum()) == int((digits < 5).sum())
    assert int((d0 >= 5).sum()) == 1500
    assert int((d1 < 5).sum()) == 0
    assert len(d0) + len(d1) == 50000


def test_label_shift_per_class_split_ratios():
    _, digits = synthetic_mnist(50000)
    env0, env1 = label_shift_split(digits, 0.97, "per-class")
    n0, n1 = int((digits < 5).sum()), int((digits >= 5).sum())
    d0, d1 = digits[env0], digits[env1]
    assert int((d0 < 5).sum()) == round(0.97 * n0)
    assert int((d0 >= 5).sum()) == round(0.03 * n1)
    assert int((d1 >= 5).sum()) == n1 - round(0.03 * n1)
    assert abs(float((d0 < 5).float().mean()) - 0.97) < 0.01
    assert abs(float((d1 >= 5).float().mean()) - 0.97) < 0.01


def test_build_restart_sizes_seeding_and_label_shift_noise():
    images, digits = synthetic_mnist(60000)
    config = DataConfig(pool=4000)
    a = build_restart(
        images, digits, config, np.random.RandomState(0), torch.Generator().manual_seed(0)
    )
    b = build_restart(
        images, digits, config, np.random.RandomState(0), torch.Generator().manual_seed(0)
    )
    assert [len(e) for e in a.envs] == [2000, 2000, 10000, 10000]
    assert torch.equal(a["env0"].images, b["env0"].images)
    assert torch.equal(a["test"].labels, b["test"].labels)
    rs, gen = np.random.RandomState(0), torch.Generator().manual_seed(0)
    first = build_restart(images, digits, config, rs, gen)
    second = build_restart(images, digits, config, rs, gen)
    assert not torch.equal(first["env0"].digits, second["env0"].digits)
    shifted = build_restart(
        images, digits, DataConfig(label_shift=True, pool=4000), np.random.RandomState(0), gen
    )
    d0 = shifted["env0"].digits
    assert int((d0 >= 5).sum()) == round(0.03 * 4000)
    # label noise comes after the split: about 25% of each env's labels disagree with the digit
    flip = (shifted["env1"].labels != (shifted["env1"].digits < 5).float()).float().mean()
    assert _within(float(flip), 0.25, len(shifted["env1"]))


def test_config_validation():
    with pytest.raises(ConfigError, match="split"):
        DataConfig(split="nope").validate()
    with pytest.raises(ConfigError, match="majority"):
        DataConfig(majority=1.5).validate()


def test_init_matches_the_scripts_modules():
    torch.manual_seed(3)
    lins = [nn.Linear(392, 16), nn.Linear(16, 16), nn.Linear(16, 1)]
    for lin in lins:
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
    state = init_restart(torch.Generator().manual_seed(3), hidden=16)
    for (w, b), lin in zip((("w1", "b1"), ("w2", "b2"), ("w3", "b3")), lins, strict=True):
        assert torch.equal(state[w], lin.weight.data)
        assert torch.equal(state[b], lin.bias.data)


def test_variants_change_only_what_they_say():
    from dgalign.experiments.cmnist_data import VARIANTS, binary_label, variant

    paper = DataConfig()
    assert variant("paper").apply(paper) == paper
    assert "color_flip" not in paper.identity() and "task" not in paper.identity()
    close = variant("close-colors").apply(paper)
    assert close.color_flip == (0.15, 0.1, 0.9) and close.identity()["color_flip"] == [
        0.15,
        0.1,
        0.9,
    ]
    assert variant("label-noise-15").apply(paper).label_flip == 0.15
    assert set(VARIANTS) >= {"paper", "close-colors", "label-noise-15", "parity"}
    digits = torch.arange(10)
    assert binary_label(digits, "parity").tolist() == [0, 1] * 5
    assert binary_label(digits).tolist() == [1] * 5 + [0] * 5
    with pytest.raises(ConfigError, match="unknown variant"):
        variant("rotated")
    with pytest.raises(ConfigError, match="color flips"):
        DataConfig(color_flip=(0.1, 1.5, 0.9)).validate()


def test_parity_variant_labels_and_color_rates():
    images, digits = synthetic_mnist(20000, seed=3)
    gen = torch.Generator().manual_seed(0)
    env = make_environment(images, digits, 0.15, gen, label_flip=0.0, task="parity")
    assert torch.equal(env.labels.long(), digits % 2)
    disagree = float((env.colors != env.labels.long()).float().mean())
    assert abs(disagree - 0.15) < 4 * (0.15 * 0.85 / 20000) ** 0.5
