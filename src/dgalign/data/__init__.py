"""Datasets as lists of environments, their splits and loaders.

`DATASETS` maps names to classes; `get_dataset_class(name)` validates a name and
`build_dataset(name, data_dir)` constructs one.
"""

from __future__ import annotations

from pathlib import Path

from dgalign.data.base import MultipleEnvironmentDataset, TensorEnvironment
from dgalign.data.debug import Debug28, Debug224, Spurious28
from dgalign.data.images import PACS, SVIRO, VLCS, DomainNet, OfficeHome, TerraIncognita
from dgalign.data.mnist import ColoredMNIST, RotatedMNIST
from dgalign.data.spawrious import SPAWRIOUS_DATASETS
from dgalign.data.wilds_datasets import WILDSCamelyon, WILDSFMoW
from dgalign.errors import ConfigError

DATASETS: dict[str, type[MultipleEnvironmentDataset]] = {
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
}


def get_dataset_class(name: str) -> type[MultipleEnvironmentDataset]:
    """The dataset class registered as `name`; ConfigError listing valid names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}") from None


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
]
