"""Frozen feature extractors for linear probing, each with a stable identity.

    clip-vit-b16  timm's `vit_base_patch16_clip_384.laion2b_ft_in1k` without its head
                  (768 features, timm's own eval preprocessing: 384 x 384, its mean and std);
                  `pip install dgalign[timm]`. Weights: the Hugging Face hub cache, or
                  `--weights FILE` (a state dict file, .safetensors or .bin).
    bert          `transformers`' BertModel (`--weights`: a model name in the hub cache or a
                  folder written by `save_pretrained`, e.g. an ERM fine-tuned
                  BertForSequenceClassification; default bert-base-uncased); the features are
                  its pooled [CLS] output (768), the input of the sequence classifier;
                  `pip install dgalign[text]`.
    tiny-random   a small randomly initialised network (seeded; images resized to 32 x 32, or
                  token ids hashed into a 512-row embedding bag): 16 features, for tests and
                  smoke runs only.
    pixels        the input vector itself (the raw-pixel Colored MNIST case).
When weights are neither in the cache nor downloadable, a one-line DataError says where to
put them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dgalign.errors import ConfigError, DataError

CLIP_VIT_B16 = "vit_base_patch16_clip_384.laion2b_ft_in1k"
BERT_DEFAULT = "bert-base-uncased"
BACKBONES = ("clip-vit-b16", "bert", "tiny-random", "pixels")
MODALITIES = {
    "clip-vit-b16": ("image",),
    "bert": ("text",),
    "tiny-random": ("image", "text"),
    "pixels": ("vector",),
}
HF_CACHE_HINT = "the Hugging Face hub cache ($HF_HOME/hub, by default ~/.cache/huggingface/hub)"


@dataclass
class Extractor:
    """`prepare` turns one raw item into model inputs (a tensor or a dict of tensors, batched
    by the DataLoader's default collate); `model` maps a batch to [n, dim] features."""

    identity: dict[str, Any]
    prepare: Callable[[Any], Any]
    model: nn.Module
    dim: int


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "unknown"


class _Pooled(nn.Module):
    """BERT's pooled output for a dict batch of input_ids, input_mask, segment_ids."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.bert(
            input_ids=batch["input_ids"],
            attention_mask=batch["input_mask"],
            token_type_ids=batch["segment_ids"],
        )
        return out.pooler_output


def clip_vit_b16(weights: str | None) -> Extractor:
    try:
        import timm
        from timm.data import create_transform, resolve_data_config
    except ImportError:
        raise ConfigError("backbone clip-vit-b16 needs timm: pip install dgalign[timm]") from None
    kwargs: dict[str, Any] = {"num_classes": 0}
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(
                f"--weights {path} is not a file (a timm state dict for {CLIP_VIT_B16})"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        model = timm.create_model(CLIP_VIT_B16, pretrained=True, **kwargs)
    except Exception as exc:  # hub, network and file errors all mean the same to the user
        raise DataError(
            f"weights of {CLIP_VIT_B16} could not be loaded ({_reason(exc)}); place them in "
            f"{HF_CACHE_HINT} or pass --weights FILE"
        ) from None
    config = resolve_data_config({}, model=model)
    transform = create_transform(**config)
    identity = {
        "backbone": "clip-vit-b16",
        "library": f"timm {_version('timm')}",
        "model": CLIP_VIT_B16,
        "weights": "hub" if weights is None else f"sha256:{_file_digest(Path(weights))}",
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
    }
    return Extractor(identity, transform, model, int(model.num_features))


def bert(weights: str | None) -> Extractor:
    try:
        from transformers import BertModel
    except ImportError:
        raise ConfigError("backbone bert needs transformers: pip install dgalign[text]") from None
    source = weights or BERT_DEFAULT
    local = Path(source).expanduser().is_dir()
    try:
        model = BertModel.from_pretrained(source, add_pooling_layer=True)
    except Exception as exc:
        where = f"the folder {source}" if local else HF_CACHE_HINT
        raise DataError(
            f"BERT weights {source!r} could not be loaded from {where} ({_reason(exc)}); place "
            "them there or pass --weights DIR (a save_pretrained folder)"
        ) from None

    def prepare(item: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, dtype=torch.long) for k, v in item.items()}

    identity = {
        "backbone": "bert",
        "library": f"transformers {_version('transformers')}",
        "model": source if not local else str(Path(source).resolve()),
        "features": "pooler_output",
    }
    return Extractor(identity, prepare, _Pooled(model), int(model.config.hidden_size))


class _TinyImage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _TinyText(nn.Module):
    VOCAB = 512

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(self.VOCAB, 16, mode="sum")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean embedding of the tokens the mask keeps."""
        mask = batch["input_mask"].to(torch.float32)
        weights = mask / mask.sum(1, keepdim=True).clamp_min(1)
        return self.embed(batch["input_ids"] % self.VOCAB, per_sample_weights=weights)


def tiny_random(modality: str, seed: int = 0) -> Extractor:
    torch.manual_seed(seed)
    if modality == "image":
        from PIL import Image

        def prepare(image: Image.Image) -> torch.Tensor:
            small = image.convert("RGB").resize((32, 32))
            return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)

        model: nn.Module = _TinyImage()
    else:

        def prepare(item: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:  # type: ignore[misc]
            return {k: torch.as_tensor(v, dtype=torch.long) for k, v in item.items()}

        model = _TinyText()
    identity = {"backbone": "tiny-random", "modality": modality, "seed": seed}
    return Extractor(identity, prepare, model, 16)


def pixels(dim: int) -> Extractor:
    identity = {"backbone": "pixels", "dim": dim}
    return Extractor(
        identity, lambda v: torch.as_tensor(v, dtype=torch.float32), nn.Identity(), dim
    )


def build_extractor(
    name: str, modality: str, weights: str | None = None, dim: int | None = None
) -> Extractor:
    """The extractor `name` for inputs of `modality`, in eval mode; ConfigError if they do not
    fit together."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if modality not in MODALITIES[name]:
        raise ConfigError(
            f"backbone {name} reads {' or '.join(MODALITIES[name])} inputs, but this dataset "
            f"holds {modality} inputs"
        )
    if weights is not None and name in ("tiny-random", "pixels"):
        raise ConfigError(f"backbone {name} has no weights to load; drop --weights")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if name == "clip-vit-b16":
        extractor = clip_vit_b16(weights)
    elif name == "bert":
        extractor = bert(weights)
    elif name == "tiny-random":
        extractor = tiny_random(modality)
    else:
        if dim is None:
            raise ConfigError("backbone pixels needs vector inputs of a known width")
        extractor = pixels(dim)
    extractor.model.eval()
    return extractor
