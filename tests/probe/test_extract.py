"""Feature extraction on fake layouts with the tiny random backbone: the on-disk format, the
sidecar's identity, resuming after an interruption, and refusing a mixed folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dgalign.errors import DataError, RunDirError
from dgalign.probe.backbones import build_extractor
from dgalign.probe.datasets import multinli, waterbirds
from dgalign.probe.extract import PARTIAL, extract_features
from dgalign.probe.fake import write_fake_multinli, write_fake_waterbirds
from dgalign.probe.features import ARCHIVE, SIDECAR, load_features, read_sidecar


def test_waterbirds_features_match_a_direct_forward_pass(tmp_path):
    write_fake_waterbirds(tmp_path / "data", n=30)
    ds = waterbirds(tmp_path / "data")
    ext = build_extractor("tiny-random", "image")
    out = extract_features(ds, ext, tmp_path / "f", batch_size=4, shard_rows=7, progress=False)
    fs = load_features(out)
    assert fs.features.shape == (30, 16) and fs.features.dtype == np.float32
    np.testing.assert_array_equal(fs.label, ds.labels)
    np.testing.assert_array_equal(fs.attribute, ds.attributes)
    np.testing.assert_array_equal(fs.split, ds.splits)
    with torch.no_grad():
        direct = ext.model(torch.stack([ext.prepare(ds.load(i)) for i in (0, 29)]))
    np.testing.assert_allclose(fs.features[[0, 29]], direct.numpy(), rtol=1e-5, atol=1e-6)
    meta = read_sidecar(out)
    assert meta["extractor"] == ext.identity and meta["dataset"]["name"] == "waterbirds"
    assert meta["splits"] == {
        k: int((ds.splits == i).sum()) for i, k in enumerate(("train", "val", "test"))
    }
    assert not (out / PARTIAL).exists()


def test_interrupted_extraction_resumes_at_the_next_shard(tmp_path, monkeypatch):
    write_fake_multinli(tmp_path / "data", n=25)
    ds = multinli(tmp_path / "data")
    clean = extract_features(
        ds,
        build_extractor("tiny-random", "text"),
        tmp_path / "clean",
        batch_size=3,
        shard_rows=10,
        progress=False,
    )
    ext = build_extractor("tiny-random", "text")
    forward, calls = ext.model.forward, []

    def failing(batch):
        calls.append(len(batch["input_ids"]))
        if len(calls) == 6:  # inside the second shard (shards of 10 rows, batches of 3)
            raise KeyboardInterrupt
        return forward(batch)

    monkeypatch.setattr(ext.model, "forward", failing)
    with pytest.raises(KeyboardInterrupt):
        extract_features(ds, ext, tmp_path / "f", batch_size=3, shard_rows=10, progress=False)
    shards = sorted((tmp_path / "f" / PARTIAL).glob("rows-*.npy"))
    assert [s.name for s in shards] == ["rows-000000000-000000010.npy"]
    assert not (tmp_path / "f" / SIDECAR).exists()
    calls.clear()
    monkeypatch.setattr(ext.model, "forward", lambda batch: (calls.append(1), forward(batch))[1])
    extract_features(ds, ext, tmp_path / "f", batch_size=3, shard_rows=10, progress=False)
    assert len(calls) == 4 + 2  # rows 10-19 and 20-24 only
    np.testing.assert_array_equal(
        load_features(tmp_path / "f").features, load_features(clean).features
    )
    calls.clear()
    extract_features(ds, ext, tmp_path / "f", batch_size=3, shard_rows=10, progress=False)
    assert calls == []  # complete: nothing to do


def test_a_folder_of_other_features_is_refused(tmp_path):
    write_fake_waterbirds(tmp_path / "data", n=12)
    ds = waterbirds(tmp_path / "data")
    extract_features(ds, build_extractor("tiny-random", "image"), tmp_path / "f", progress=False)
    other = build_extractor("tiny-random", "image")
    other.identity = dict(other.identity, seed=1)
    with pytest.raises(RunDirError, match="another extraction"):
        extract_features(ds, other, tmp_path / "f", progress=False)
    (tmp_path / "g" / PARTIAL).mkdir(parents=True)
    (tmp_path / "g" / PARTIAL / "identity.json").write_text(json.dumps({"dataset": {}}))
    with pytest.raises(RunDirError, match="unfinished extraction"):
        extract_features(ds, other, tmp_path / "g", progress=False)


def test_reading_broken_feature_folders_fails_with_one_line(tmp_path):
    with pytest.raises(DataError, match="run `dgalign probe extract` first"):
        load_features(tmp_path)
    write_fake_waterbirds(tmp_path / "data", n=12)
    out = extract_features(
        waterbirds(tmp_path / "data"),
        build_extractor("tiny-random", "image"),
        tmp_path / "f",
        progress=False,
    )
    meta = json.loads((out / SIDECAR).read_text())
    (out / SIDECAR).write_text(json.dumps(dict(meta, version=7)))
    with pytest.raises(DataError, match="format version 7"):
        load_features(out)
    (out / SIDECAR).write_text(json.dumps(meta))
    (out / ARCHIVE).write_bytes(b"not an archive")
    with pytest.raises(DataError, match="not a complete feature archive") as info:
        load_features(out)
    assert "\n" not in str(info.value)
