"""Image backbones as featurizers: ResNet-18/50 (torchvision) and ViT-S/16 (timm, optional).

As DomainBed: the classification layer is removed (features of 512 / 2048 / 384 dims), BatchNorm
layers stay in eval mode during training when `freeze_bn` (running statistics frozen; their
affine weights still train), dropout `resnet_dropout` is applied to the features, and inputs
with other than 3 channels get a first convolution whose weights repeat the RGB ones.

`pretrained` loads ImageNet weights (torchvision's IMAGENET1K_V1 for the ResNets, DomainBed's
`pretrained=True`; timm's `vit_small_patch16_224.augreg_in21k_ft_in1k` for ViT-S/16) through
the usual caches, so weights placed there by hand work offline.

`amp` (CUDA only; ignored on CPU): the featurizer runs under bfloat16 autocast with its weights
and inputs in channels-last layout, and returns float32 features. Only the featurizer's forward
(and so its backward) is mixed precision: heads, losses and the curvature terms the algorithms
compute stay float32, and bfloat16 needs no loss scaling, so every algorithm's update works
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import nn

from dgalign.errors import ConfigError, DataError
from dgalign.networks.resnet import FrozenBatchNormMixin, adapt_input_channels
from dgalign.utils.progress import show_progress

VIT_S16 = "vit_small_patch16_224.augreg_in21k_ft_in1k"
_PRETRAINED_HELP = "set pretrained false or place the weights in the {cache}"


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"backbone {name} needs image inputs (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


class _AmpMixin(nn.Module):
    """bfloat16 autocast + channels-last around `_features` on CUDA when `amp` is on."""

    amp: bool = False

    def _run(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if not (self.amp and x.is_cuda):
            return fn(x)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fn(x)
        return out.float()


class ResNetFeaturizer(FrozenBatchNormMixin, _AmpMixin):
    """torchvision ResNet-18 / ResNet-50 without its last layer, then dropout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        depth: int = 50,
        pretrained: bool = False,
        freeze_bn: bool = True,
        dropout: float = 0.0,
        amp: bool = False,
    ) -> None:
        super().__init__()
        from torchvision import models

        if depth not in (18, 50):
            raise ConfigError(f"ResNet depth must be 18 or 50, got {depth}")
        channels, _, _ = _image_shape(f"resnet{depth}", input_shape)
        builder = models.resnet18 if depth == 18 else models.resnet50
        weights = models.ResNet18_Weights if depth == 18 else models.ResNet50_Weights
        self.network = builder(weights=None)
        if pretrained:
            self.network.load_state_dict(_torchvision_state(weights.IMAGENET1K_V1))
        adapt_input_channels(self.network, channels)
        self.n_outputs = self.network.fc.in_features
        self.network.fc = nn.Identity()
        self.dropout = nn.Dropout(float(dropout))
        self.freeze_bn = bool(freeze_bn)
        self.amp = bool(amp)
        if self.amp:
            self.to(memory_format=torch.channels_last)
        self.train()

    def _features(
        self, x: torch.Tensor, after_early_block: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> torch.Tensor:
        net = self.network
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for i, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
            x = layer(x)
            if after_early_block is not None and i < 2:
                x = after_early_block(x)
        return torch.flatten(net.avgpool(x), 1)

    def forward(
        self,
        x: torch.Tensor,
        after_early_block: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Features of `x`; `after_early_block` (MixStyle) runs after layer1 and layer2."""
        return self.dropout(self._run(lambda v: self._features(v, after_early_block), x))


class ViTFeaturizer(_AmpMixin):
    """timm's ViT-S/16 with no classification head (384 features), then dropout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        pretrained: bool = False,
        dropout: float = 0.0,
        amp: bool = False,
    ) -> None:
        super().__init__()
        channels, height, width = _image_shape("vit_s16", input_shape)
        try:
            import timm
        except ImportError:
            raise ConfigError("backbone vit_s16 needs timm: pip install dgalign[timm]") from None
        kwargs = {"num_classes": 0, "img_size": (height, width), "in_chans": channels}
        try:
            self.network = timm.create_model(VIT_S16, pretrained=pretrained, **kwargs)
        except Exception as exc:  # network, hub and file errors all mean the same to the user
            if not pretrained:
                raise
            cache = "Hugging Face hub cache ($HF_HOME)"
            raise DataError(
                f"pretrained weights could not be downloaded for vit_s16 ({_reason(exc)}); "
                + _PRETRAINED_HELP.format(cache=cache)
            ) from None
        self.n_outputs = int(self.network.num_features)
        self.dropout = nn.Dropout(float(dropout))
        self.amp = bool(amp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self._run(self.network, x))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _torchvision_state(weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of torchvision `weights`, from the torch hub cache or downloaded."""
    try:
        return weights.get_state_dict(progress=show_progress(None), check_hash=True)
    except Exception as exc:  # URLError, HTTPError, hash mismatch, corrupt cache file, ...
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(weights.url).path).name
        raise DataError(
            f"pretrained weights could not be downloaded ({_reason(exc)}); "
            + _PRETRAINED_HELP.format(cache=f"torch hub cache as {file}")
        ) from None


def build_backbone(name: str, input_shape: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
    """Featurizer `name` ("resnet18", "resnet50", "vit_s16") configured by `hparams`
    (`pretrained`, `freeze_bn`, `resnet_dropout`, `amp`)."""
    pretrained = bool(hparams.get("pretrained", False))
    dropout = float(hparams.get("resnet_dropout", 0.0))
    amp = bool(hparams.get("amp", False))
    if name in ("resnet18", "resnet50"):
        freeze_bn = bool(hparams.get("freeze_bn", True))
        return ResNetFeaturizer(input_shape, int(name[6:]), pretrained, freeze_bn, dropout, amp)
    if name == "vit_s16":
        return ViTFeaturizer(input_shape, pretrained, dropout, amp)
    raise ConfigError(f"unknown image backbone {name!r}")
