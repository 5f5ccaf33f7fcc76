"""DomainBed main's backbones through timm: AugMix ResNet-50, DINOv2 ViT-B/14 (DomainBed's
5 x 768 features), CLIP ViT-B/16, vit_attn_tune, offline pretrained weights."""

import pytest
import torch
from torch import nn

from dgalign.algorithms.spaces import default_hparams
from dgalign.errors import ConfigError, DataError
from dgalign.networks import build_featurizer

timm = pytest.importorskip("timm", reason="the timm backbones need timm (dev extra)")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hp(**overrides):
    return default_hparams("ERM", "PACS") | {"pretrained": False, **overrides}


def test_resnet50_augmix_features_and_frozen_batchnorm():
    net = build_featurizer((3, 32, 32), _hp(backbone="resnet50_augmix")).train()
    assert net.n_outputs == 2048 and net(torch.randn(2, 3, 32, 32)).shape == (2, 2048)
    assert not any(m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    live = build_featurizer((2, 32, 32), _hp(backbone="resnet50_augmix", freeze_bn=False))
    assert all(m.training for m in live.train().modules() if isinstance(m, nn.BatchNorm2d))
    assert live.network.conv1.weight.shape[1] == 2


def test_dinov2_features_are_four_class_tokens_and_the_mean_patch_token():
    """Mutation caught: tokens taken before the final LayerNorm, or the class token of the
    last block only."""
    torch.manual_seed(0)
    net = build_featurizer((3, 28, 28), _hp(backbone="dinov2_vitb14")).eval()
    assert net.n_outputs == 3840
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = net(x)
        tokens = net.network.forward_features(x)  # every token after the final norm
    assert out.shape == (2, 3840)
    torch.testing.assert_close(out[:, 3 * 768 : 4 * 768], tokens[:, 0])
    torch.testing.assert_close(out[:, 4 * 768 :], tokens[:, 1:].mean(1))


def test_clip_vitb16_and_attention_only_tuning():
    net = build_featurizer((3, 32, 32), _hp(backbone="clip_vitb16", vit_attn_tune=True))
    assert net.n_outputs == 768 and net(torch.randn(2, 3, 32, 32)).shape == (2, 768)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all("attn" in n for n in trainable)
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert any("mlp" in n for n in frozen)


def test_vit_dropout_applies_to_the_features():
    net = build_featurizer((3, 28, 28), _hp(backbone="dinov2_vitb14", vit_dropout=0.5))
    assert net.dropout.p == 0.5


def test_rgb_only_and_offline_weights_are_one_line_errors(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="RGB"):
        build_featurizer((1, 28, 28), _hp(backbone="dinov2_vitb14"))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def offline(*args, **kwargs):
        raise OSError("We have no connection or you passed local_files_only")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(DataError) as info:
        build_featurizer((3, 32, 32), _hp(backbone="resnet50_augmix", pretrained=True))
    message = str(info.value)
    assert "\n" not in message and "resnet50.ram_in1k" in message and "HF_HOME" in message
