"""DomainBed's Debug224, SVIRO and the six Spawrious benchmarks on fake copies of their layouts."""

import pytest
import torch

from dgalign.data import DATASETS, Debug224
from dgalign.data.fetch_images import fetch_image_dataset
from dgalign.data.images import FAKE_CLASSES, SVIRO, write_fake_dataset
from dgalign.data.manifest import MANIFEST
from dgalign.data.spawrious import BREEDS, SPAWRIOUS_DATASETS, write_fake_spawrious
from dgalign.errors import DataError


def test_debug28_means_domainbeds_and_spurious28_is_ours():
    from dgalign.data import Debug28, Spurious28

    noise, ours = Debug28(), Spurious28()
    assert [len(e) for e in noise.datasets] == [16, 16, 16] and noise.input_shape == (3, 28, 28)
    assert [len(e) for e in ours.datasets] == [64, 64, 64]
    assert DATASETS["Debug28"] is Debug28 and DATASETS["Spurious28"] is Spurious28
    assert DATASETS["Debug28"].ENVIRONMENTS == ("0", "1", "2")  # old Debug28 reports still read


def test_debug224_is_domainbeds_noise():
    a, b = Debug224(), Debug224()
    assert len(a) == 3 and a.input_shape == (3, 224, 224) and a.num_classes == 2
    assert all(len(env) == 16 for env in a.datasets)
    assert torch.equal(a[1].x, b[1].x)  # fixed seed: the same data in every run


class SmallSVIRO(SVIRO):
    IMAGE_SIZE = 16


def test_sviro_layout(tmp_path):
    write_fake_dataset("SVIRO", tmp_path, images_per_class=2, image_size=(20, 20))
    data = SmallSVIRO(tmp_path)
    assert list(DATASETS["SVIRO"].ENVIRONMENTS)[:3] == ["aclass", "escape", "hilux"]
    assert len(data) == 10 and data.classes == list(FAKE_CLASSES[:2]) and data.num_classes == 2
    x, y = data[3][1]
    assert x.shape == (3, 16, 16) and y in (0, 1)
    with pytest.raises(DataError, match="no download source") as info:
        fetch_image_dataset(MANIFEST["SVIRO"], tmp_path / "none")
    assert "\n" not in str(info.value)


def _small(name):
    return type(name, (SPAWRIOUS_DATASETS[name],), {"IMAGE_SIZE": 16, "TOTAL": 10})


@pytest.mark.parametrize("name", sorted(SPAWRIOUS_DATASETS))
def test_spawrious_environments(name, tmp_path):
    """Per-breed limits c = int(0.97 T), int(0.87 T) plus T - c filler images per breed (O2O),
    T per breed (M2M); the test environment holds every image of its 8 parts."""
    write_fake_spawrious(tmp_path, images_per_folder=12)
    data = _small(name)(tmp_path)
    assert DATASETS[name].ENVIRONMENTS == ("Test", "SC_group_1", "SC_group_2")
    assert data.num_classes == 4 and len(data) == 3
    assert [len(env) for env in data.datasets] == [96, 40, 40]
    for env in data.datasets:
        for i in range(0, len(env), 7):
            assert BREEDS[int(env.targets[i])] in str(env.path(i))
    x, _ = data[1].get(0, augment=True)
    assert x.shape == (3, 16, 16)


def test_o2o_easy_backgrounds(tmp_path):
    write_fake_spawrious(tmp_path, images_per_folder=12)
    data = _small("SpawriousO2O_easy")(tmp_path)
    paths = [str(data[1].path(i).relative_to(data.root)) for i in range(len(data[1]))]
    bulldogs = [p for p in paths if p.endswith(tuple(f"{i:04d}.png" for i in range(12)))]
    assert sum(p.startswith("0/desert/bulldog/") for p in bulldogs) == 9  # int(0.97 * 10)
    assert sum(p.startswith("0/beach/bulldog/") for p in bulldogs) == 1  # the filler
    second = [str(data[2].path(i).relative_to(data.root)) for i in range(len(data[2]))]
    assert sum(p.startswith("1/desert/bulldog/") for p in second) == 8  # int(0.87 * 10)
    test = {str(data[0].path(i).relative_to(data.root)).rsplit("/", 1)[0] for i in range(96)}
    assert "0/dirt/bulldog" in test and "1/dirt/bulldog" in test


def test_missing_spawrious_says_where(tmp_path):
    with pytest.raises(DataError, match="spawrious224"):
        SPAWRIOUS_DATASETS["SpawriousM2M_hard"](tmp_path)
