"""ColoredMNIST, RotatedMNIST and Spurious28 built from small synthetic image pools."""

import numpy as np
import pytest
import torch
from PIL import Image

from dgalign.data import ColoredMNIST, RotatedMNIST, Spurious28, get_dataset_class
from dgalign.errors import ConfigError


def _pool(n=6000, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels


@pytest.mark.parametrize("cls", [ColoredMNIST, RotatedMNIST, Spurious28])
def test_metadata(cls):
    assert len(cls.ENVIRONMENTS) >= 3
    assert cls.N_STEPS > 0 and cls.CHECKPOINT_FREQ > 0
    assert cls.num_classes >= 2 and len(cls.input_shape) == 3


def test_colored_mnist_statistics():
    torch.manual_seed(0)
    images, labels = _pool(30000)
    ds = ColoredMNIST(pool=(images, labels))
    assert len(ds) == 3
    for env, color_flip in zip(ds.datasets, ColoredMNIST.COLOR_FLIP, strict=True):
        x, y = env.x, env.y
        assert x.shape[1:] == (2, 28, 28) and y.dtype == torch.long
        assert set(y.unique().tolist()) <= {0, 1}
        assert x.min() >= 0 and x.max() <= 1
        red = x[:, 0].flatten(1).sum(1) > 0
        green = x[:, 1].flatten(1).sum(1) > 0
        assert torch.all(red ^ green)  # exactly one channel is coloured
        color = green.long()  # colour 1 = green channel (channel 1 - colour is zeroed)
        disagreement = (color != y).float().mean().item()
        assert disagreement == pytest.approx(color_flip, abs=0.015)


def test_colored_mnist_label_noise_rate():
    images, labels = _pool(30000)
    torch.manual_seed(1)
    env = ColoredMNIST.color_dataset(images, labels, 0.1)
    flip = (env.y != (labels < 5).long()).float().mean().item()
    assert flip == pytest.approx(0.25, abs=0.015)


def test_environments_partition_the_pool_round_robin():
    images, labels = _pool(600)
    torch.manual_seed(3)
    ds = RotatedMNIST(pool=(images, labels))
    assert [len(e) for e in ds.datasets] == [100] * 6
    torch.manual_seed(3)
    shuffle = torch.randperm(600)
    assert torch.equal(ds.datasets[2].y, labels[shuffle][2::6])
    # env 0 is unrotated: pixel values equal the shuffled images / 255.
    expected = images[shuffle][0::6].float() / 255.0
    assert torch.allclose(ds.datasets[0].x[:, 0], expected, atol=1e-6)


def test_rotation_matches_pil_bilinear():
    images, labels = _pool(12)
    env = RotatedMNIST.rotate_dataset(images, labels, 45)
    ref = Image.fromarray(images[3].numpy()).rotate(45, resample=Image.BILINEAR, fillcolor=0)
    assert np.allclose(env.x[3, 0].numpy(), np.asarray(ref) / 255.0, atol=1e-6)
    # A rotation by 90 degrees of a centred pattern equals np.rot90.
    square = torch.zeros(1, 28, 28, dtype=torch.uint8)
    square[0, 4:10, 10:12] = 255
    rotated = RotatedMNIST.rotate_dataset(square, torch.zeros(1), 90).x[0, 0]
    assert np.allclose(rotated.numpy(), np.rot90(square[0].numpy()) / 255.0, atol=1e-6)


def test_debug28_is_deterministic_and_labelled():
    a, b = Spurious28(), Spurious28()
    for ea, eb in zip(a.datasets, b.datasets, strict=True):
        assert torch.equal(ea.x, eb.x) and torch.equal(ea.y, eb.y)
        assert set(ea.y.tolist()) == {0, 1}


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(
        ConfigError, match="valid names: Debug28, Spurious28, ColoredMNIST, RotatedMNIST"
    ):
        get_dataset_class("ColouredMNIST")
