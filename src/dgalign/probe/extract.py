"""Batched, resumable feature extraction into the format of `dgalign.probe.features`.

Rows are processed in shards of `shard_rows` consecutive samples; each finished shard is
written atomically to DIR/partial/rows-<start>-<end>.npy next to DIR/partial/identity.json
(the dataset's and the extractor's identity). Rerunning the same command skips finished
shards; a different dataset or extractor in the same folder is refused. When every shard is
there they are joined into DIR/features.npz + DIR/features.json and DIR/partial/ is removed.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dgalign import __version__
from dgalign.errors import ConfigError, DataError, RunDirError
from dgalign.probe.backbones import Extractor
from dgalign.probe.datasets import SPLITS, ProbeDataset
from dgalign.probe.features import SIDECAR, VERSION, read_sidecar, save_features
from dgalign.utils.io import atomic_open, atomic_write_json
from dgalign.utils.runtime import resolve_device

log = logging.getLogger("dgalign")
PARTIAL = "partial"


class _Rows(Dataset):
    """Rows `start..end` of the dataset through the extractor's `prepare`."""

    def __init__(self, dataset: ProbeDataset, prepare: Any, start: int, end: int) -> None:
        self.dataset, self.prepare, self.start, self.end = dataset, prepare, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def __getitem__(self, index: int) -> Any:
        return self.prepare(self.dataset.load(self.start + index))


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device)


def _plain(obj: Any) -> Any:
    """The JSON round trip of `obj` (tuples become lists), for comparing identities."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def shard_bounds(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + shard_rows, n)) for a in range(0, n, shard_rows)]


def _shard_path(partial: Path, bounds: tuple[int, int]) -> Path:
    return partial / f"rows-{bounds[0]:09d}-{bounds[1]:09d}.npy"


def _check_folder(out: Path, identity: dict[str, Any]) -> bool:
    """True if `out` already holds these features; RunDirError if it holds others."""
    if (out / SIDECAR).exists():
        meta = read_sidecar(out)
        found = {"dataset": meta.get("dataset"), "extractor": meta.get("extractor")}
        if found == identity:
            return True
        raise RunDirError(
            f"{out} already holds features of another extraction ({meta['dataset'].get('name')} "
            f"through {meta['extractor'].get('backbone')}); choose another --out or remove it"
        )
    stamp = out / PARTIAL / "identity.json"
    if stamp.exists():
        if _plain(json.loads(stamp.read_text())) != identity:
            raise RunDirError(
                f"{out / PARTIAL} holds an unfinished extraction with another dataset or "
                "extractor; choose another --out or remove that folder"
            )
    else:
        atomic_write_json(stamp, identity)
    return False


def extract_features(
    dataset: ProbeDataset,
    extractor: Extractor,
    out: str | Path,
    batch_size: int = 64,
    shard_rows: int = 4096,
    workers: int = 0,
    device: str = "cpu",
    progress: bool | None = None,
) -> Path:
    """Extract features of every row of `dataset` into `out` (module docstring); returns `out`.

    `progress` None: a progress bar only when stderr is a terminal."""
    if batch_size < 1 or shard_rows < 1 or workers < 0:
        raise ConfigError("--batch-size and --shard-rows must be >= 1 and --workers >= 0")
    out = Path(out)
    identity = _plain({"dataset": dataset.identity(), "extractor": extractor.identity})
    if _check_folder(out, identity):
        log.info("%s already holds these features; nothing to do", out)
        return out
    partial = out / PARTIAL
    shards = shard_bounds(len(dataset), shard_rows)
    todo = [s for s in shards if not _shard_path(partial, s).exists()]
    done_rows = sum(b - a for a, b in shards) - sum(b - a for a, b in todo)
    dev = resolve_device(device)
    model = extractor.model.to(dev).eval()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(dataset), initial=done_rows, desc="extract", disable=not show, unit="row")
    with bar, torch.inference_mode():
        for bounds in todo:
            rows = _Rows(dataset, extractor.prepare, *bounds)
            chunks = []
            for batch in DataLoader(rows, batch_size=batch_size, num_workers=workers):
                feats = model(_to(batch, dev)).float().cpu().numpy()
                chunks.append(feats)
                bar.update(len(feats))
            block = np.concatenate(chunks)
            if block.shape != (bounds[1] - bounds[0], extractor.dim):
                raise DataError(
                    f"the extractor returned features of shape {block.shape[1:]}, expected "
                    f"({extractor.dim},)"
                )
            with atomic_open(_shard_path(partial, bounds), "wb") as handle:
                np.save(handle, block.astype(np.float32))
    features = np.concatenate([np.load(_shard_path(partial, s)) for s in shards])
    meta = _sidecar(dataset, identity, features.shape[1])
    arrays = {
        "features": features,
        "label": dataset.labels,
        "attribute": dataset.attributes,
        "environment": dataset.environments,
        "split": dataset.splits,
    }
    save_features(out, arrays, meta)
    shutil.rmtree(partial)
    log.info("features of %d rows (%d dims) written to %s", len(dataset), features.shape[1], out)
    return out


def _sidecar(dataset: ProbeDataset, identity: dict[str, Any], dim: int) -> dict[str, Any]:
    counts: Sequence[int] = [int((dataset.splits == k).sum()) for k in range(3)]
    return {
        "format": "dgalign-probe-features",
        "version": VERSION,
        **identity,
        "dim": int(dim),
        "splits": dict(zip(SPLITS, counts, strict=True)),
        "groups": "group = label * num_attributes + attribute",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dgalign_version": __version__,
    }
