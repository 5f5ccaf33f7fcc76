"""`dgalign report` reads DomainBed's own sweep directories: hash-named run dirs holding
results.jsonl (DomainBed's record fields and `args` keys), out.txt, err.txt, model.pkl and
`done`; no run.json, no lock, no job.json."""

import json
import math

import pytest

from dgalign.cli import main
from dgalign.report import build_tables, load_runs
from dgalign.runs.state import JobState
from dgalign.selection import IIDAccuracySelectionMethod
from dgalign.sweep.jobs import held_out_sets, job_hash


def domainbed_run(root, algorithm, trial, hseed, test_envs, finished=True, crashed=False):
    """A run directory as DomainBed's train.py leaves it (VLCS, 4 environments)."""
    train_args = {
        "dataset": "VLCS",
        "algorithm": algorithm,
        "test_envs": test_envs,
        "holdout_fraction": 0.2,
        "hparams_seed": hseed,
        "data_dir": "/datasets",
        "task": "domain_generalization",
        "trial_seed": trial,
        "seed": 12345,
    }
    path = root / job_hash(train_args)
    path.mkdir(parents=True)
    args = {
        **train_args,
        "output_dir": str(path),
        "checkpoint_freq": None,
        "hparams": None,
        "save_model_every_checkpoint": False,
        "skip_model_save": False,
        "steps": None,
        "uda_holdout_fraction": 0,
    }
    lines = []
    for step in (0, 300) if finished else (0,):
        record = {
            "args": args,
            "epoch": step / 50,
            "hparams": {"lr": 5e-5 * (1 + hseed)},
            "loss": 0.4,
            "mem_gb": 3.2,
            "step": step,
            "step_time": 0.2,
        }
        for i in range(4):
            acc = 0.5 + 0.01 * i + 0.02 * trial + 0.03 * hseed - (0.1 if step == 0 else 0)
            record[f"env{i}_in_acc"] = acc
            record[f"env{i}_out_acc"] = acc - 0.005
        lines.append(json.dumps(record, sort_keys=True) + "\n")
    (path / "results.jsonl").write_text("".join(lines))
    (path / "out.txt").write_text("Environment:\n\tPython: 3.8\n")
    err = (
        "Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n" if crashed else ""
    )
    (path / "err.txt").write_text(err)
    if finished:
        (path / "model.pkl").write_bytes(b"\x80\x04.")
        (path / "done").write_text("done")
    return path


@pytest.fixture
def domainbed_sweep(tmp_path):
    root = tmp_path / "domainbed_sweep"
    for trial in (0, 1):
        for envs in held_out_sets(4, single_only=False):
            for hseed in (0, 1):
                unfinished = (trial, envs, hseed) == (1, [3], 1)
                domainbed_run(root, "ERM", trial, hseed, envs, not unfinished, unfinished)
    # DomainBed appends to results.jsonl: a run killed mid-write leaves half a line
    victim = next(p for p in sorted(root.iterdir()) if (p / "done").exists())
    with open(victim / "results.jsonl", "a") as handle:
        handle.write('{"args": {"algor')
    return root


def test_reads_domainbed_runs(domainbed_sweep, caplog):
    runs = load_runs(domainbed_sweep)
    assert f"skipped 1 unreadable line(s) of results.jsonl under {domainbed_sweep}" in caplog.text
    assert len(runs) == 40
    states = [r.state for r in runs]
    assert states.count(JobState.DONE) == 39 and states.count(JobState.FAILED) == 1
    table = build_tables(runs, IIDAccuracySelectionMethod)[0]
    assert table.col_labels == ["C", "L", "S", "V", "Avg"]
    row = table.cells[0]
    # h = 1 at step 300: 0.5 + 0.01 e + 0.02 t + 0.03; trials 0.02 apart
    assert row[0].mean == pytest.approx(54.0)
    assert row[0].err == pytest.approx(100 * 0.01 / math.sqrt(2))
    # env V, trial 1: the h1 run crashed, so h0 there (0.55) and h1 in trial 0 (0.56)
    assert row[3].mean == pytest.approx(55.5)
    assert table.notes == [
        "ERM, test env V: trial 1: selected among finished runs only: 1 failed job(s) "
        "(test envs [3])"
    ]


def test_report_cli_on_domainbed_sweep(domainbed_sweep, capsys):
    assert main(["report", str(domainbed_sweep), "--selection", "loo"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err == (
        f"skipped 1 unreadable line(s) of results.jsonl under {domainbed_sweep}\n"
    )
    assert "## Model selection: leave-one-domain-out cross-validation" in out
    assert "| ERM       | 54.0 +/- 0.7 |" in out
