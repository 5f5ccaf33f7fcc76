"""`dgalign report` on DomainBed's own test sweep gives DomainBed's published numbers.

The fixture `data/domainbed_test_sweep.json.gz` holds the accuracies DomainBed (MIT license)
publishes with its test sweep: `domainbed/misc/test_sweep_data/<hash>/results.jsonl` at commit
394e02c30aa91ed842cc037e35a4b7b46f8bab6d of facebookresearch/DomainBed (ERM on VLCS,
`--steps 1001 --n_hparams 2 --n_trials 2`, every single and pair of test envs: 40 runs of 5
checkpoints, 200 records). Only the fields selection reads were kept: per run its directory name
and `args` (dataset, algorithm, test_envs, hparams_seed, trial_seed, holdout_fraction, steps,
task), per record `step` and `env{i}_in_acc` / `env{i}_out_acc`, values unchanged. The expected
numbers are those of DomainBed's `domainbed/misc/test_sweep_results.txt` at the same commit.
"""

import contextlib
import gzip
import io
import json
import re
from pathlib import Path

import pytest

from dgalign.cli import main

FIXTURE = Path(__file__).parent / "data" / "domainbed_test_sweep.json.gz"

# method heading -> (VLCS row C, L, S, V as "mean +/- err", Avg, averages-table VLCS cell)
GOLDEN = {
    "training-domain validation set": (
        ["98.0 +/- 0.2", "64.2 +/- 0.8", "74.1 +/- 0.4", "77.1 +/- 0.2"],
        "78.3",
        "78.3 +/- 0.0",
    ),
    "leave-one-domain-out cross-validation": (
        ["96.9 +/- 1.0", "64.4 +/- 0.9", "70.5 +/- 0.5", "76.7 +/- 0.1"],
        "77.1",
        "77.1 +/- 0.1",
    ),
    "test-domain validation set (oracle)": (
        ["96.9 +/- 1.0", "65.9 +/- 0.5", "71.6 +/- 1.3", "76.9 +/- 0.3"],
        "77.8",
        "77.8 +/- 0.3",
    ),
}


def write_test_sweep(root: Path) -> Path:
    """The fixture's runs as DomainBed leaves them: <hash>/results.jsonl (the run's `args` in
    every record) and <hash>/done."""
    with gzip.open(FIXTURE, "rt") as handle:
        runs = json.load(handle)["runs"]
    for run in runs:
        path = root / run["run"]
        path.mkdir(parents=True)
        lines = [json.dumps({"args": run["args"], **r}, sort_keys=True) for r in run["records"]]
        (path / "results.jsonl").write_text("\n".join(lines) + "\n")
        (path / "done").write_text("done\n")
    return root


def erm_rows(section: str) -> list[list[str]]:
    """The cells of every `| ERM | ... |` line of one report section."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")][1:]
        for line in section.splitlines()
        if re.match(r"\|\s*ERM\s*\|", line)
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    root = write_test_sweep(tmp_path_factory.mktemp("domainbed") / "test_sweep")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(root)]) == 0
    return out.getvalue()


def test_fixture_is_the_whole_test_sweep():
    with gzip.open(FIXTURE, "rt") as handle:
        runs = json.load(handle)["runs"]
    assert len(runs) == 40
    assert sum(len(r["records"]) for r in runs) == 200
    keys = {
        (r["args"]["trial_seed"], r["args"]["hparams_seed"], tuple(r["args"]["test_envs"]))
        for r in runs
    }
    assert len(keys) == 40  # 2 trials x 2 hparams x (4 single + 6 pair test envs)
    assert {r["args"]["dataset"] for r in runs} == {"VLCS"}
    assert {r["args"]["steps"] for r in runs} == {1001}
    assert all([x["step"] for x in r["records"]] == [0, 300, 600, 900, 1000] for r in runs)


def test_record_count(report):
    assert "40 runs (40 done); 200 records used" in report.splitlines()[0]


@pytest.mark.parametrize("method", list(GOLDEN))
def test_golden_numbers(report, method):
    sections = report.split("## Model selection: ")
    (section,) = [s for s in sections if s.startswith(method + "\n")]
    envs, avg, overall = GOLDEN[method]
    dataset_row, averages_row = erm_rows(section)
    assert dataset_row == [*envs, avg]
    assert averages_row == [overall, avg]
