"""Run directories of a sweep as the report sees them: arguments, state and records.

Reads dgalign's run directories and DomainBed's alike (both keep one JSON record per line in
`results.jsonl`, with the run's `args` in every record, and write `done` last). By default
only finished runs contribute records, so a half-trained run never looks like a result;
DomainBed's `collect_results` reads unfinished runs too (`include_incomplete=True`).

Runs trained with `dgalign train --swa` also evaluate the weight average at every checkpoint
(`swa_env{i}_in_acc`, `swa_env{i}_out_acc`). `with_swa_runs` adds, for every (dataset,
algorithm) whose records have them, a twin of each of its runs named "<algorithm> + SWA" whose
records hold the averaged model's accuracies under the `env*` keys, so model selection, tables
and plots treat the average as one more algorithm. Runs trained with `--swad` hold the SWAD
model's accuracies (`swad_env{i}_*_acc`) in their last record; their twin "<algorithm> + SWAD"
has that one record.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgalign.errors import ConfigError
from dgalign.runs.directory import RunDirectory, read_results, read_run_json, sub_directories
from dgalign.runs.state import JobState, run_state

logger = logging.getLogger(__name__)
Record = dict[str, Any]
RunKey = tuple[str, str, int, tuple[int, ...], int]  # dataset, algorithm, trial, test envs, hp
SWA_SUFFIX = " + SWA"  # the algorithm name of a run's weight average
SWAD_SUFFIX = " + SWAD"  # ... and of its SWAD average (`--swad`: the last record only)
AVERAGES = (("swa_", SWA_SUFFIX), ("swad_", SWAD_SUFFIX))
_ENV_ACC = re.compile(r"env\d+_(in|out)_acc")


@dataclass
class Run:
    """One run directory."""

    path: Path
    args: dict[str, Any] | None
    state: JobState
    records: list[Record] = field(default_factory=list)
    bad_lines: int = 0
    swa_twin: bool = False  # the "<algorithm> + SWA" view of a run (`with_swa_runs`)

    @property
    def key(self) -> RunKey | None:
        """(dataset, algorithm, trial seed, sorted test envs, hparams seed), if known."""
        a = self.args
        try:
            envs = tuple(sorted(int(e) for e in a["test_envs"]))
            return (
                a["dataset"],
                a["algorithm"],
                int(a["trial_seed"]),
                envs,
                int(a["hparams_seed"]),
            )
        except (TypeError, KeyError, ValueError):
            return None


def _args(path: Path, records: list[Record]) -> dict[str, Any] | None:
    return records[0]["args"] if records else read_run_json(path)


def load_runs(sweep_dir: str | Path) -> list[Run]:
    """Every run directory directly under `sweep_dir`, in name order. ConfigError when the
    directory is missing or holds no run."""
    root = Path(sweep_dir)
    if not root.exists():
        raise ConfigError(f"{root} does not exist; pass the --output-dir of a sweep")
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; pass the --output-dir of a sweep")
    runs = []
    for path in sub_directories(root):
        rundir = RunDirectory(path)
        if not (rundir.results.exists() or rundir.run_json.exists()):
            continue
        records, bad = read_results(rundir.results)
        records.sort(key=lambda r: r["step"])
        runs.append(Run(path, _args(path, records), run_state(path), records, bad))
    if not runs:
        raise ConfigError(
            f"no runs in {root}: no sub-directory holds results.jsonl or run.json "
            "(launch a sweep into it first)"
        )
    bad = sum(r.bad_lines for r in runs)
    if bad:
        logger.warning(f"skipped {bad} unreadable line(s) of results.jsonl under {root}")
    return runs


def report_records(runs: list[Run], include_incomplete: bool = False) -> list[Record]:
    """The records model selection sees: those of finished runs (or of every run)."""
    return [
        record
        for run in runs
        if include_incomplete or run.state is JobState.DONE
        for record in run.records
    ]


def swa_record(record: Record, prefix: str = "swa_", suffix: str = SWA_SUFFIX) -> Record | None:
    """`record` as the weight average's record: the `swa_env*` (`prefix`) accuracies under the
    `env*` keys and " + SWA" (`suffix`) appended to `args.algorithm`; None unless every `env*`
    accuracy has its counterpart."""
    accs = [k for k in record if _ENV_ACC.fullmatch(k)]
    if not accs or any(f"{prefix}{k}" not in record for k in accs):
        return None
    n = len(prefix)
    twin = {
        k: v
        for k, v in record.items()
        if not _ENV_ACC.fullmatch(k) and not (k.startswith(prefix) and _ENV_ACC.fullmatch(k[n:]))
    }
    twin.update({k: record[f"{prefix}{k}"] for k in accs})
    twin["args"] = {**record["args"], "algorithm": record["args"]["algorithm"] + suffix}
    return twin


def with_swa_runs(runs: list[Run]) -> list[Run]:
    """`runs` and, for each (dataset, algorithm) with weight-average accuracies in any record,
    the "<algorithm> + SWA" (and "+ SWAD") twin of each of its runs (finished or not, so notes
    on missing jobs apply to both rows); a twin holds the records that have them. Twins already
    in `runs` are replaced, so calling this twice changes nothing."""
    runs = [r for r in runs if not r.swa_twin]
    extra: list[Run] = []
    for prefix, suffix in AVERAGES:
        twins: dict[int, list[Record]] = {}
        with_avg: set[tuple[str, str]] = set()
        for i, run in enumerate(runs):
            if run.key is None:
                continue
            twins[i] = [t for r in run.records if (t := swa_record(r, prefix, suffix))]
            if twins[i]:
                with_avg.add(run.key[:2])
        extra += [
            Run(
                run.path,
                {**run.args, "algorithm": run.key[1] + suffix},
                run.state,
                twins[i],
                swa_twin=True,
            )
            for i, run in enumerate(runs)
            if run.key is not None and run.key[:2] in with_avg
        ]
    return runs + extra


def _base_name(name: str) -> str:
    for _, suffix in AVERAGES:
        name = name.removesuffix(suffix)
    return name


def order_names(seen: list[str], known: list[str]) -> list[str]:
    """Names in `known` order first, then the others sorted."""
    present = set(seen)
    return [n for n in known if n in present] + sorted(present - set(known))


def dataset_names(runs: list[Run]) -> list[str]:
    from dgalign.data import DATASETS

    return order_names([r.args["dataset"] for r in runs if r.key], list(DATASETS))


def algorithm_names(runs: list[Run]) -> list[str]:
    from dgalign import algorithms

    names = order_names([_base_name(r.key[1]) for r in runs if r.key], algorithms.names())
    present = {r.key[1] for r in runs if r.key}
    # each "X + SWA" and "X + SWAD" right after X
    suffixes = ("", *(suffix for _, suffix in AVERAGES))
    return [n for name in names for n in (name + x for x in suffixes) if n in present]


# Environment names of DomainBed's datasets dgalign does not register (yet), for the columns.
DOMAINBED_ENVIRONMENTS: dict[str, tuple[str, ...]] = {
    "VLCS": ("C", "L", "S", "V"),
    "PACS": ("A", "C", "P", "S"),
    "OfficeHome": ("A", "C", "P", "R"),
    "TerraIncognita": ("L100", "L38", "L43", "L46"),
    "DomainNet": ("clip", "info", "paint", "quick", "real", "sketch"),
}


def environment_names(dataset: str, runs: list[Run]) -> list[str]:
    """Column labels of a dataset's environments: the registered names, DomainBed's names, or
    `env0`, `env1`, ... counted from the records."""
    from dgalign.data import DATASETS

    if dataset in DATASETS:
        return list(DATASETS.get(dataset).ENVIRONMENTS)
    if dataset in DOMAINBED_ENVIRONMENTS:
        return list(DOMAINBED_ENVIRONMENTS[dataset])
    count = 0
    for run in runs:
        if run.key and run.key[0] == dataset:
            for record in run.records[:1]:
                count = max(count, sum(1 for k in record if re.fullmatch(r"env\d+_out_acc", k)))
            count = max(count, max(run.key[3], default=-1) + 1)
    return [f"env{i}" for i in range(count)]
