"""Group-shift datasets for linear probing, read from their standard on-disk layouts.

Every dataset is a table of samples with a target label y, a spurious attribute a, an
environment and an official split (0 train, 1 val, 2 test). The groups are
g = y * num_attributes + a; the environments are the values of a (the probing protocol's),
except for Colored MNIST, whose environments are those of the IRM protocol.

    waterbirds  `waterbird_complete95_forest2water2/metadata.csv` (columns img_filename, y,
                split, place) and the image folders it names; y = bird type (1 waterbird),
                a = background (1 water).
    celeba      `list_attr_celeba.txt` (the official one: a count line, the 40 attribute
                names, then `<image> <+-1 x 40>`; the Kaggle `list_attr_celeba.csv` is read
                too), `list_eval_partition.txt` (or .csv) and `img_align_celeba/`;
                y = Blond_Hair, a = Male (both -1/1 mapped to 0/1).
    multinli    `metadata_random.csv` (columns gold_label, sentence2_has_negation, split) and
                the GLUE-style cached BERT features `cached_train_bert-base-uncased_128_mnli`,
                `cached_dev_bert-base-uncased_128_mnli`, `cached_dev_bert-base-uncased_128_mnli-mm`
                (pickled lists of InputFeatures: input_ids, input_mask, segment_ids), whose
                concatenation in that order is row-aligned with the metadata (the layout of
                the group-DRO code); y = gold_label (3 classes), a = sentence2_has_negation.
    cmnist      the Colored MNIST images of the IRM protocol as raw 392-pixel vectors (no
                download beyond MNIST): env0 and env1 of restart `seed` (colour agrees with
                the label 80% and 90% of the time), 20% of each held out as validation, and
                the test environment (agreement 10%); y = the noisy binary label,
                a = the colour (0 red, 1 green), environment = 0 (env0), 1 (env1), 2 (test).
                The colour attribute is a poor environment here: the two colours live on
                disjoint pixels, so per-colour gradients never overlap.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dgalign.errors import DataError

SPLITS = ("train", "val", "test")
WATERBIRDS_DIR = "waterbird_complete95_forest2water2"
MNLI_CACHED = (
    "cached_train_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli-mm",
)
TOKEN_FIELDS = ("input_ids", "input_mask", "segment_ids")


@dataclass
class ProbeDataset:
    """Labels, attributes and splits of every sample, and how to load its input.

    `modality` says what `load(i)` returns: "image" (a PIL RGB image), "text" (a dict of the
    three int64 token arrays of `TOKEN_FIELDS`) or "vector" (a float32 array)."""

    name: str
    target: str
    spurious: str
    num_classes: int
    num_attributes: int
    labels: np.ndarray
    attributes: np.ndarray
    splits: np.ndarray
    modality: str
    root: str
    loader: Callable[[int], Any] = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    environments: np.ndarray | None = None  # None: the attribute
    num_environments: int | None = None

    def __post_init__(self) -> None:
        if self.environments is None:
            self.environments = self.attributes
            self.num_environments = self.num_attributes

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Any:
        return self.loader(int(index))

    def identity(self) -> dict[str, Any]:
        """What defines the table (written to the feature sidecar; compared on resume)."""
        return {
            "name": self.name,
            "target": self.target,
            "spurious": self.spurious,
            "num_classes": self.num_classes,
            "num_attributes": self.num_attributes,
            "num_environments": self.num_environments,
            "rows": len(self),
            "modality": self.modality,
            "root": self.root,
            **self.extra,
        }


def _find(root: Path, candidates: list[str], what: str, fix: str) -> Path:
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    names = " or ".join(candidates[:2])
    raise DataError(f"{what}: {names} not found under {root}; {fix}")


def _int_column(frame: pd.DataFrame, column: str, source: Path) -> np.ndarray:
    if column not in frame.columns:
        raise DataError(f"{source} has no column {column!r} (columns: {', '.join(frame.columns)})")
    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().any():
        raise DataError(f"{source}: column {column!r} holds non-integer values")
    return values.to_numpy().astype(np.int64)


def _check_splits(splits: np.ndarray, source: Path) -> np.ndarray:
    bad = ~np.isin(splits, (0, 1, 2))
    if bad.any():
        raise DataError(f"{source}: split values must be 0 (train), 1 (val) or 2 (test)")
    return splits.astype(np.int8)


def _from_metadata(
    frame: pd.DataFrame, meta: Path, columns: tuple[str, str], **spec: Any
) -> ProbeDataset:
    """The dataset whose labels and (binary) attributes are the integer `columns` (y, a) of
    the metadata table `frame` read from `meta`, its splits the column "split", its root the
    folder of `meta`; `spec` gives the other fields."""
    target, spurious = columns
    return ProbeDataset(
        num_attributes=2,
        labels=_int_column(frame, target, meta),
        attributes=_int_column(frame, spurious, meta),
        splits=_check_splits(_int_column(frame, "split", meta), meta),
        root=str(meta.parent),
        **spec,
    )


def _image_loader(folder: Path, files: list[str]) -> Callable[[int], Any]:
    from dgalign.data.images import load_rgb

    def load(index: int) -> Any:
        path = folder / files[index]
        try:
            return load_rgb(path)
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"cannot read image {path} ({type(exc).__name__})") from None

    return load


def waterbirds(root: str | Path) -> ProbeDataset:
    """Waterbirds from `root` (the dataset folder, or a folder holding it)."""
    root = Path(root)
    fix = (
        f"place the {WATERBIRDS_DIR} folder (metadata.csv and its image folders) there, "
        "or pass --data-dir pointing at it"
    )
    meta = _find(root, ["metadata.csv", f"{WATERBIRDS_DIR}/metadata.csv"], "Waterbirds", fix)
    frame = pd.read_csv(meta)
    if "img_filename" not in frame.columns:
        raise DataError(f"{meta} has no column 'img_filename'")
    return _from_metadata(
        frame,
        meta,
        ("y", "place"),
        name="waterbirds",
        target="y (bird type: 1 = waterbird)",
        spurious="place (background: 1 = water)",
        num_classes=2,
        modality="image",
        loader=_image_loader(meta.parent, [str(f) for f in frame["img_filename"]]),
    )


def _celeba_table(path: Path) -> pd.DataFrame:
    """The attribute table indexed by image name, from the official .txt or the Kaggle .csv."""
    if path.suffix == ".csv":
        return pd.read_csv(path).set_index("image_id")
    lines = path.read_text().splitlines()
    if len(lines) < 3:
        raise DataError(f"{path} is too short for the CelebA attribute list")
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    if any(len(r) != len(names) + 1 for r in rows):
        raise DataError(f"{path}: every row needs an image name and {len(names)} values")
    frame = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=names)
    return frame.astype(np.int64)


def _celeba_partition(path: Path) -> pd.Series:
    if path.suffix == ".csv":
        return pd.read_csv(path).set_index("image_id")["partition"]
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return pd.Series([int(r[1]) for r in rows], index=[r[0] for r in rows])


def celeba(root: str | Path, target: str = "Blond_Hair", spurious: str = "Male") -> ProbeDataset:
    """CelebA from `root` (the folder with the attribute and partition lists)."""
    root = Path(root)
    fix = "place the official CelebA lists and img_align_celeba/ there (or --data-dir)"
    subdirs = ["", "celeba/", "celebA/", "CelebA/"]
    attr_path = _find(
        root,
        [f"{s}list_attr_celeba.{e}" for e in ("txt", "csv") for s in subdirs],
        "CelebA",
        fix,
    )
    part_path = _find(
        attr_path.parent,
        ["list_eval_partition.txt", "list_eval_partition.csv"],
        "CelebA",
        fix,
    )
    table = _celeba_table(attr_path)
    for column in (target, spurious):
        if column not in table.columns:
            raise DataError(f"{attr_path} has no attribute {column!r}")
    partition = _celeba_partition(part_path)
    missing = table.index.difference(partition.index)
    if len(missing):
        raise DataError(f"{part_path} lacks {len(missing)} images of {attr_path.name}")
    images = attr_path.parent / "img_align_celeba"
    if (images / "img_align_celeba").is_dir():  # the Kaggle archive nests the folder
        images = images / "img_align_celeba"
    files = [str(f) for f in table.index]
    return ProbeDataset(
        name="celeba",
        target=target,
        spurious=spurious,
        num_classes=2,
        num_attributes=2,
        labels=(table[target].to_numpy() > 0).astype(np.int64),
        attributes=(table[spurious].to_numpy() > 0).astype(np.int64),
        splits=_check_splits(partition.loc[table.index].to_numpy().astype(np.int64), part_path),
        modality="image",
        root=str(attr_path.parent),
        loader=_image_loader(images, files),
    )


class _FeatureUnpickler(pickle.Unpickler):
    """Unpickles lists of GLUE InputFeatures (from any module) as plain dicts; refuses any
    other class, so a cached-features file cannot run code."""

    SAFE: tuple[tuple[str, str], ...] = (
        ("collections", "OrderedDict"),
        ("builtins", "list"),
        ("builtins", "dict"),
    )

    def find_class(self, module: str, name: str) -> Any:
        if name == "InputFeatures":
            return _InputFeatures
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in cached features")


class _InputFeatures:
    """Stand-in for transformers' / pytorch-transformers' InputFeatures."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _PickleModule:
    """What `torch.load(pickle_module=...)` needs: an Unpickler and a load."""

    Unpickler = _FeatureUnpickler
    __name__ = "dgalign_glue_features"

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _FeatureUnpickler(file, **kwargs).load()


def _token_arrays(path: Path) -> dict[str, np.ndarray]:
    """input_ids, input_mask, segment_ids [n, L] of one cached GLUE features file."""
    import torch

    try:
        items = torch.load(path, pickle_module=_PickleModule, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise DataError(f"{path} is not a cached GLUE features file ({exc})") from None
    aliases = {"input_mask": "attention_mask", "segment_ids": "token_type_ids"}
    out: dict[str, list[Any]] = {f: [] for f in TOKEN_FIELDS}
    for item in items:
        values = item if isinstance(item, dict) else vars(item)
        for name in TOKEN_FIELDS:
            value = values.get(name, values.get(aliases.get(name, name)))
            if value is None:
                raise DataError(f"{path}: an InputFeatures entry has no {name}")
            out[name].append(value)
    try:
        return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
    except ValueError:
        raise DataError(f"{path}: token sequences have different lengths") from None


def multinli(root: str | Path) -> ProbeDataset:
    """MultiNLI from `root`: metadata_random.csv and the three cached feature files, either in
    `root` itself or in the group-DRO layout (`data/` and `glue_data/MNLI/`)."""
    root = Path(root)
    fix = "place metadata_random.csv and the cached_*_mnli files there (or --data-dir)"
    meta = _find(root, ["metadata_random.csv", "data/metadata_random.csv"], "MultiNLI", fix)
    feature_dir = next(
        (d for d in (meta.parent, root / "glue_data" / "MNLI") if (d / MNLI_CACHED[0]).is_file()),
        None,
    )
    if feature_dir is None:
        raise DataError(f"MultiNLI: {MNLI_CACHED[0]} not found under {root}; {fix}")
    for name in MNLI_CACHED:
        if not (feature_dir / name).is_file():
            raise DataError(f"MultiNLI: {feature_dir / name} is missing; {fix}")
    parts = [_token_arrays(feature_dir / name) for name in MNLI_CACHED]
    tokens = {k: np.concatenate([p[k] for p in parts]) for k in TOKEN_FIELDS}
    frame = pd.read_csv(meta)
    n = len(tokens["input_ids"])
    if n != len(frame):
        raise DataError(f"{meta} has {len(frame)} rows but the cached features hold {n}")

    def load(index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in tokens.items()}

    return _from_metadata(
        frame,
        meta,
        ("gold_label", "sentence2_has_negation"),
        name="multinli",
        target="gold_label (0 contradiction, 1 entailment, 2 neutral)",
        spurious="sentence2_has_negation",
        num_classes=3,
        modality="text",
        loader=load,
        extra={"max_length": int(tokens["input_ids"].shape[1])},
    )


def cmnist(data_dir: str | Path | None, seed: int = 0, val_fraction: float = 0.2) -> ProbeDataset:
    """Raw-pixel Colored MNIST (module docstring); MNIST from `data_dir` or $DGALIGN_DATA."""
    import torch

    from dgalign.experiments.cmnist_data import DataConfig, build_restart, load_mnist_train

    images, digits = load_mnist_train(None if data_dir is None else str(data_dir))
    np_rng = np.random.RandomState(seed)
    gen = torch.Generator().manual_seed(seed)
    restart = build_restart(images, digits, DataConfig(), np_rng, gen)
    envs = [restart["env0"], restart["env1"], restart["test"]]
    holdout = np.random.RandomState(seed + 1)
    x, y, a, s, e = [], [], [], [], []
    for k, env in enumerate(envs):
        n = len(env)
        split = np.full(n, 2 if k == 2 else 0, dtype=np.int8)
        if k < 2:
            split[holdout.permutation(n)[: round(val_fraction * n)]] = 1
        x.append(env.inputs().numpy())
        y.append(env.labels.long().numpy())
        a.append(env.colors.long().numpy())
        s.append(split)
        e.append(np.full(n, k, dtype=np.int64))
    vectors = np.concatenate(x).astype(np.float32)
    return ProbeDataset(
        name="cmnist",
        target="noisy label 1[digit < 5] (25% flipped)",
        spurious="colour (0 red, 1 green)",
        num_classes=2,
        num_attributes=2,
        labels=np.concatenate(y),
        attributes=np.concatenate(a),
        splits=np.concatenate(s),
        modality="vector",
        root="MNIST train[:60000] through dgalign.data.sources",
        loader=lambda i: vectors[i],
        extra={"seed": seed, "val_fraction": val_fraction, "dim": int(vectors.shape[1])},
        environments=np.concatenate(e),
        num_environments=3,
    )


READERS = ("waterbirds", "celeba", "multinli", "cmnist")


def open_dataset(name: str, data_dir: str | Path | None, seed: int = 0) -> ProbeDataset:
    """Dataset `name` from `data_dir` (default: $DGALIGN_DATA, else the user cache dir)."""
    from dgalign.data.sources import resolve_data_dir

    if name == "cmnist":
        return cmnist(data_dir, seed)
    root = resolve_data_dir(data_dir)
    if name == "waterbirds":
        return waterbirds(root)
    if name == "celeba":
        return celeba(root)
    if name == "multinli":
        return multinli(root)
    raise DataError(f"unknown probing dataset {name!r}; choose from {', '.join(READERS)}")
