"""Datasets as lists of environments, their splits and loaders.

`DATASETS` is the registry of dataset classes (`register_dataset` adds one);
`get_dataset_class(name)` validates a name and `build_dataset(name, data_dir)` constructs one.
"""

from __future__ import annotations

from pathlib import Path

from dgalign.data.base import MultipleEnvironmentDataset, TensorEnvironment
from dgalign.data.debug import Debug28, Debug224, Spurious28
from dgalign.data.images import PACS, SVIRO, VLCS, DomainNet, OfficeHome, TerraIncognita
from dgalign.data.mnist import ColoredMNIST, RotatedMNIST
from dgalign.data.spawrious import SPAWRIOUS_DATASETS
from dgalign.data.wilds_datasets import WILDSCamelyon, WILDSFMoW
from dgalign.utils.registry import Registry


def _check(cls: object) -> list[str]:
    if not isinstance(cls, type):
        return ["is not a class"]
    if not getattr(cls, "ENVIRONMENTS", None):
        return ["has no ENVIRONMENTS (the names of its domains)"]
    return []


DATASETS: Registry[type[MultipleEnvironmentDataset]] = Registry(
    "dataset",
    check=_check,
    describe=lambda cls: (cls.__doc__ or "").strip(),
    fix="subclass dgalign.data.MultipleEnvironmentDataset (ENVIRONMENTS, input_shape, "
    "num_classes, __init__(data_dir))",
)
for _name, _cls in {
    "Debug28": Debug28,
    "Spurious28": Spurious28,
    "ColoredMNIST": ColoredMNIST,
    "RotatedMNIST": RotatedMNIST,
    "VLCS": VLCS,
    "PACS": PACS,
    "OfficeHome": OfficeHome,
    "TerraIncognita": TerraIncognita,
    "DomainNet": DomainNet,
    "WILDSCamelyon": WILDSCamelyon,
    "WILDSFMoW": WILDSFMoW,
    "Debug224": Debug224,
    "SVIRO": SVIRO,
    **SPAWRIOUS_DATASETS,
}.items():
    DATASETS.register(_cls, name=_name)


def register_dataset(cls=None, *, name: str | None = None):
    """Class decorator (or call): make dataset `cls` available as `name` (default: its class
    name) to `dgalign train --dataset`, sweeps and reports; contract checked."""
    return DATASETS.register(cls, name=name)


def get_dataset_class(name: str) -> type[MultipleEnvironmentDataset]:
    """The dataset class registered as `name`; ConfigError listing valid names otherwise."""
    return DATASETS.get(name)


def build_dataset(name: str, data_dir: str | Path | None) -> MultipleEnvironmentDataset:
    """Construct dataset `name`, reading files from `data_dir` (or the default data dir)."""
    return get_dataset_class(name)(data_dir)


__all__ = [
    "DATASETS",
    "PACS",
    "SVIRO",
    "VLCS",
    "ColoredMNIST",
    "Debug28",
    "Debug224",
    "DomainNet",
    "MultipleEnvironmentDataset",
    "OfficeHome",
    "RotatedMNIST",
    "TensorEnvironment",
    "TerraIncognita",
    "WILDSCamelyon",
    "WILDSFMoW",
    "build_dataset",
    "get_dataset_class",
    "register_dataset",
]
