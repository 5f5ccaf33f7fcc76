"""Backbones through timm (`pip install dgalign[timm]`) that DomainBed's main branch offers:

- `resnet50_augmix`: ResNet-50 with timm's `resnet50.ram_in1k` weights (trained with AugMix and
  RandAugment; DomainBed main's default backbone since ERM++), 2048 features, BatchNorm frozen
  when `freeze_bn`, `resnet_dropout` on the features, other channel counts as for the ResNets.
- `dinov2_vitb14`: DINOv2 ViT-B/14 (`vit_base_patch14_dinov2.lvd142m`). As DomainBed, the
  features are the class tokens of the last four blocks and the mean of the last block's patch
  tokens, each after the final LayerNorm: 5 x 768 = 3840.
- `clip_vitb16`: CLIP's ViT-B/16 image tower (`vit_base_patch16_clip_224.openai`), the
  normalised class token (768; CLIP's projection to 512 is not applied).

The ViTs take `vit_dropout` on the features and `vit_attn_tune` (train only parameters whose
name contains `attn`, DomainBed's option); their positional embeddings are resized to the input
size by timm. `pretrained` weights come from the Hugging Face hub cache ($HF_HOME); without
them (offline) the run stops with one line naming the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dgalign.errors import ConfigError, DataError
from dgalign.networks.resnet import FrozenBatchNormMixin, adapt_input_channels

TIMM_WEIGHTS = {
    "resnet50_augmix": "resnet50.ram_in1k",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "clip_vitb16": "vit_base_patch16_clip_224.openai",
}
_CACHE = "Hugging Face hub cache ($HF_HOME, default ~/.cache/huggingface/hub)"


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("this backbone needs timm: pip install dgalign[timm]") from None
    return timm


def create(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm model `TIMM_WEIGHTS[name]`; DataError naming the cache when weights are missing."""
    timm = _timm()
    try:
        return timm.create_model(TIMM_WEIGHTS[name], pretrained=pretrained, **kwargs)
    except Exception as exc:  # hub, network and file errors all mean the same to the user
        if not pretrained:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(
            f"pretrained weights {TIMM_WEIGHTS[name]} could not be loaded for {name} "
            f"({type(exc).__name__}{': ' + text if text else ''}); set pretrained false or place "
            f"them in the {_CACHE}"
        ) from None


class TimmResNetFeaturizer(FrozenBatchNormMixin):
    """timm ResNet-50 (`resnet50.ram_in1k`) without its head, then dropout (module docstring)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        pretrained: bool = False,
        freeze_bn: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = int(input_shape[0])
        self.network = create("resnet50_augmix", pretrained, num_classes=0)
        adapt_input_channels(self.network, channels)
        self.n_outputs = int(self.network.num_features)
        self.dropout = nn.Dropout(float(dropout))
        self.freeze_bn = bool(freeze_bn)
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.network(x))


class TimmViTFeaturizer(nn.Module):
    """DINOv2 ViT-B/14 or CLIP ViT-B/16 through timm (module docstring)."""

    def __init__(
        self,
        name: str,
        input_shape: Sequence[int],
        pretrained: bool = False,
        dropout: float = 0.0,
        attn_tune: bool = False,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or int(input_shape[0]) != 3:
            raise ConfigError(f"backbone {name} needs RGB images (3, H, W), got {input_shape}")
        _, height, width = (int(s) for s in input_shape)
        self.name = name
        self.network = create(name, pretrained, num_classes=0, img_size=(height, width))
        width_ = int(self.network.num_features)
        self.n_outputs = 5 * width_ if name == "dinov2_vitb14" else width_
        self.dropout = nn.Dropout(float(dropout))
        if attn_tune:
            for param_name, param in self.network.named_parameters():
                param.requires_grad_("attn" in param_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name != "dinov2_vitb14":
            return self.dropout(self.network(x))
        layers = self.network.get_intermediate_layers(x, n=4, return_prefix_tokens=True, norm=True)
        tokens = [prefix[:, 0] for _, prefix in layers] + [layers[-1][0].mean(1)]
        return self.dropout(torch.cat(tokens, dim=1))


def build_timm_backbone(
    name: str, input_shape: Sequence[int], hparams: dict[str, Any]
) -> nn.Module:
    """`resnet50_augmix`, `dinov2_vitb14` or `clip_vitb16` configured by `hparams`."""
    pretrained = bool(hparams.get("pretrained", False))
    if name == "resnet50_augmix":
        return TimmResNetFeaturizer(
            input_shape,
            pretrained,
            bool(hparams.get("freeze_bn", True)),
            float(hparams.get("resnet_dropout", 0.0)),
        )
    return TimmViTFeaturizer(
        name,
        input_shape,
        pretrained,
        float(hparams.get("vit_dropout", 0.0)),
        bool(hparams.get("vit_attn_tune", False)),
    )
