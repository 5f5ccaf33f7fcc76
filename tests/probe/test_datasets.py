"""The group-shift dataset readers on tiny fake copies of their on-disk layouts."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dgalign.errors import DataError
from dgalign.probe import datasets
from dgalign.probe.datasets import MNLI_CACHED, celeba, multinli, open_dataset, waterbirds
from dgalign.probe.fake import write_fake_celeba, write_fake_multinli, write_fake_waterbirds


def test_waterbirds_reads_metadata_from_the_folder_or_its_parent(tmp_path):
    folder = write_fake_waterbirds(tmp_path, n=24)
    meta = pd.read_csv(folder / "metadata.csv")
    for root in (tmp_path, folder):
        ds = waterbirds(root)
        assert len(ds) == 24 and ds.modality == "image"
        np.testing.assert_array_equal(ds.labels, meta["y"])
        np.testing.assert_array_equal(ds.attributes, meta["place"])
        np.testing.assert_array_equal(ds.splits, meta["split"])
        np.testing.assert_array_equal(ds.environments, ds.attributes)
    image = ds.load(3)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert ds.identity()["rows"] == 24 and ds.identity()["num_environments"] == 2


def test_waterbirds_errors_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="waterbird_complete95_forest2water2") as info:
        waterbirds(tmp_path)
    assert "\n" not in str(info.value)
    folder = write_fake_waterbirds(tmp_path, n=12)
    next(folder.rglob("*.jpg")).unlink()
    ds = waterbirds(tmp_path)
    with pytest.raises(DataError, match="cannot read image"):
        for i in range(len(ds)):
            ds.load(i)
    frame = pd.read_csv(folder / "metadata.csv")
    frame.loc[0, "split"] = 5
    frame.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(DataError, match="split values"):
        waterbirds(tmp_path)


def test_celeba_maps_plus_minus_one_attributes_and_the_partition(tmp_path):
    folder = write_fake_celeba(tmp_path, n=24)
    lines = (folder / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    blond = [int(r.split()[1 + names.index("Blond_Hair")]) for r in lines[2:]]
    male = [int(r.split()[1 + names.index("Male")]) for r in lines[2:]]
    parts = [
        int(r.split()[1]) for r in (folder / "list_eval_partition.txt").read_text().split("\n") if r
    ]
    ds = celeba(tmp_path)
    np.testing.assert_array_equal(ds.labels, np.array(blond) > 0)
    np.testing.assert_array_equal(ds.attributes, np.array(male) > 0)
    np.testing.assert_array_equal(ds.splits, parts)
    assert ds.load(0).size == (24, 24)
    with pytest.raises(DataError, match="no attribute 'Wavy_Hair'"):
        celeba(tmp_path, target="Wavy_Hair")


def test_celeba_kaggle_csv_layout(tmp_path):
    folder = write_fake_celeba(tmp_path, n=12)
    txt = celeba(tmp_path)
    lines = (folder / "list_attr_celeba.txt").read_text().splitlines()
    rows = [r.split() for r in lines[2:]]
    frame = pd.DataFrame([r[1:] for r in rows], columns=lines[1].split()).astype(int)
    frame.insert(0, "image_id", [r[0] for r in rows])
    frame.to_csv(folder / "list_attr_celeba.csv", index=False)
    (folder / "list_attr_celeba.txt").unlink()
    part = pd.read_csv(folder / "list_eval_partition.txt", sep=" ", names=["image_id", "partition"])
    part.to_csv(folder / "list_eval_partition.csv", index=False)
    (folder / "list_eval_partition.txt").unlink()
    csv = celeba(tmp_path)
    np.testing.assert_array_equal(csv.labels, txt.labels)
    np.testing.assert_array_equal(csv.splits, txt.splits)


def test_multinli_concatenates_the_three_cached_files_in_order(tmp_path):
    write_fake_multinli(tmp_path, n=30, length=10)
    ds = multinli(tmp_path)
    meta = pd.read_csv(tmp_path / "data" / "metadata_random.csv")
    assert len(ds) == 30 and ds.num_classes == 3 and ds.modality == "text"
    np.testing.assert_array_equal(ds.labels, meta["gold_label"])
    np.testing.assert_array_equal(ds.attributes, meta["sentence2_has_negation"])
    cached = [
        torch.load(tmp_path / "glue_data" / "MNLI" / n, weights_only=False) for n in MNLI_CACHED
    ]
    flat = [f for part in cached for f in part]
    for i in (0, 17, 29):
        item = ds.load(i)
        assert item["input_ids"].tolist() == flat[i].input_ids
        assert item["input_mask"].tolist() == flat[i].input_mask


def _write_cached(path, module_name, fields):
    module = types.ModuleType(module_name)

    class InputFeatures:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    InputFeatures.__module__ = module_name
    InputFeatures.__qualname__ = "InputFeatures"
    module.InputFeatures = InputFeatures
    sys.modules[module_name] = module
    try:
        torch.save([InputFeatures(**f) for f in fields], path)
    finally:
        del sys.modules[module_name]


def test_multinli_reads_both_field_namings_without_their_modules(tmp_path):
    """Files pickled by pytorch-transformers (utils_glue) or transformers (attention_mask,
    token_type_ids) load although neither module is importable here."""
    (tmp_path / "metadata_random.csv").write_text(
        "gold_label,sentence2_has_negation,split\n0,1,0\n1,0,1\n2,0,2\n"
    )
    old = {"input_ids": [101, 7, 102], "input_mask": [1, 1, 1], "segment_ids": [0, 0, 0]}
    new = {"input_ids": [101, 8, 102], "attention_mask": [1, 1, 0], "token_type_ids": [0, 1, 1]}
    _write_cached(tmp_path / MNLI_CACHED[0], "utils_glue", [old])
    _write_cached(tmp_path / MNLI_CACHED[1], "transformers_fake_utils", [new])
    _write_cached(tmp_path / MNLI_CACHED[2], "utils_glue", [old])
    ds = multinli(tmp_path)
    assert ds.load(1)["input_mask"].tolist() == [1, 1, 0]
    assert ds.load(1)["segment_ids"].tolist() == [0, 1, 1]


def test_multinli_refuses_foreign_pickles_and_misaligned_metadata(tmp_path):
    write_fake_multinli(tmp_path, n=20)
    glue = tmp_path / "glue_data" / "MNLI"
    with open(glue / MNLI_CACHED[1], "wb") as handle:
        pickle.dump(types.SimpleNamespace(x=1), handle)
    with pytest.raises(DataError, match="not a cached GLUE features file"):
        multinli(tmp_path)
    write_fake_multinli(tmp_path, n=20)
    meta = tmp_path / "data" / "metadata_random.csv"
    meta.write_text("\n".join(meta.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(DataError, match="18 rows but the cached features hold 20"):
        multinli(tmp_path)
    (glue / MNLI_CACHED[2]).unlink()
    with pytest.raises(DataError, match="is missing"):
        multinli(tmp_path)


def test_cmnist_pixels_follow_the_protocol_environments(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60_000, 28, 28), generator=gen, dtype=torch.uint8)
    digits = torch.randint(0, 10, (60_000,), generator=gen)
    from dgalign.experiments import cmnist_data

    monkeypatch.setattr(cmnist_data, "load_mnist_train", lambda data_dir: (images, digits))
    ds = open_dataset("cmnist", None, seed=3)
    assert len(ds) == 60_000 and ds.modality == "vector" and ds.num_environments == 3
    assert np.bincount(ds.splits).tolist() == [40_000, 10_000, 10_000]
    assert (ds.environments[ds.splits == 2] == 2).all()
    assert set(ds.environments[ds.splits < 2]) == {0, 1}
    x = np.stack([ds.load(i) for i in range(100)])
    assert x.shape == (100, 392) and x.min() >= 0 and x.max() <= 1
    red_on = x[:, :196].sum(1) > 0
    np.testing.assert_array_equal(red_on, ds.attributes[:100] == 0)
    for env, agree in ((0, 0.8), (1, 0.9), (2, 0.1)):
        rows = ds.environments == env
        rate = (ds.labels[rows] == ds.attributes[rows]).mean()
        assert abs(rate - agree) < 0.02, (env, rate)


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown probing dataset"):
        open_dataset("imagenet", tmp_path)
    assert datasets.READERS == ("waterbirds", "celeba", "multinli", "cmnist")
