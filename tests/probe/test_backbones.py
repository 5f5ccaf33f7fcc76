"""Frozen extractors: the tiny random network and the identity, and the one-line errors of the
timm and transformers backbones when their package or weights are missing."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from dgalign.errors import ConfigError, DataError
from dgalign.probe.backbones import CLIP_VIT_B16, build_extractor


def test_tiny_random_is_seeded_and_reads_images_and_tokens():
    image = Image.fromarray(np.full((20, 30, 3), 120, dtype=np.uint8))
    a, b = build_extractor("tiny-random", "image"), build_extractor("tiny-random", "image")
    assert a.identity == b.identity == {"backbone": "tiny-random", "modality": "image", "seed": 0}
    x = a.prepare(image)
    assert x.shape == (3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.model(x[None]), b.model(x[None]))
        assert a.model(x[None]).shape == (1, a.dim)
    text = build_extractor("tiny-random", "text")
    item = {
        "input_ids": np.array([101, 5, 9, 0]),
        "input_mask": np.array([1, 1, 1, 0]),
        "segment_ids": np.zeros(4, dtype=np.int64),
    }
    batch = {k: v[None] for k, v in text.prepare(item).items()}
    padded = dict(batch, input_ids=torch.tensor([[101, 5, 9, 77]]))
    with torch.no_grad():
        torch.testing.assert_close(text.model(batch), text.model(padded))  # masked token ignored


def test_pixels_is_the_identity_and_modalities_are_checked():
    ext = build_extractor("pixels", "vector", dim=6)
    v = np.arange(6, dtype=np.float32)
    assert torch.equal(ext.model(ext.prepare(v)[None])[0], torch.from_numpy(v))
    with pytest.raises(ConfigError, match="reads vector inputs, but this dataset holds image"):
        build_extractor("pixels", "image")
    with pytest.raises(ConfigError, match="no weights"):
        build_extractor("tiny-random", "image", weights="w.bin")
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_extractor("resnet", "image")


def test_clip_needs_timm_and_names_where_weights_go(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError, match=r"pip install dgalign\[timm\]"):
        build_extractor("clip-vit-b16", "image")

    def create_model(name, pretrained, **kwargs):
        assert name == CLIP_VIT_B16 and pretrained
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore lines")

    timm = types.ModuleType("timm")
    timm.create_model = create_model
    data = types.ModuleType("timm.data")
    data.create_transform = data.resolve_data_config = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.setitem(sys.modules, "timm.data", data)
    with pytest.raises(DataError, match="Hugging Face hub cache") as info:
        build_extractor("clip-vit-b16", "image")
    assert "\n" not in str(info.value) and "--weights FILE" in str(info.value)
    with pytest.raises(DataError, match="is not a file"):
        build_extractor("clip-vit-b16", "image", weights=str(tmp_path / "missing.safetensors"))


def test_bert_needs_transformers_and_names_where_weights_go(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"pip install dgalign\[text\]"):
        build_extractor("bert", "text")

    class BertModel:
        @staticmethod
        def from_pretrained(source, **kwargs):
            raise OSError(f"Can't load {source}")

    fake = types.ModuleType("transformers")
    fake.BertModel = BertModel
    monkeypatch.setitem(sys.modules, "transformers", fake)
    with pytest.raises(DataError, match=r"bert-base-uncased.*Hugging Face hub cache"):
        build_extractor("bert", "text")
    with pytest.raises(DataError, match=f"the folder {tmp_path}"):
        build_extractor("bert", "text", weights=str(tmp_path))
