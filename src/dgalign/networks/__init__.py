"""Featurizers and classifier heads."""

from dgalign.networks.featurizers import (
    BACKBONES,
    MLP,
    MNISTCNN,
    build_featurizer,
    register_backbone,
)
from dgalign.networks.heads import build_classifier

__all__ = [
    "BACKBONES",
    "MLP",
    "MNISTCNN",
    "build_classifier",
    "build_featurizer",
    "register_backbone",
]
