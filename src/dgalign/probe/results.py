"""Probing results on disk and as tables.

`train_probe` keeps one file per configuration, OUT/<name>.jsonl, one record per seed
(written atomically after each seed, so an interrupted run resumes at the next seed). Every
record carries the configuration key (features' identity, algorithm, resolved hyper-parameters
and protocol); a file whose records have another key is refused rather than mixed.
Tables: mean +- population std over seeds, in percent, as Markdown or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dgalign.errors import ConfigError, DataError, RunDirError
from dgalign.probe.features import load_features
from dgalign.probe.train import ProbeConfig, config_key, run_seed, summarize
from dgalign.utils.io import atomic_write_jsonl

log = logging.getLogger("dgalign")
FORMATS = ("markdown", "csv")


def read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path}:{n} is not a JSON record") from None
    return records


def train_probe(
    features_dir: str | Path,
    config: ProbeConfig,
    seeds: Sequence[int],
    out: str | Path,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Run `config` for every seed not yet in OUT/<name>.jsonl; return the records of `seeds`."""
    fs = load_features(features_dir)
    key = config_key(fs, config)
    name = name or config.algorithm
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name {name!r} must be a plain file name")
    path = Path(out) / f"{name}.jsonl"
    records = read_records(path) if path.exists() else []
    if any(r.get("key") != key for r in records):
        raise RunDirError(
            f"{path} holds results of another configuration; choose another --name or --out"
        )
    done = {r["seed"] for r in records}
    for seed in seeds:
        if seed in done:
            log.info("%s seed %d: already in %s", name, seed, path)
            continue
        record = run_seed(fs, config, seed)
        record.update(name=name, key=key)
        records.append(record)
        atomic_write_jsonl(path, records)
        log.info(
            "%s seed %d: worst-group test %.1f, average test %.1f (epoch %d, %.0f s)",
            name,
            seed,
            100 * record["test_worst"],
            100 * record["test_avg"],
            record["selected_epoch"],
            record["seconds"],
        )
    return [r for r in records if r["seed"] in set(seeds)]


def collect(paths: Sequence[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """Records by name from result files and folders of result files (in the order given)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for given in paths:
        path = Path(given)
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise DataError(f"{path}: no probing results (*.jsonl) there")
        for file in files:
            for record in read_records(file):
                found.setdefault(record.get("name", file.stem), []).append(record)
    return found


def _pm(value: tuple[float, float]) -> str:
    return f"{value[0]:.1f} +- {value[1]:.1f}"


def render(results: dict[str, list[dict[str, Any]]], fmt: str = "markdown") -> str:
    """One row per configuration: worst-group and average test accuracy at the selected epoch,
    worst-group validation accuracy, the median selected epoch and seconds per seed."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
    rows = [(name, summarize(records)) for name, records in results.items() if records]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        metrics = ("test_worst", "test_avg", "val_worst", "last_test_worst")
        writer.writerow(
            [
                "method",
                "seeds",
                *(f"{m}_{s}" for m in metrics for s in ("mean", "std")),
                "selected_epoch",
                "seconds_per_seed",
            ]
        )
        for name, s in rows:
            values = [f"{v:.4f}" for m in metrics for v in s[m]]
            writer.writerow([name, s["seeds"], *values, s["selected_epoch"], f"{s['seconds']:.1f}"])
        return buffer.getvalue()
    header = [
        "method",
        "seeds",
        "worst-group test",
        "average test",
        "worst-group val",
        "worst-group test (last epoch)",
        "epoch",
        "s / seed",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in rows:
        cells = [
            name,
            str(s["seeds"]),
            _pm(s["test_worst"]),
            _pm(s["test_avg"]),
            _pm(s["val_worst"]),
            _pm(s["last_test_worst"]),
            f"{s['selected_epoch']:g}",
            f"{s['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
