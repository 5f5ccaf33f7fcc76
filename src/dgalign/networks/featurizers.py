"""Featurizers: networks mapping inputs to a feature vector of size `n_outputs`.

The architectures match DomainBed's so results are comparable: the MNIST CNN (four 3x3 convs,
GroupNorm, global average pooling, 128 features), a fully connected MLP, and the image backbones
of `dgalign.networks.backbones` (ResNet-18/50, ViT-S/16).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dgalign.errors import ConfigError
from dgalign.utils.registry import Registry


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


BackboneBuilder = Callable[[Sequence[int], dict[str, Any]], nn.Module]

#: Featurizer builders `(input_shape, hparams) -> module with n_outputs`, chosen by the
#: `backbone` hyper-parameter; `register_backbone` adds one.
BACKBONES: Registry[BackboneBuilder] = Registry(
    "backbone",
    check=lambda fn: [] if callable(fn) else ["is not callable (input_shape, hparams)"],
    describe=lambda fn: (fn.__doc__ or "").strip(),
    fix="register a function (input_shape, hparams) -> nn.Module with an n_outputs attribute",
)


def register_backbone(builder=None, *, name: str | None = None, description: str | None = None):
    """Decorator (or call): make `builder(input_shape, hparams) -> nn.Module` (exposing
    `n_outputs`) the featurizer of `--hparams '{"backbone": name}'`."""
    return BACKBONES.register(builder, name=name, description=description)


def _mnist_cnn(input_shape: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
    """DomainBed's MNIST CNN (128 features)."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"backbone mnist_cnn needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
            'use --hparams \'{"backbone": "mlp"}\''
        )
    return MNISTCNN(input_shape)


def _mlp(input_shape: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
    """Fully connected MLP on the flattened input (mlp_width, mlp_depth, mlp_dropout)."""
    n_inputs = 1
    for size in input_shape:
        n_inputs *= int(size)
    return MLP(n_inputs, int(hparams["mlp_width"]), hparams)


def _image(name: str, doc: str) -> BackboneBuilder:
    def build(input_shape: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
        from dgalign.networks.backbones import build_backbone

        return build_backbone(name, input_shape, hparams)

    build.__doc__ = doc
    return build


def _timm(name: str, doc: str) -> BackboneBuilder:
    def build(input_shape: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
        from dgalign.networks.timm_backbones import build_timm_backbone

        return build_timm_backbone(name, input_shape, hparams)

    build.__doc__ = doc
    return build


BACKBONES.register(_mnist_cnn, name="mnist_cnn")
BACKBONES.register(_mlp, name="mlp")
BACKBONES.register(_image("resnet18", "torchvision ResNet-18"), name="resnet18")
BACKBONES.register(_image("resnet50", "torchvision ResNet-50"), name="resnet50")
BACKBONES.register(_image("vit_s16", "torchvision ViT-S/16"), name="vit_s16")
BACKBONES.register(_timm("resnet50_augmix", "timm ResNet-50 (AugMix)"), name="resnet50_augmix")
BACKBONES.register(_timm("dinov2_vitb14", "timm DINOv2 ViT-B/14"), name="dinov2_vitb14")
BACKBONES.register(_timm("clip_vitb16", "timm CLIP ViT-B/16"), name="clip_vitb16")


def build_featurizer(input_shape: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
    """The featurizer named by `hparams["backbone"]`; it exposes `n_outputs`.

    DomainBed's `resnet18: true` selects ResNet-18 where the backbone is the default ResNet-50.
    Image backbones read `pretrained`, `freeze_bn`, `resnet_dropout` and `amp`
    (`dgalign.networks.backbones`)."""
    backbone = hparams.get("backbone", "mnist_cnn" if len(input_shape) == 3 else "mlp")
    if backbone == "resnet50" and hparams.get("resnet18", False):
        backbone = "resnet18"
    return BACKBONES.get(backbone)(input_shape, hparams)
