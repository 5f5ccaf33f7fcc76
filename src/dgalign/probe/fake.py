"""Small synthetic copies of the probing datasets in their exact on-disk layouts, for tests,
demos and smoke runs. Images are small JPEGs whose colour depends on (label, attribute), so
features of even a random network carry both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dgalign.probe.datasets import MNLI_CACHED, WATERBIRDS_DIR

CELEBA_ATTRIBUTES = ("5_o_Clock_Shadow", "Blond_Hair", "Male", "Smiling")


class InputFeatures:
    """The fields of a GLUE InputFeatures entry (pytorch-transformers' names)."""

    def __init__(
        self, input_ids: list[int], input_mask: list[int], segment_ids: list[int], label_id: int
    ) -> None:
        self.input_ids = input_ids
        self.input_mask = input_mask
        self.segment_ids = segment_ids
        self.label_id = label_id


def _table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, attributes and splits of n rows: every (label, attribute, split) present."""
    rng = np.random.default_rng(seed)
    cells = [(y, a, s) for s in (0, 1, 2) for y in (0, 1) for a in (0, 1)]
    rows = [cells[i % len(cells)] for i in range(n)]
    rows = [rows[i] for i in rng.permutation(n)]
    return tuple(np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))  # type: ignore[return-value]


def _image(y: int, a: int, rng: np.random.Generator, size: int = 24) -> Image.Image:
    base = np.array([60 + 120 * y, 60 + 120 * a, 100], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-30, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def write_fake_waterbirds(root: str | Path, n: int = 48, seed: int = 0) -> Path:
    folder = Path(root) / WATERBIRDS_DIR
    rng = np.random.default_rng(seed)
    y, a, s = _table(n, seed)
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for i in range(n):
        rel = f"{i % 3:03d}.Species_{y[i]}/bird_{i:04d}.jpg"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        _image(int(y[i]), int(a[i]), rng).save(folder / rel)
        lines.append(f"{i + 1},{rel},{y[i]},{s[i]},{a[i]},/x/place_{i}.jpg")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_fake_celeba(root: str | Path, n: int = 48, seed: int = 0) -> Path:
    folder = Path(root) / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, a, s = _table(n, seed)
    attrs = [str(n), " ".join(CELEBA_ATTRIBUTES)]
    parts = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        _image(int(y[i]), int(a[i]), rng).save(folder / "img_align_celeba" / name)
        values = [int(rng.integers(0, 2)), int(y[i]), int(a[i]), int(rng.integers(0, 2))]
        attrs.append(f"{name} " + " ".join(f"{2 * v - 1:2d}" for v in values))
        parts.append(f"{name} {s[i]}")
    (folder / "list_attr_celeba.txt").write_text("\n".join(attrs) + "\n")
    (folder / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return folder


def write_fake_multinli(root: str | Path, n: int = 60, seed: int = 0, length: int = 12) -> Path:
    """metadata_random.csv in root/data and the three cached files in root/glue_data/MNLI,
    whose lengths split the n rows roughly 3 : 1 : 1 (as train, dev, dev-mm)."""
    folder = Path(root)
    rng = np.random.default_rng(seed)
    y, a, s = _table(n, seed)
    y = (y + rng.integers(0, 2, n) * (1 - y)) % 3  # three classes
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rows = ["index,gold_label,sentence2_has_negation,split"]
    rows += [f"{i},{y[i]},{a[i]},{s[i]}" for i in range(n)]
    (folder / "data" / "metadata_random.csv").write_text("\n".join(rows) + "\n")
    features = []
    for i in range(n):
        used = int(rng.integers(3, length + 1))
        ids = [101, *(int(t) for t in rng.integers(1000, 3000, used - 2)), 102]
        ids[1] = 2053 if a[i] else ids[1]  # "not" in sentence 2 stands in for negation
        pad = length - used
        features.append(
            InputFeatures(ids + [0] * pad, [1] * used + [0] * pad, [0] * length, int(y[i]))
        )
    glue = folder / "glue_data" / "MNLI"
    glue.mkdir(parents=True, exist_ok=True)
    cuts = [0, 3 * n // 5, 4 * n // 5, n]
    for name, lo, hi in zip(MNLI_CACHED, cuts[:-1], cuts[1:], strict=True):
        torch.save(features[lo:hi], glue / name)
    return folder


WRITERS = {
    "waterbirds": write_fake_waterbirds,
    "celeba": write_fake_celeba,
    "multinli": write_fake_multinli,
}
