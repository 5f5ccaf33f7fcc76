"""Runs made with `--swad` get an "<algorithm> + SWAD" row from their last record."""

from pathlib import Path

import pytest

from dgalign.report.runs import Run, algorithm_names, with_swa_runs
from dgalign.runs.state import JobState
from dgalign.selection import IIDAccuracySelectionMethod


def _record(step, acc, swad=None):
    args = {"dataset": "Debug28", "algorithm": "ERM", "test_envs": [2], "trial_seed": 0,
            "hparams_seed": 0}  # fmt: skip
    record = {"args": args, "step": step}
    for i in range(3):
        record[f"env{i}_in_acc"] = record[f"env{i}_out_acc"] = acc
        if swad is not None:
            record[f"swad_env{i}_in_acc"] = record[f"swad_env{i}_out_acc"] = swad
    return record


def test_swad_twin_holds_the_last_record_only():
    records = [_record(0, 0.5), _record(5, 0.6), _record(9, 0.7, swad=0.9)]
    run = Run(Path("r"), records[0]["args"], JobState.DONE, records)
    runs = with_swa_runs([run])
    assert algorithm_names(runs) == ["ERM", "ERM + SWAD"]
    twin = next(r for r in runs if r.key[1] == "ERM + SWAD")
    assert [r["step"] for r in twin.records] == [9] and twin.records[0]["env2_in_acc"] == 0.9
    choice = IIDAccuracySelectionMethod.run_acc(twin.records)
    assert choice.test_acc == pytest.approx(0.9)
    assert with_swa_runs(runs) == runs  # idempotent
