"""The on-disk format of extracted features: `features.npz` + a `features.json` sidecar.

    DIR/features.npz   NumPy archive (no pickles), row i = sample i of the dataset table:
                       features   float32 [N, D]
                       label      int64   [N]    target class
                       attribute  int64   [N]    spurious attribute
                       environment int64  [N]    environment (the attribute, except cmnist)
                       split      int8    [N]    0 train, 1 val, 2 test
    DIR/features.json  {"format": "dgalign-probe-features", "version": 1,
                        "dataset": {name, target, spurious, num_classes, num_attributes,
                                    num_environments, rows, modality, root, ...},
                        "extractor": {backbone, library, model, weights, preprocess, ...},
                        "dim": D, "splits": {"train": n, "val": n, "test": n},
                        "groups": "group = label * num_attributes + attribute",
                        "created": ISO date, "dgalign_version": ...}
Both files are written atomically, the archive first, so a folder with a sidecar always holds
complete features. Extraction in progress keeps its finished shards in DIR/partial/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dgalign.errors import DataError
from dgalign.utils.io import atomic_open, atomic_write_json

FORMAT = "dgalign-probe-features"
VERSION = 1
ARCHIVE = "features.npz"
SIDECAR = "features.json"
ARRAYS = {
    "features": np.float32,
    "label": np.int64,
    "attribute": np.int64,
    "environment": np.int64,
    "split": np.int8,
}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass
class FeatureSet:
    """Features and per-sample labels of one extraction, with its sidecar `meta`."""

    features: np.ndarray
    label: np.ndarray
    attribute: np.ndarray
    environment: np.ndarray
    split: np.ndarray
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.meta["dataset"]["num_classes"])

    @property
    def num_attributes(self) -> int:
        return int(self.meta["dataset"]["num_attributes"])

    @property
    def num_environments(self) -> int:
        return int(self.meta["dataset"]["num_environments"])

    @property
    def group(self) -> np.ndarray:
        return self.label * self.num_attributes + self.attribute

    def rows(self, split: str) -> np.ndarray:
        """Row indices of split `split` (train, val or test)."""
        return np.flatnonzero(self.split == SPLIT_CODES[split])


def save_features(
    directory: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> None:
    """Write the archive, then the sidecar (both atomically)."""
    directory = Path(directory)
    with atomic_open(directory / ARCHIVE, "wb") as handle:
        np.savez(handle, **{k: np.asarray(arrays[k], dtype=t) for k, t in ARRAYS.items()})
    atomic_write_json(directory / SIDECAR, meta)


def read_sidecar(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / SIDECAR
    if not path.is_file():
        raise DataError(
            f"{path} not found: {directory} holds no extracted features; run "
            "`dgalign probe extract` first (or check --features)"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}); extract again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} sidecar")
    if meta.get("version") != VERSION:
        raise DataError(f"{path} has format version {meta.get('version')}, this dgalign reads 1")
    return meta


def load_features(directory: str | Path) -> FeatureSet:
    """The feature set in `directory`, checked for shapes, dtypes and label ranges."""
    meta = read_sidecar(directory)
    path = Path(directory) / ARCHIVE
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in ARRAYS}
    except FileNotFoundError:
        raise DataError(f"{path} is missing next to its sidecar; extract again") from None
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(
            f"{path} is not a complete feature archive ({exc}); extract again"
        ) from None
    n = len(arrays["label"])
    feats = arrays["features"]
    if feats.ndim != 2 or feats.shape[0] != n or any(len(arrays[k]) != n for k in ARRAYS):
        raise DataError(f"{path}: arrays of different lengths; extract again")
    if feats.shape[1] != meta.get("dim"):
        raise DataError(
            f"{path}: {feats.shape[1]} features per row, the sidecar says {meta['dim']}"
        )
    fs = FeatureSet(
        feats, arrays["label"], arrays["attribute"], arrays["environment"], arrays["split"], meta
    )
    if fs.label.min() < 0 or fs.label.max() >= fs.num_classes:
        raise DataError(f"{path}: labels outside [0, {fs.num_classes})")
    if fs.attribute.min() < 0 or fs.attribute.max() >= fs.num_attributes:
        raise DataError(f"{path}: attributes outside [0, {fs.num_attributes})")
    if fs.environment.min() < 0 or fs.environment.max() >= fs.num_environments:
        raise DataError(f"{path}: environments outside [0, {fs.num_environments})")
    if not np.isfinite(feats).all():
        raise DataError(f"{path}: features hold NaN or infinite values; check the extractor")
    return fs
