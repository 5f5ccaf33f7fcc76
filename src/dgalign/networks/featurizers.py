"""Featurizers: networks mapping inputs to a feature vector of size `n_outputs`.

The architectures match DomainBed's so results are comparable: the MNIST CNN (four 3x3 convs,
GroupNorm, global average pooling, 128 features), a fully connected MLP, and the image backbones
of `dgalign.networks.backbones` (ResNet-18/50, ViT-S/16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dgalign.errors import ConfigError


class MLP(nn.Module):
    """input -> width -> (depth - 2) x [width] -> n_outputs, ReLU and dropout between layers."""

    def __init__(self, n_inputs: int, n_outputs: int, hparams: dict[str, Any]) -> None:
        super().__init__()
        width, depth = int(hparams["mlp_width"]), int(hparams["mlp_depth"])
        self.input = nn.Linear(n_inputs, width)
        self.dropout = nn.Dropout(float(hparams["mlp_dropout"]))
        self.hiddens = nn.ModuleList([nn.Linear(width, width) for _ in range(depth - 2)])
        self.output = nn.Linear(width, n_outputs)
        self.n_outputs = n_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.input(x.flatten(1))))
        for hidden in self.hiddens:
            x = self.dropout(F.relu(hidden(x)))
        return self.output(x)


class MNISTCNN(nn.Module):
    """DomainBed's MNIST network: conv(64) -> conv(128, stride 2) -> conv(128) -> conv(128),
    each followed by ReLU and GroupNorm(8), then global average pooling: 128 features."""

    n_outputs = 128

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 64, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.bn0 = nn.GroupNorm(8, 64)
        self.bn1 = nn.GroupNorm(8, 128)
        self.bn2 = nn.GroupNorm(8, 128)
        self.bn3 = nn.GroupNorm(8, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(F.relu(self.conv1(x)))
        x = self.bn1(F.relu(self.conv2(x)))
        x = self.bn2(F.relu(self.conv3(x)))
        x = self.bn3(F.relu(self.conv4(x)))
        return self.avgpool(x).flatten(1)


BACKBONES = (
    "mnist_cnn", "mlp", "resnet18", "resnet50", "vit_s16",
    "resnet50_augmix", "dinov2_vitb14", "clip_vitb16",
)  # fmt: skip
IMAGE_BACKBONES = ("resnet18", "resnet50", "vit_s16")
TIMM_BACKBONES = ("resnet50_augmix", "dinov2_vitb14", "clip_vitb16")


def build_featurizer(input_shape: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
    """The featurizer named by `hparams["backbone"]`; it exposes `n_outputs`.

    DomainBed's `resnet18: true` selects ResNet-18 where the backbone is the default ResNet-50.
    Image backbones read `pretrained`, `freeze_bn`, `resnet_dropout` and `amp`
    (`dgalign.networks.backbones`)."""
    backbone = hparams.get("backbone", "mnist_cnn" if len(input_shape) == 3 else "mlp")
    if backbone == "resnet50" and hparams.get("resnet18", False):
        backbone = "resnet18"
    if backbone in IMAGE_BACKBONES:
        from dgalign.networks.backbones import build_backbone

        return build_backbone(backbone, input_shape, hparams)
    if backbone in TIMM_BACKBONES:
        from dgalign.networks.timm_backbones import build_timm_backbone

        return build_timm_backbone(backbone, input_shape, hparams)
    if backbone == "mlp":
        n_inputs = 1
        for size in input_shape:
            n_inputs *= int(size)
        return MLP(n_inputs, int(hparams["mlp_width"]), hparams)
    if backbone == "mnist_cnn":
        if len(input_shape) != 3:
            raise ConfigError(
                f"backbone mnist_cnn needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
                'use --hparams \'{"backbone": "mlp"}\''
            )
        return MNISTCNN(input_shape)
    raise ConfigError(f"unknown backbone {backbone!r}; available here: {', '.join(BACKBONES)}")
