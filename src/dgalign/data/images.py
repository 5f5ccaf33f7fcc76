"""DomainBed's image benchmarks as folders of images: VLCS, PACS, OfficeHome, TerraIncognita
and DomainNet, laid out as `data_dir/<directory>/<environment>/<class>/<image>`.

Environments are the manifest's folders in DomainBed's order (sorted folder names). Images are
listed as torchvision's `ImageFolder` lists them (classes sorted, then each class folder walked
in sorted order, files sorted), so the in/out splits, seeded by (trial seed, env index), pick the
same images as DomainBed's. Class indices follow the sorted union of the class folders of all
environments; with every class present in every environment (the real datasets) that is exactly
DomainBed's per-environment indexing.

Each environment returns `(tensor, label)` with the evaluation transform; `get(i, augment=True)`
applies the training augmentation instead. The loaders decide which (augmentation is used only
for the in-splits of training environments; DomainBed also augments those environments' `out`
splits when it evaluates them, which is a quirk we do not copy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageFile
from torch.utils.data import Dataset

from dgalign.data.base import MultipleEnvironmentDataset
from dgalign.data.manifest import MANIFEST, ImageDatasetSpec
from dgalign.data.transforms import Transform, eval_transform, train_transform
from dgalign.errors import DataError

# As DomainBed: a few images in these datasets are truncated JPEGs; decode what is there.
ImageFile.LOAD_TRUNCATED_IMAGES = True

#: Class folder names of fake copies of datasets whose classes the manifest does not list.
FAKE_CLASSES = ("class_a", "class_b", "class_c")

#: File endings read as images (torchvision's IMG_EXTENSIONS, compared lower-case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def class_folders(env_dir: Path) -> list[str]:
    """The class folder names of one environment folder, sorted."""
    return sorted(entry.name for entry in os.scandir(env_dir) if entry.is_dir())


def scan_images(env_dir: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path relative to `env_dir`, label) of every image, in `ImageFolder`'s order."""
    samples: list[tuple[str, int]] = []
    for name in sorted(class_to_idx):
        class_dir = env_dir / name
        if not class_dir.is_dir():
            continue
        for root, _, files in sorted(os.walk(class_dir, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    rel = os.path.relpath(os.path.join(root, file), env_dir)
                    samples.append((rel, class_to_idx[name]))
    return samples


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """An image file as an RGB PIL image (as torchvision's default loader)."""
    with open(path, "rb") as handle:
        image = Image.open(handle)
        return image.convert("RGB")


class ImageFolderEnvironment(Dataset):
    """One environment: image paths and labels, decoded and transformed on access.

    Paths are kept in a NumPy bytes array (not a list of Python strings) so that DataLoader
    workers forked from the training process do not copy them page by page."""

    def __init__(
        self,
        root: Path,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Transform,
        augment_transform: Transform | None,
    ) -> None:
        self.root = Path(root)
        self.paths = np.array([os.fsencode(p) for p, _ in samples], dtype=bytes)
        self.targets = np.array([y for _, y in samples], dtype=np.int64)
        self.classes = list(classes)
        self.transform = transform
        self.augment_transform = augment_transform

    def __len__(self) -> int:
        return len(self.targets)

    def path(self, index: int) -> Path:
        """The file of sample `index`."""
        return self.root / os.fsdecode(bytes(self.paths[index]))

    def get(self, index: int, augment: bool = False) -> tuple[Any, int]:
        """Sample `index` through the training augmentation (`augment`) or the eval transform."""
        transform = self.augment_transform if augment and self.augment_transform else None
        image = load_rgb(self.path(index))
        return (transform or self.transform)(image), int(self.targets[index])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.get(index)


class MultipleEnvironmentImageFolder(MultipleEnvironmentDataset):
    """A DomainBed image benchmark described by manifest entry `SPEC`.

    `IMAGE_SIZE` is the side of the square images the transforms produce (224 as DomainBed;
    tests lower it to keep CPU steps fast)."""

    SPEC: ClassVar[ImageDatasetSpec]
    IMAGE_SIZE: ClassVar[int] = 224
    input_shape: tuple[int, ...] = (3, 224, 224)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Take the environments, step counts and class count from the subclass's `SPEC`."""
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("SPEC")
        if spec is not None:
            cls.ENVIRONMENTS = spec.environments
            cls.N_STEPS = spec.n_steps
            cls.CHECKPOINT_FREQ = spec.checkpoint_freq
            cls.num_classes = len(spec.classes)

    def __init__(self, root: str | Path | None = None, test_envs: Any = None, hparams: Any = None):
        from dgalign.data.sources import resolve_data_dir

        super().__init__()
        spec = self.SPEC
        folder = resolve_data_dir(root) / spec.directory
        fix = (
            f"run `dgalign data fetch {spec.name} --data-dir {folder.parent}` or place the "
            f"images there by hand as {spec.directory}/<environment>/<class>/<image> "
            f"(environments: {', '.join(spec.env_dirs)})"
        )
        if not folder.is_dir():
            raise DataError(f"{spec.name} not found: no folder {folder}; {fix}")
        missing = [d for d in spec.env_dirs if not (folder / d).is_dir()]
        if missing:
            raise DataError(f"{spec.name}: {folder} lacks environment folder(s) {missing}; {fix}")
        classes = sorted({c for d in spec.env_dirs for c in class_folders(folder / d)})
        class_to_idx = {name: i for i, name in enumerate(classes)}
        size = int(self.IMAGE_SIZE)
        transform, augment = eval_transform(size), train_transform(size)
        for env_dir in spec.env_dirs:
            samples = scan_images(folder / env_dir, class_to_idx)
            if not samples:
                raise DataError(f"{spec.name}: no images in {folder / env_dir}; {fix}")
            self.datasets.append(
                ImageFolderEnvironment(folder / env_dir, samples, classes, transform, augment)
            )
        self.root = folder
        self.classes = classes
        self.input_shape = (3, size, size)
        self.num_classes = len(classes)


class VLCS(MultipleEnvironmentImageFolder):
    """VLCS: Caltech101, LabelMe, SUN09, VOC2007; 5 classes."""

    SPEC = MANIFEST["VLCS"]


class PACS(MultipleEnvironmentImageFolder):
    """PACS: art painting, cartoon, photo, sketch; 7 classes."""

    SPEC = MANIFEST["PACS"]


class OfficeHome(MultipleEnvironmentImageFolder):
    """OfficeHome: art, clipart, product, real world; 65 classes."""

    SPEC = MANIFEST["OfficeHome"]


class TerraIncognita(MultipleEnvironmentImageFolder):
    """TerraIncognita: camera-trap locations 100, 38, 43, 46; 10 classes."""

    SPEC = MANIFEST["TerraIncognita"]


class DomainNet(MultipleEnvironmentImageFolder):
    """DomainNet: clipart, infograph, painting, quickdraw, real, sketch; 345 classes."""

    SPEC = MANIFEST["DomainNet"]


class SVIRO(MultipleEnvironmentImageFolder):
    """SVIRO (synthetic vehicle interior rear seat occupancy), DomainBed's version: ten vehicle
    interiors as environments (aclass, escape, hilux, i3, lexus, tesla, tiguan, tucson, x5,
    zoe); classes are the class folders found."""

    SPEC = MANIFEST["SVIRO"]


IMAGE_DATASETS: dict[str, type[MultipleEnvironmentImageFolder]] = {
    cls.__name__: cls for cls in (VLCS, PACS, OfficeHome, TerraIncognita, DomainNet, SVIRO)
}


def write_fake_dataset(
    name: str,
    data_dir: str | Path,
    images_per_class: int = 3,
    classes_per_env: int | None = 2,
    image_size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> Path:
    """Write a small synthetic copy of image benchmark `name` in its exact folder layout (the
    first `classes_per_env` classes of every environment, None: all; random JPEGs of
    `image_size` = (width, height) whose mean colour depends on the class). For tests, demos
    and benchmarks; returns the dataset folder."""
    spec = MANIFEST[name]
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / spec.directory
    known = spec.classes or FAKE_CLASSES
    classes = known[:classes_per_env] if classes_per_env else known
    width, height = image_size
    for env_dir in spec.env_dirs:
        for k, cls in enumerate(classes):
            (folder / env_dir / cls).mkdir(parents=True, exist_ok=True)
            base = np.array([40 + 60 * (k % 4), 200 - 50 * (k % 3), 90], dtype=np.int16)
            for i in range(images_per_class):
                noise = rng.integers(-40, 40, (height, width, 3))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / env_dir / cls / f"img_{i:04d}.jpg")
    return folder
