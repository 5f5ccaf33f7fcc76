"""CrossNorm exchanges statistics, SelfNorm follows its formula, CNSN's positions and its one
active CrossNorm layer."""

import torch

from dgalign.algorithms.spaces import default_hparams
from dgalign.networks import build_featurizer
from dgalign.networks import crossnorm as cn
from dgalign.networks.crossnorm import CNSNFeaturizer, SelfNorm, channel_stats, crossnorm


def test_crossnorm_gives_each_sample_its_partners_statistics():
    """Mutation caught: exchanging the means only (1-moment CrossNorm)."""
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
        * torch.tensor([1.0, 2, 3, 4]).reshape(4, 1, 1, 1).double()
    )
    perm = torch.tensor([2, 3, 0, 1])
    mu, sigma = channel_stats(x)
    mu2, sigma2 = channel_stats(crossnorm(x, perm))
    torch.testing.assert_close(mu2, mu[perm])
    torch.testing.assert_close(sigma2, sigma[perm], rtol=1e-4, atol=1e-4)


def test_selfnorm_formula():
    torch.manual_seed(0)
    sn = SelfNorm(3).double().eval()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    mu, sigma = channel_stats(x)
    a = sn.g_fc.weight.reshape(3, 2)
    b = sn.f_fc.weight.reshape(3, 2)
    lin_g = a[:, 0] * mu.reshape(5, 3) + a[:, 1] * sigma.reshape(5, 3)
    lin_f = b[:, 0] * mu.reshape(5, 3) + b[:, 1] * sigma.reshape(5, 3)
    g = torch.sigmoid(sn.g_bn(lin_g)).reshape(5, 3, 1, 1)  # eval: running statistics
    f = torch.sigmoid(sn.f_bn(lin_f)).reshape(5, 3, 1, 1)
    torch.testing.assert_close(sn(x), (x - mu) / sigma * sigma * g + mu * f)


def _hp(backbone):
    return default_hparams("ERM", "ColoredMNIST") | {"backbone": backbone, "pretrained": False}


def test_positions_after_every_block():
    cnn = CNSNFeaturizer(build_featurizer((2, 28, 28), _hp("mnist_cnn")))
    assert [s.g_fc.in_channels for s in cnn.selfnorms] == [64, 128, 128, 128]
    resnet = CNSNFeaturizer(build_featurizer((3, 32, 32), _hp("resnet18")))
    assert len(resnet.selfnorms) == 8
    mlp = CNSNFeaturizer(build_featurizer((2, 28, 28), _hp("mlp")))
    assert len(mlp.selfnorms) == 2  # mlp_depth 3: the input layer and one hidden layer
    x = torch.randn(6, 3, 32, 32)
    assert resnet(x).shape == (6, 512)


def test_one_active_crossnorm_layer_in_training_only(monkeypatch):
    """Mutation caught: CrossNorm at every position, or in evaluation."""
    calls = []
    real = cn.crossnorm

    def counting(x, perm, eps=cn.EPS):
        calls.append(x.shape[1])
        return real(x, perm, eps)

    monkeypatch.setattr(cn, "crossnorm", counting)
    torch.manual_seed(0)
    net = CNSNFeaturizer(build_featurizer((2, 28, 28), _hp("mnist_cnn")), p=1.0, active=1)
    x = torch.randn(4, 2, 28, 28)
    for _ in range(5):
        net.train()(x)
    assert len(calls) == 5
    net.eval()(x)
    assert len(calls) == 5
    never = CNSNFeaturizer(build_featurizer((2, 28, 28), _hp("mnist_cnn")), p=0.0)
    never.train()(x)
    assert len(calls) == 5
