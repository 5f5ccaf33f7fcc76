"""CrossNorm and SelfNorm (Tang et al., 2021, "CrossNorm and SelfNorm for Generalization under
Distribution Shifts"), inserted after every block of a featurizer.

For a feature map x [n, c, ...] with per-sample, per-channel mean mu and std sigma over the
positions (sigma = sqrt(unbiased variance + eps)):

- CrossNorm, 2-instance mode: each sample takes the statistics of a partner (a random
  permutation of the batch): `x' = sigma_partner (x - mu) / sigma + mu_partner`. Training only;
  per training forward pass one CrossNorm position (`active` of them) is chosen uniformly and
  applied with probability `p` (the paper's DG setting: one active layer, p = 0.5).
- SelfNorm recalibrates the statistics with learned channel attention, in training and
  evaluation: `g = sigmoid(BN(a_c mu_c + b_c sigma_c))`, `f = sigmoid(BN(a'_c mu_c + b'_c
  sigma_c))` (a channel-wise linear map of (mu, sigma), then BatchNorm over the batch), and
  `x' = sigma g (x - mu) / sigma + mu f`.

Positions ("after each residual block"): after every block of `layer1..layer4` of a ResNet;
after each of the four conv blocks of the MNIST CNN; for the MLP, after each hidden layer, each
hidden vector taken as one channel whose positions are its units (as `MixStyle` does here).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgalign.errors import ConfigError
from dgalign.networks.backbones import ResNetFeaturizer
from dgalign.networks.featurizers import MLP, MNISTCNN

EPS = 1e-5


def channel_stats(x: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and std over the positions (axes after the channel); the
    variance is unbiased, or biased (0) for maps of a single position."""
    dims = tuple(range(2, x.dim()))
    positions = x[0, 0].numel()
    var = x.var(dim=dims, keepdim=True, correction=1 if positions > 1 else 0)
    return x.mean(dim=dims, keepdim=True), (var + eps).sqrt()


def crossnorm(x: Tensor, perm: Tensor, eps: float = EPS) -> Tensor:
    """2-instance CrossNorm: every sample gets the statistics of sample `perm[i]`."""
    mu, sigma = channel_stats(x, eps)
    return (x - mu) / sigma * sigma[perm] + mu[perm]


class SelfNorm(nn.Module):
    """Learned recalibration of the channel statistics (module docstring)."""

    def __init__(self, channels: int, eps: float = EPS) -> None:
        super().__init__()
        self.eps = eps
        self.g_fc = nn.Conv1d(channels, channels, kernel_size=2, bias=False, groups=channels)
        self.g_bn = nn.BatchNorm1d(channels)
        self.f_fc = nn.Conv1d(channels, channels, kernel_size=2, bias=False, groups=channels)
        self.f_bn = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        mu, sigma = channel_stats(x, self.eps)
        n, c = x.shape[:2]
        stats = torch.cat([mu.reshape(n, c, 1), sigma.reshape(n, c, 1)], dim=2)
        shape = (n, c) + (1,) * (x.dim() - 2)
        g = torch.sigmoid(self.g_bn(self.g_fc(stats))).reshape(shape)
        f = torch.sigmoid(self.f_bn(self.f_fc(stats))).reshape(shape)
        return (x - mu) / sigma * (sigma * g) + mu * f


def block_outputs(featurizer: nn.Module) -> tuple[list[nn.Module], list[int]]:
    """The modules whose outputs are the featurizer's block outputs, and their channels."""
    if isinstance(featurizer, ResNetFeaturizer):
        net = featurizer.network
        blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
        channels = []
        for b in blocks:
            last = b.bn3 if hasattr(b, "bn3") else b.bn2
            channels.append(int(last.num_features))
        return blocks, channels
    if isinstance(featurizer, MNISTCNN):
        norms = [featurizer.bn0, featurizer.bn1, featurizer.bn2, featurizer.bn3]
        return norms, [int(m.num_channels) for m in norms]
    if isinstance(featurizer, MLP):
        return [featurizer.dropout], [1]  # called once per hidden layer (see CNSNFeaturizer)
    raise ConfigError(
        f"CNSN does not know the blocks of {type(featurizer).__name__}; supported: "
        "ResNet-18/50, the MNIST CNN and the MLP"
    )


class CNSNFeaturizer(nn.Module):
    """`featurizer` with CrossNorm + SelfNorm after each of its blocks (module docstring)."""

    def __init__(self, featurizer: nn.Module, p: float = 0.5, active: int = 1) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.n_outputs = featurizer.n_outputs
        self.p = float(p)
        self.active = int(active)
        modules, channels = block_outputs(featurizer)
        self.is_mlp = isinstance(featurizer, MLP)
        if self.is_mlp:
            n_hidden = len(featurizer.hiddens) + 1
            modules, channels = modules * n_hidden, channels * n_hidden
        self.selfnorms = nn.ModuleList(SelfNorm(c) for c in channels)
        self._cn_on: set[int] = set()
        self._position = 0
        hooked = {id(m): m for m in modules}
        for module in hooked.values():
            module.register_forward_hook(self._hook)
        self._positions = {id(m): i for i, m in enumerate(modules)}

    def _hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        if self.is_mlp:
            index = self._position
            self._position += 1
            x = output.unsqueeze(1)
        else:
            index = self._positions[id(module)]
            x = output
        if index in self._cn_on and len(x) > 1:
            x = crossnorm(x, torch.randperm(len(x), device=x.device))
        x = self.selfnorms[index](x)
        return x.squeeze(1) if self.is_mlp else x

    def forward(self, x: Tensor) -> Tensor:
        self._position = 0
        self._cn_on = set()
        if self.training:
            n = len(self.selfnorms)
            chosen = torch.randperm(n)[: min(self.active, n)].tolist()
            self._cn_on = {i for i in chosen if float(torch.rand(())) < self.p}
        try:
            return self.featurizer(x)
        finally:
            self._cn_on = set()
