"""In/out splits per environment, the infinite per-domain batch sampler and the loaders.

Two loading paths. Environments held in memory as tensors (`TensorEnvironment`: the MNIST
datasets) are indexed directly, in the training process. Any other environment (folders of
images, WILDS) goes through a torch `DataLoader` with worker processes and pinned memory, fed
by `InfiniteBatchSampler` as its batch sampler, so batch t of a training environment is still a
pure function of (seed, env, t): the loader starts at whatever step is asked for first, and one
persistent iterator then serves steps t, t+1, ... with the workers decoding ahead. Training
augmentation is random but reproducible: sample j of batch t is transformed under torch's
generator seeded with `seed_hash(seed, env, t, "augment") + j` (inside `torch.random.fork_rng`,
so the training process's own generator is untouched), whichever worker happens to load it.
A resumed run therefore sees exactly the batches, augmentations included, of an uninterrupted
one, for any number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dgalign.errors import ConfigError
from dgalign.utils.seeding import seed_hash

#: Environment variable overriding the number of loader worker processes.
WORKERS_ENV = "DGALIGN_NUM_WORKERS"


class Subset(Dataset):
    """The rows `keys` of `dataset`; keeps tensor access fast for `TensorEnvironment`s."""

    def __init__(self, dataset: Dataset, keys: list[int]) -> None:
        self.dataset = dataset
        self.keys = torch.as_tensor(keys, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int):
        return self.dataset[int(self.keys[index])]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `indices` (positions in this subset) as stacked `(x, y)` tensors."""
        rows = self.keys[indices]
        base = self.dataset
        if hasattr(base, "x") and hasattr(base, "y"):
            return base.x[rows], base.y[rows]
        items = [base[int(r)] for r in rows]
        return (
            torch.stack([torch.as_tensor(x) for x, _ in items]),
            torch.as_tensor([int(y) for _, y in items]),
        )


def split_dataset(dataset: Dataset, n: int, seed: int) -> tuple[Subset, Subset]:
    """DomainBed's `split_dataset`: shuffle the row indices with `RandomState(seed)`; the first
    `n` rows form the first split (`out`), the rest the second (`in`)."""
    if not 0 <= n <= len(dataset):
        raise ValueError(f"cannot take {n} rows from a dataset of {len(dataset)}")
    keys = list(range(len(dataset)))
    np.random.RandomState(seed).shuffle(keys)
    return Subset(dataset, keys[:n]), Subset(dataset, keys[n:])


def split_environment(
    dataset: Dataset, env_index: int, trial_seed: int, holdout_fraction: float
) -> tuple[Subset, Subset]:
    """(`in`, `out`) splits of one environment, seeded by (trial seed, env index) so every
    algorithm and hyper-parameter draw of a trial sees the same split."""
    out, in_ = split_dataset(
        dataset, int(len(dataset) * holdout_fraction), seed_hash(trial_seed, env_index)
    )
    return in_, out


def split_uda(
    in_split: Subset, fraction: float, trial_seed: int, env_index: int
) -> tuple[Subset, Subset]:
    """DomainBed's domain-adaptation split of a test environment's `in` split: (`uda`, rest),
    the first `int(len * fraction)` rows of its shuffle by `RandomState(seed_hash(trial seed,
    env index))`. Both index the environment itself (no nested subsets)."""
    uda, rest = split_dataset(
        in_split, int(len(in_split) * fraction), seed_hash(trial_seed, env_index)
    )
    keys = in_split.keys
    return Subset(in_split.dataset, keys[uda.keys].tolist()), Subset(
        in_split.dataset, keys[rest.keys].tolist()
    )


class InfiniteBatchSampler:
    """Batches drawn with replacement, forever. Batch `t` is a pure function of
    (seed, stream, t), so resuming at step t needs no sampler state beyond the step."""

    def __init__(self, size: int, batch_size: int, seed: int, stream: int) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty split")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream

    def indices(self, step: int) -> torch.Tensor:
        """Row indices of batch `step`."""
        generator = torch.Generator().manual_seed(seed_hash(self.seed, self.stream, step))
        return torch.randint(self.size, (self.batch_size,), generator=generator)


def is_tensor_backed(split: Subset) -> bool:
    """Whether `split` indexes an in-memory `TensorEnvironment` (the fast path)."""
    return hasattr(split.dataset, "x") and hasattr(split.dataset, "y")


def device_rows(split: Subset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows `(x, y)` of an in-memory split, copied to `device` (once per split: the
    training loaders and the evaluation then index them there)."""
    x, y = split.dataset.x[split.keys], split.dataset.y[split.keys]
    return x.to(device), y.to(device)


def default_num_workers() -> int:
    """Worker processes per loader: `$DGALIGN_NUM_WORKERS`, else min(8, usable CPUs) (8 is
    DomainBed's `N_WORKERS` for image datasets)."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        if not value.isdigit():
            raise ConfigError(f"${WORKERS_ENV} must be a whole number >= 0, got {value!r}")
        return int(value)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cpus or 1)


def loader_args(device: torch.device, num_workers: int) -> dict[str, Any]:
    """DataLoader arguments: workers, pinned memory on CUDA, and a private generator for the
    workers' base seed (the default draws it from torch's global generator, which would make
    a run's random stream depend on when loaders start, e.g. on where it resumed)."""
    return {
        "num_workers": num_workers,
        "pin_memory": device.type == "cuda" and torch.cuda.is_available(),
        "generator": torch.Generator().manual_seed(0),
    }


class SampleView(Dataset):
    """Items of `split` fetched by key `(position, augment_seed)`; a seed means "through the
    training augmentation, under torch's generator seeded with it"."""

    def __init__(self, split: Subset) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[Any, int]:
        position, augment_seed = key
        base, row = self.split.dataset, int(self.split.keys[position])
        get = getattr(base, "get", None)
        if augment_seed is None or get is None:
            x, y = base[row]
            return x, int(y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(augment_seed)
            x, y = get(row, augment=True)
        return x, int(y)


def supports_augmentation(split: Subset) -> bool:
    """Whether the environment behind `split` has a training augmentation."""
    return getattr(split.dataset, "augment_transform", None) is not None


class StepBatches:
    """Batch sampler: the keys of batches `start`, `start + 1`, ... of `sampler`, forever."""

    def __init__(self, sampler: InfiniteBatchSampler, start: int, augment: bool) -> None:
        self.sampler = sampler
        self.start = start
        self.augment = augment

    def keys(self, step: int) -> list[tuple[int, int | None]]:
        """The `(position, augment_seed)` keys of batch `step`."""
        rows = self.sampler.indices(step).tolist()
        if not self.augment:
            return [(row, None) for row in rows]
        base = seed_hash(self.sampler.seed, self.sampler.stream, step, "augment")
        return [(row, (base + j) % 2**31) for j, row in enumerate(rows)]

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        step = self.start
        while True:
            yield self.keys(step)
            step += 1


class InfiniteLoader:
    """One minibatch per call of `batch(step)` from a split, on `device`.

    Tensor environments are indexed in-process (on an accelerator the split's rows are
    copied to the device once and each batch's indices follow them). Other environments are
    loaded by a DataLoader with `num_workers` workers (None: `default_num_workers()`) and
    pinned memory on CUDA, whose iterator starts at the first step asked for and is restarted
    only if a step is skipped or repeated. `augment` None applies the training augmentation
    when the environment has one (DomainBed's default, `data_augmentation` true); pass the
    hyper-parameter to honour an override."""

    def __init__(
        self,
        split: Subset,
        batch_size: int,
        seed: int,
        stream: int,
        device: Any,
        augment: bool | None = None,
        num_workers: int | None = None,
    ) -> None:
        self.split = split
        self.sampler = InfiniteBatchSampler(len(split), batch_size, seed, stream)
        self.device = torch.device(device)
        self.fast = is_tensor_backed(split)
        can_augment = not self.fast and supports_augmentation(split)
        self.augment = can_augment if augment is None else bool(augment) and can_augment
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self._iterator: Iterator[Any] | None = None
        self._next_step = -1
        self._resident: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.fast and self.device.type != "cpu":  # the split's rows live on the device
            self._resident = device_rows(split, self.device)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._resident is not None:
            indices = self.sampler.indices(step)  # the CPU stream: the same batches anywhere
            if self.device.type == "cuda":
                indices = indices.pin_memory()  # an asynchronous copy, no wait for the device
            indices = indices.to(self.device, non_blocking=True)
            return self._resident[0][indices], self._resident[1][indices]
        if self.fast:
            x, y = self.split.batch(self.sampler.indices(step))
        else:
            if self._iterator is None or step != self._next_step:
                self._start(step)
            assert self._iterator is not None
            x, y = next(self._iterator)
            self._next_step = step + 1
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _start(self, step: int) -> None:
        self.close()
        batches = StepBatches(self.sampler, step, self.augment)
        loader = DataLoader(SampleView(self.split), batch_sampler=batches, **self._worker_args())
        self._iterator = iter(loader)

    def _worker_args(self) -> dict[str, Any]:
        args = loader_args(self.device, self.num_workers)
        if self.num_workers > 0:
            args.update(prefetch_factor=4, persistent_workers=False)
        return args

    def close(self) -> None:
        """Stop the worker processes (they also stop when the loader is garbage collected)."""
        self._iterator = None
        self._next_step = -1


def iterate_split(
    split: Subset, batch_size: int, device: Any, num_workers: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every row of `split` once, in order, in batches of `batch_size` (no augmentation):
    tensor environments directly, others through DataLoader workers."""
    n = len(split)
    starts = range(0, n, batch_size)
    if is_tensor_backed(split):
        for start in starts:
            yield split.batch(torch.arange(start, min(start + batch_size, n)))
        return
    workers = default_num_workers() if num_workers is None else num_workers
    batches = [[(i, None) for i in range(s, min(s + batch_size, n))] for s in starts]
    args = loader_args(torch.device(device), min(workers, len(batches)))
    yield from DataLoader(SampleView(split), batch_sampler=batches, **args)
