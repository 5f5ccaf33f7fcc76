"""The six Spawrious benchmarks (Lynch et al., 2023) as DomainBed builds them: dog breeds
(bulldog, corgi, dachshund, labrador; 4 classes) photographed on backgrounds (beach, desert,
dirt, jungle, mountain, snow) that correlate spuriously with the breed.

Layout (the Spawrious archive): `<data_dir>/spawrious224/<k>/<background>/<breed>/<image>` with
k in {0, 1} (a DomainBed data dir that is itself the extracted folder works too). Three
environments, DomainBed's order: `Test`, then the two training groups `SC_group_1`,
`SC_group_2`.

- One-to-one (O2O): each breed has its own background in both training groups; group g takes,
  per breed, the first `c_g` images of `<g>/<background>/<breed>` (c = int(0.97 T), int(0.87 T),
  T = 3168) and `T - c_g` images of every breed from the filler background; the test
  environment holds every image of `<g>/<test background>/<breed>` for g = 0, 1.
- Many-to-many (M2M): breed pairs swap two backgrounds between the groups (T images each, from
  folder 0); the test environment pairs them with the other two backgrounds.

Image lists are sorted by file name before the first `c` are taken (DomainBed takes the first
`c` of an unsorted directory listing, which depends on the file system).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from dgalign.data.base import MultipleEnvironmentDataset
from dgalign.data.images import IMAGE_EXTENSIONS, ImageFolderEnvironment
from dgalign.data.transforms import eval_transform, spawrious_train_transform
from dgalign.errors import DataError

BREEDS = ("bulldog", "corgi", "dachshund", "labrador")  # DomainBed's class indices
BACKGROUNDS = ("beach", "desert", "dirt", "jungle", "mountain", "snow")
FOLDER = "spawrious224"
TOTAL = 3168

#: name: (kind, training backgrounds per breed in BREEDS order of DomainBed's lists, test
#: backgrounds, filler background). DomainBed lists breeds as bulldog, dachshund, labrador, corgi.
VARIANTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str | None]] = {
    "SpawriousO2O_easy": (
        "o2o", ("desert", "jungle", "dirt", "snow"), ("dirt", "snow", "desert", "jungle"), "beach"
    ),
    "SpawriousO2O_medium": (
        "o2o",
        ("mountain", "beach", "dirt", "jungle"),
        ("jungle", "dirt", "beach", "snow"),
        "desert",
    ),
    "SpawriousO2O_hard": (
        "o2o",
        ("jungle", "mountain", "snow", "desert"),
        ("mountain", "snow", "desert", "jungle"),
        "beach",
    ),
    "SpawriousM2M_easy": (
        "m2m", ("desert", "mountain", "dirt", "jungle"), ("dirt", "jungle", "mountain", "desert"),
        None,
    ),
    "SpawriousM2M_medium": (
        "m2m", ("beach", "snow", "mountain", "desert"), ("desert", "mountain", "beach", "snow"),
        None,
    ),
    "SpawriousM2M_hard": (
        "m2m", ("dirt", "jungle", "snow", "beach"), ("snow", "beach", "dirt", "jungle"), None
    ),
}  # fmt: skip
LISTED = ("bulldog", "dachshund", "labrador", "corgi")  # the breed order of the lists above

# (folder k, background, breed, limit) for every part of an environment.
Part = tuple[int, str, str, int | None]


def environment_parts(kind: str, group: tuple, test: tuple, filler: str | None, total: int):
    """The parts of the test environment and of the two training groups (module docstring)."""
    g = dict(zip(LISTED, group, strict=True))
    t = dict(zip(LISTED, test, strict=True))
    if kind == "o2o":
        counts = (int(0.97 * total), int(0.87 * total))
        train = [
            [(k, g[b], b, counts[k]) for b in LISTED]
            + [(k, filler, b, total - counts[k]) for b in LISTED]
            for k in (0, 1)
        ]
        test_parts = [(k, t[b], b, None) for k in (0, 1) for b in LISTED]
        return test_parts, train
    swap = {
        "bulldog": "dachshund",
        "dachshund": "bulldog",
        "labrador": "corgi",
        "corgi": "labrador",
    }
    train = [
        [(0, g[b], b, total) for b in LISTED],
        [(0, g[swap[b]], b, total) for b in LISTED],
    ]
    test_parts = [(0, t[b], b, None) for b in LISTED] + [(0, t[swap[b]], b, None) for b in LISTED]
    return test_parts, train


def spawrious_root(data_dir: Path) -> Path:
    """`<data_dir>/spawrious224`, or `data_dir` itself when it holds the `0/` folder."""
    nested = Path(data_dir) / FOLDER
    if nested.is_dir() or not (Path(data_dir) / "0").is_dir():
        return nested
    return Path(data_dir)


class SpawriousBenchmark(MultipleEnvironmentDataset):
    """One Spawrious variant (`VARIANT`, a key of `VARIANTS`); see the module docstring."""

    VARIANT: ClassVar[str] = ""
    ENVIRONMENTS = ("Test", "SC_group_1", "SC_group_2")
    IMAGE_SIZE: ClassVar[int] = 224
    TOTAL: ClassVar[int] = TOTAL
    input_shape: tuple[int, ...] = (3, 224, 224)
    num_classes = len(BREEDS)

    def __init__(self, root: Any = None, test_envs: Any = None, hparams: Any = None) -> None:
        from dgalign.data.sources import resolve_data_dir

        super().__init__()
        folder = spawrious_root(resolve_data_dir(root))
        fix = (
            f"place the Spawrious images at {folder} as <0|1>/<background>/<breed>/<image> "
            "(the spawrious224 archive of the Spawrious authors)"
        )
        if not folder.is_dir():
            raise DataError(f"{self.VARIANT} not found: no folder {folder}; {fix}")
        kind, group, test, filler = VARIANTS[self.VARIANT]
        test_parts, train_parts = environment_parts(kind, group, test, filler, self.TOTAL)
        size = int(self.IMAGE_SIZE)
        evaluation, augment = eval_transform(size), spawrious_train_transform(size)
        for parts in (test_parts, *train_parts):
            samples: list[tuple[str, int]] = []
            for k, background, breed, limit in parts:
                rel = Path(str(k)) / background / breed
                if not (folder / rel).is_dir():
                    raise DataError(f"{self.VARIANT}: {folder / rel} is missing; {fix}")
                files = sorted(
                    f for f in os.listdir(folder / rel) if f.lower().endswith(IMAGE_EXTENSIONS)
                )
                label = BREEDS.index(breed)
                samples += [(str(rel / f), label) for f in files[:limit]]
            self.datasets.append(
                ImageFolderEnvironment(folder, samples, BREEDS, evaluation, augment)
            )
        self.root = folder
        self.input_shape = (3, size, size)


def _variant(name: str) -> type[SpawriousBenchmark]:
    doc = f"Spawrious {name.removeprefix('Spawrious').replace('_', ' ')}: see the module docstring."
    return type(name, (SpawriousBenchmark,), {"VARIANT": name, "__doc__": doc})


SpawriousO2O_easy = _variant("SpawriousO2O_easy")
SpawriousO2O_medium = _variant("SpawriousO2O_medium")
SpawriousO2O_hard = _variant("SpawriousO2O_hard")
SpawriousM2M_easy = _variant("SpawriousM2M_easy")
SpawriousM2M_medium = _variant("SpawriousM2M_medium")
SpawriousM2M_hard = _variant("SpawriousM2M_hard")

SPAWRIOUS_DATASETS: dict[str, type[SpawriousBenchmark]] = {
    cls.__name__: cls
    for cls in (
        SpawriousO2O_easy,
        SpawriousO2O_medium,
        SpawriousO2O_hard,
        SpawriousM2M_easy,
        SpawriousM2M_medium,
        SpawriousM2M_hard,
    )
}


def write_fake_spawrious(data_dir: str | Path, images_per_folder: int = 3, size: int = 16) -> Path:
    """A tiny synthetic copy of the Spawrious layout (every k / background / breed folder),
    for tests; returns the `spawrious224` folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = Path(data_dir) / FOLDER
    for k in (0, 1):
        for bg_i, background in enumerate(BACKGROUNDS):
            for br_i, breed in enumerate(BREEDS):
                folder = root / str(k) / background / breed
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(images_per_folder):
                    base = np.array([30 * bg_i, 50 * br_i, 120], dtype=np.int16)
                    pixels = np.clip(base + rng.integers(-20, 20, (size, size, 3)), 0, 255)
                    Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root
