"""Reading back what the trackers wrote, with each tracker's own reader (TensorBoard's
EventAccumulator, MLflow's client) or, for W&B's offline run file, its documented record
format (LevelDB log blocks of `wandb_internal_pb2.Record` protobufs)."""

from __future__ import annotations

import json
import os
import struct
from collections import defaultdict
from pathlib import Path

Series = dict[str, list[tuple[int, float]]]  # metric -> [(step, value)] in logged order


def tensorboard_scalars(log_dir: Path) -> Series:
    """Every scalar series TensorBoard shows for `log_dir` (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()[SCALARS]}


def mlflow_client(store: Path):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=Path(store).resolve().as_uri())


def mlflow_runs(store: Path) -> list:
    """Every MLflow run of every experiment of the file store."""
    client = mlflow_client(store)
    return [
        run
        for exp in client.search_experiments()
        for run in client.search_runs([exp.experiment_id])
    ]


def mlflow_scalars(store: Path, run_id: str) -> Series:
    client = mlflow_client(store)
    run = client.get_run(run_id)
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in run.data.metrics
    }


BLOCK = 32768
HEADER = 7  # W&B file header (":W&B", magic, version), then LevelDB-log records


def wandb_records(path: Path):
    """The protobuf records of a W&B `.wandb` run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            raw = chunk
        elif kind == 2:  # first
            pending = chunk
            continue
        elif kind == 3:  # middle
            pending += chunk
            continue
        else:  # last
            raw = pending + chunk
        record = pb.Record()
        record.ParseFromString(raw)
        yield record


def wandb_offline_runs(log_dir: Path) -> list[Path]:
    """The offline run directories under `log_dir/wandb`, oldest first."""
    return sorted((Path(log_dir) / "wandb").glob("offline-run-*"))


def wandb_history(run_dir: Path) -> Series:
    """The history of an offline W&B run directory: metric -> [(step, value)]."""
    (path,) = run_dir.glob("run-*.wandb")
    out: Series = defaultdict(list)
    for record in wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item
        }
        step = int(items.pop("_step"))
        for key, value in items.items():
            if not key.startswith("_"):
                out[key].append((step, float(value)))
    return dict(out)


def wandb_config(run_dir: Path) -> dict:
    (path,) = run_dir.glob("run-*.wandb")
    config = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "run":
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif record.WhichOneof("record_type") == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
    return config
