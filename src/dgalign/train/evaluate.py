"""Accuracy of an algorithm on a split, in evaluation mode, without gradients.

`accuracy` evaluates one split. `Evaluator` evaluates the fixed splits of a training run at
every checkpoint: in-memory splits are copied to the device once, splits loaded from files
share one DataLoader whose worker processes persist from one checkpoint to the next, and each
model's correct counts are read to the host once per checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from dgalign.algorithms import Algorithm
from dgalign.data.splits import (
    SampleView,
    Subset,
    default_num_workers,
    device_rows,
    is_tensor_backed,
    iterate_split,
    loader_args,
)

#: Evaluation batch size for splits loaded from files (images): large enough to keep a GPU
#: busy, small enough that the workers' prefetched batches fit in pinned memory.
FILE_BATCH_SIZE = 128


@torch.no_grad()
def accuracy(
    algorithm: Algorithm,
    split: Subset,
    device: torch.device,
    batch_size: int = 512,
    num_workers: int | None = None,
) -> float:
    """Fraction of correct predictions: argmax of the logits, or logit > 0 for one logit.

    In-memory splits are indexed directly; others (images) go through DataLoader workers
    (`num_workers`, None: the loaders' default) with the evaluation transform."""
    if len(split) == 0:
        return float("nan")
    if not is_tensor_backed(split):
        batch_size = min(batch_size, FILE_BATCH_SIZE)
    was_training = algorithm.training
    algorithm.eval()
    correct = 0
    try:
        for x, y in iterate_split(split, batch_size, device, num_workers):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            correct += int(_correct(algorithm, x, y))
    finally:
        algorithm.train(was_training)
    return correct / len(split)


def _correct(algorithm: Algorithm, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The number of correct predictions on (x, y), a 0-dim tensor on the device."""
    logits = algorithm.predict(x)
    predicted = logits.gt(0).long().view(-1) if logits.size(1) == 1 else logits.argmax(1)
    return predicted.eq(y).sum()


class Evaluator:
    """Accuracies of named splits, for every checkpoint of a run (see the module docstring).
    `accuracies(model)` returns them in the order the splits were given."""

    def __init__(
        self,
        splits: Mapping[str, Subset],
        device: torch.device,
        batch_size: int = 512,
        num_workers: int | None = None,
    ) -> None:
        self.splits = dict(splits)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self._resident: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._files = [n for n, s in self.splits.items() if len(s) and not is_tensor_backed(s)]
        self._loader: DataLoader | None = None

    @torch.no_grad()
    def accuracies(self, algorithm: Algorithm) -> dict[str, float]:
        was_training = algorithm.training
        algorithm.eval()
        try:
            correct = {n: self._tensor_correct(algorithm, n) for n in self.splits}
            for name, count in self._file_correct(algorithm):
                correct[name] = correct[name] + count
        finally:
            algorithm.train(was_training)
        names = [n for n in self.splits if len(self.splits[n])]
        counts = torch.stack([correct[n] for n in names]).tolist() if names else []
        out = {n: float("nan") for n in self.splits}  # an empty split has no accuracy
        out.update({n: c / len(self.splits[n]) for n, c in zip(names, counts, strict=True)})
        return out

    def _tensor_correct(self, algorithm: Algorithm, name: str) -> torch.Tensor:
        split = self.splits[name]
        total = torch.zeros((), dtype=torch.long, device=self.device)
        if not len(split) or not is_tensor_backed(split):
            return total
        x, y = self._rows(name)
        for start in range(0, len(split), self.batch_size):
            batch = slice(start, start + self.batch_size)
            total = total + _correct(algorithm, x[batch], y[batch])
        return total

    def _rows(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's rows on the device: copied there once (on the CPU, where a copy
        would only double the memory, the rows are gathered anew each time)."""
        split = self.splits[name]
        if self.device.type == "cpu":
            return split.dataset.x[split.keys], split.dataset.y[split.keys]
        if name not in self._resident:
            self._resident[name] = device_rows(split, self.device)
        return self._resident[name]

    def _file_correct(self, algorithm: Algorithm) -> Iterator[tuple[str, torch.Tensor]]:
        if not self._files:
            return
        if self._loader is None:
            self._loader = self._file_loader()
        names = self._loader.batch_sampler.names  # type: ignore[union-attr]
        for name, (x, y) in zip(names, self._loader, strict=True):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield name, _correct(algorithm, x, y)

    def _file_loader(self) -> DataLoader:
        """One loader over every file split, its workers kept between checkpoints."""
        views = [SampleView(self.splits[n]) for n in self._files]
        batches = _SplitBatches(
            self._files, [len(v) for v in views], min(self.batch_size, FILE_BATCH_SIZE)
        )
        workers = min(self.num_workers, len(batches))
        args: dict[str, Any] = loader_args(self.device, workers)
        if workers > 0:
            args["persistent_workers"] = True
        return DataLoader(_Views(views), batch_sampler=batches, **args)


class _Views(Dataset):
    """Items of several `SampleView`s, keyed `(view index, (position, None))`."""

    def __init__(self, views: list[SampleView]) -> None:
        self.views = views

    def __len__(self) -> int:
        return sum(len(v) for v in self.views)

    def __getitem__(self, key: tuple[int, tuple[int, None]]) -> tuple[Any, int]:
        index, item = key
        return self.views[index][item]


class _SplitBatches:
    """Batches of each split in turn, never mixing two; `names[b]` is batch b's split."""

    def __init__(self, names: list[str], sizes: list[int], batch_size: int) -> None:
        self.batches: list[list[tuple[int, tuple[int, None]]]] = []
        self.names: list[str] = []
        for index, (name, n) in enumerate(zip(names, sizes, strict=True)):
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                self.batches.append([(index, (p, None)) for p in range(start, stop)])
                self.names.append(name)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, None]]]]:
        return iter(self.batches)
