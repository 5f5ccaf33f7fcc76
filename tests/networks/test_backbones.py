"""Image backbones: shapes, frozen BatchNorm, channel adaptation, dropout, pretrained weights
from the torch hub cache or a clear error offline, MixStyle insertion, AMP flag, hparams."""

import sys
import urllib.error

import pytest
import torch
from torch import nn

from dgalign.algorithms.spaces import default_hparams
from dgalign.errors import ConfigError, DataError
from dgalign.networks import build_featurizer
from dgalign.networks.backbones import ResNetFeaturizer
from dgalign.networks.mixstyle import MixStyle, MixStyleFeaturizer

SHAPE = (3, 32, 32)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hp(**overrides):
    hp = default_hparams("ERM", "PACS")
    hp.update({"pretrained": False, **overrides})
    return hp


@pytest.mark.parametrize(("name", "features"), [("resnet18", 512), ("resnet50", 2048)])
def test_resnet_features(name, features):
    net = build_featurizer(SHAPE, _hp(backbone=name))
    assert isinstance(net, ResNetFeaturizer) and net.n_outputs == features
    assert net(torch.randn(2, *SHAPE)).shape == (2, features)


def test_domainbed_resnet18_flag_selects_resnet18():
    assert build_featurizer(SHAPE, _hp(resnet18=True)).n_outputs == 512


def test_batchnorm_frozen_in_training_mode_unless_disabled():
    net = build_featurizer(SHAPE, _hp(backbone="resnet18")).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert net.training and bns and not any(m.training for m in bns)
    before = bns[0].running_mean.clone()
    net(torch.randn(4, *SHAPE) + 3.0)
    assert torch.equal(bns[0].running_mean, before)  # statistics frozen
    assert bns[0].weight.requires_grad  # affine weights still train, as DomainBed
    live = build_featurizer(SHAPE, _hp(backbone="resnet18", freeze_bn=False)).train()
    assert all(m.training for m in live.modules() if isinstance(m, nn.BatchNorm2d))


def test_other_channel_counts_repeat_the_rgb_filters():
    net = build_featurizer((4, 32, 32), _hp(backbone="resnet18"))
    weight = net.network.conv1.weight
    assert weight.shape[1] == 4 and torch.equal(weight[:, 3], weight[:, 0])
    with pytest.raises(ConfigError, match="image inputs"):
        build_featurizer((10,), _hp(backbone="resnet18"))


def test_dropout_before_the_head():
    net = build_featurizer(SHAPE, _hp(backbone="resnet18", resnet_dropout=0.5)).train()
    assert net.dropout.p == 0.5
    features = net(torch.randn(2, *SHAPE))
    assert (features == 0).float().mean() > 0.2


def test_pretrained_offline_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(DataError) as err:
        build_featurizer(SHAPE, _hp(backbone="resnet18", pretrained=True))
    message = str(err.value)
    assert "\n" not in message and "pretrained weights could not be downloaded" in message
    assert "set pretrained false" in message and "resnet18-f37072fd.pth" in message


def test_pretrained_weights_from_the_hub_cache(monkeypatch, tmp_path):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(3)
    reference = resnet18()
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: pytest.fail("no download"))
    net = build_featurizer(SHAPE, _hp(backbone="resnet18", pretrained=True))
    assert torch.equal(net.network.conv1.weight, reference.conv1.weight)


def test_mixstyle_after_layer1_and_layer2():
    torch.manual_seed(0)
    net = build_featurizer(SHAPE, _hp(backbone="resnet18"))
    seen = []

    class Spy(MixStyle):
        def forward(self, x):
            seen.append(x.shape[1])
            return super().forward(x)

    wrapped = MixStyleFeaturizer(net, Spy(p=1.0))
    x = torch.randn(4, *SHAPE)
    out = wrapped.train()(x)
    assert seen == [64, 128] and out.shape == (4, 512)
    assert torch.allclose(wrapped.eval()(x), net.eval()(x))


def test_amp_flag_is_inert_on_cpu():
    torch.manual_seed(0)
    plain = build_featurizer(SHAPE, _hp(backbone="resnet18"))
    amp = build_featurizer(SHAPE, _hp(backbone="resnet18", amp=True))
    amp.load_state_dict(plain.state_dict())
    assert amp.network.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, *SHAPE)
    out = amp.eval()(x)
    assert out.dtype == torch.float32 and torch.allclose(out, plain.eval()(x), atol=1e-5)


def test_vit_s16_needs_timm_or_builds(monkeypatch):
    if "timm" not in sys.modules:
        try:
            import timm  # noqa: F401
        except ImportError:
            monkeypatch.setitem(sys.modules, "timm", None)
    if sys.modules.get("timm") is None:
        with pytest.raises(ConfigError, match=r"pip install dgalign\[timm\]"):
            build_featurizer(SHAPE, _hp(backbone="vit_s16"))
        return
    net = build_featurizer(SHAPE, _hp(backbone="vit_s16"))
    assert net.n_outputs == 384 and net(torch.randn(2, *SHAPE)).shape == (2, 384)


def test_hparams_defaults():
    image, small = default_hparams("ERM", "PACS"), default_hparams("ERM", "ColoredMNIST")
    assert (image["backbone"], image["pretrained"], image["freeze_bn"]) == ("resnet50", True, True)
    assert (small["backbone"], small["pretrained"], small["amp"]) == ("mnist_cnn", False, False)
    assert default_hparams("ERM", "WILDSCamelyon")["pretrained"] is True
