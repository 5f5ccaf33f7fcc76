"""What the torchvision and timm ResNet featurizers share: a first convolution for images of
any channel count, and BatchNorm kept frozen (DomainBed's `freeze_bn`)."""

from __future__ import annotations

from typing import Self

from torch import nn


def adapt_input_channels(network: nn.Module, channels: int) -> None:
    """Replace `network.conv1` (RGB) by one taking `channels` inputs, input channel i starting
    from the weights of RGB channel i % 3 (DomainBed's rule); nothing to do for 3 channels."""
    if channels == 3:
        return
    old = network.conv1.weight.data.clone()
    network.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
    for i in range(channels):
        network.conv1.weight.data[:, i] = old[:, i % 3]


class FrozenBatchNormMixin(nn.Module):
    """`train()` that keeps every BatchNorm layer of `self.network` in eval mode (running
    statistics frozen) when `self.freeze_bn` is set."""

    network: nn.Module
    freeze_bn: bool = False

    def train(self, mode: bool = True) -> Self:
        """As `nn.Module.train`, keeping BatchNorm in eval mode when `freeze_bn`."""
        super().train(mode)
        if self.freeze_bn:
            for module in self.network.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self
