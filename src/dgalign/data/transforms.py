"""DomainBed's image transforms (torchvision): evaluation and training augmentation.

Evaluation: resize to `size` x `size`, to a tensor, ImageNet normalisation. Training (the
in-splits of training environments when `data_augmentation` is on): random resized crop
(scale 0.7-1), horizontal flip, colour jitter 0.3, random grayscale 0.1, tensor, normalisation.
Every random choice these transforms make comes from torch's global generator, which the
loaders seed per sample (see `dgalign.data.splits`), so augmented batches are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[Any], Any]


def _torchvision_transforms() -> Any:
    from torchvision import transforms  # imported here: `import dgalign.data` stays light

    return transforms


def eval_transform(size: int = 224) -> Transform:
    """Resize((size, size)) -> ToTensor -> ImageNet Normalize."""
    t = _torchvision_transforms()
    return t.Compose(
        [t.Resize((size, size)), t.ToTensor(), t.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def train_transform(size: int = 224, resize_first: bool = False) -> Transform:
    """DomainBed's augmentation; `resize_first` adds its Resize((size, size)) in front (as
    DomainBed does for the WILDS datasets)."""
    t = _torchvision_transforms()
    steps: list[Transform] = [t.Resize((size, size))] if resize_first else []
    steps += [
        t.RandomResizedCrop(size, scale=(0.7, 1.0)),
        t.RandomHorizontalFlip(),
        t.ColorJitter(0.3, 0.3, 0.3, 0.3),
        t.RandomGrayscale(p=0.1),
        t.ToTensor(),
        t.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    return t.Compose(steps)


def spawrious_train_transform(size: int = 224) -> Transform:
    """DomainBed's Spawrious augmentation: Resize((size, size)), horizontal flip, colour jitter
    0.3, random grayscale 0.1, tensor, normalisation (no random crop)."""
    t = _torchvision_transforms()
    return t.Compose(
        [
            t.Resize((size, size)),
            t.RandomHorizontalFlip(),
            t.ColorJitter(0.3, 0.3, 0.3, 0.3),
            t.RandomGrayscale(p=0.1),
            t.ToTensor(),
            t.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
