"""`dgalign train --autolr` end to end on Spurious28 (ERM++, MLP): the plateau lrs reach the
optimizer, the full-data retrain replays them from the same start on `in` + `out` data, its
`fd_` accuracies land in phase 1's records, `--selection autolr` reports them, and a run
interrupted in either phase resumes to the same records and model."""

import csv
import io
import json

import pytest
import torch
from tests.train.helpers import strip_run_specific

from dgalign.algorithms.ermpp import ERMPlusPlus
from dgalign.cli import main
from dgalign.data import get_dataset_class
from dgalign.data.splits import split_environment

LR = 0.2
HPARAMS = {"backbone": "mlp", "mlp_width": 16, "batch_size": 8, "lr": LR, "linear_steps": 2}
STEPS = 60  # phase 1 ends at its third lr decrease, well before


def _argv(out_dir, *extra):
    return [
        "train",
        "--dataset",
        "Spurious28",
        "--algorithm",
        "ERMPlusPlus",
        "--test-envs",
        "2",
        "--output-dir",
        str(out_dir),
        "--hparams",
        json.dumps({**HPARAMS, "sma_start": 0}),
        "--steps",
        str(STEPS),
        "--checkpoint-freq",
        "2",
        "--autolr",
        "--no-progress",
        *extra,
    ]


class Recorder:
    """Wraps ERMPlusPlus.update: per call the full-network optimizer's lr, the weights before
    the update and env 0's inputs; raises KeyboardInterrupt at call `crash_at` (1-based)."""

    def __init__(self) -> None:
        self.lrs, self.weights, self.inputs = [], [], []
        self.crash_at = None
        self.original = ERMPlusPlus.update

    def __call__(self, algorithm, minibatches):
        if self.crash_at is not None and len(self.lrs) + 1 == self.crash_at:
            raise KeyboardInterrupt
        self.lrs.append(algorithm.optimizer.param_groups[0]["lr"])
        self.weights.append(torch.cat([p.detach().flatten() for p in algorithm.parameters()]))
        self.inputs.append(minibatches[0][0].flatten(1).clone())
        return self.original(algorithm, minibatches)


def _records(out_dir):
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted run (its records, the recorded update calls, its directory)."""
    out_dir = tmp_path_factory.mktemp("sweep") / "run"
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ERMPlusPlus, "update", lambda self, mb: recorder(self, mb))
        assert main(_argv(out_dir)) == 0
    return _records(out_dir), recorder, out_dir


def test_plateau_lrs_are_set_on_the_optimizer_and_phase_one_stops_at_the_third_decrease(
    full_run,
):
    """Mutations caught: not applying the schedule's lr to the optimizer, observing during the
    warm-up (before step linear_steps), going on after the third decrease."""
    records, recorder, _ = full_run
    end = records[-1]["step"]
    assert end < STEPS - 1 and (end + 1) * 2 == len(recorder.lrs)
    assert "autolr_val_loss" not in records[0] and "autolr_val_loss" in records[1]
    decreases = [
        i for i in range(1, len(records)) if records[i]["autolr_lr"] != records[i - 1]["autolr_lr"]
    ]
    assert len(decreases) == 3 and decreases[-1] == len(records) - 1
    assert [records[i]["autolr_lr"] for i in decreases] == pytest.approx(
        [LR / 10, LR / 100, LR / 1000]
    )
    for t, used in enumerate(recorder.lrs[: end + 1]):  # the lr set at the last checkpoint before t
        before = [r["autolr_lr"] for r in records if r["step"] < t]
        assert used == pytest.approx(before[-1] if before else LR), t


def test_retrain_replays_the_lrs_from_the_same_start_on_in_and_out_data(full_run):
    """Mutations caught: no replay (or shifted by a checkpoint), a retrain continuing from
    phase 1's weights, a retrain on the `in` splits only, fd_ keys missing from a record."""
    records, recorder, _ = full_run
    n = records[-1]["step"] + 1
    assert recorder.lrs[n:] == recorder.lrs[:n]
    assert torch.equal(recorder.weights[n], recorder.weights[0])
    _, out = split_environment(get_dataset_class("Spurious28")(None)[0], 0, 0, 0.2)
    out_rows = out.batch(torch.arange(len(out)))[0].flatten(1)

    def seen(calls):
        return sum(int((x[:, None] == out_rows[None]).all(2).any()) for x in calls)

    assert seen(recorder.inputs[:n]) == 0 and seen(recorder.inputs[n:]) > 0
    for r in records:
        assert {f"fd_env{i}_in_acc" for i in range(3)} <= set(r)
        assert r["fd_autolr_lr"] == r["autolr_lr"]


def test_selection_autolr_reports_the_retrain_accuracy_of_the_selected_step(full_run, capsys):
    """The checkpoint with the best mean training-env `out` accuracy (the earliest on ties)
    reports its fd_env2_in_acc. Mutation caught: merging the retrain's accuracies into the
    record of another step."""
    records, _, out_dir = full_run
    best = max(records, key=lambda r: (r["env0_out_acc"] + r["env1_out_acc"], -r["step"]))
    capsys.readouterr()
    assert main(["report", str(out_dir.parent), "--selection", "autolr", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    cell = [r for r in rows if r["table"] == "Spurious28" and r["column"] == "2"]
    assert float(cell[0]["mean"]) == pytest.approx(100 * best["fd_env2_in_acc"])
    assert len({r["fd_env2_in_acc"] for r in records}) > 1  # the choice of record matters


def test_run_interrupted_in_both_phases_resumes_to_the_same_records_and_model(
    full_run, tmp_path, monkeypatch
):
    """Killed in phase 1 after the first decrease, at the retrain's first update (phase 1's
    final checkpoint on disk) and in the retrain after its first decrease. Mutations caught:
    the schedule state not in the checkpoint, the lr scale not re-armed on resume, a resume in
    phase 2 that retrains from step 0 or repeats phase 1."""
    records, _, reference_dir = full_run
    n = records[-1]["step"] + 1
    out_dir = tmp_path / "run"
    resumed = Recorder()
    monkeypatch.setattr(ERMPlusPlus, "update", lambda self, mb: resumed(self, mb))
    first = next(r["step"] for r in records if r["autolr_lr"] != LR)  # first decrease
    crash = first + 4  # the update of step first + 3: resumed after the decrease
    for crash_at in (crash, n - (first + 3) + 1, crash):  # phase 1, retrain's first, retrain
        resumed.lrs, resumed.crash_at = [], crash_at
        assert main(_argv(out_dir)) == 130
    resumed.crash_at = None
    assert main(_argv(out_dir)) == 0
    assert strip_run_specific(_records(out_dir)) == strip_run_specific(records)
    assert not (out_dir / "checkpoint.pt").exists()
    saved = torch.load(out_dir / "model.pt", weights_only=True)["model_dict"]
    reference = torch.load(reference_dir / "model.pt", weights_only=True)["model_dict"]
    assert saved.keys() == reference.keys()
    assert all(torch.equal(saved[k], reference[k]) for k in reference)


def test_autolr_with_swad_is_refused_on_one_line_before_training(tmp_path, capsys):
    """Mutation caught: the loop not calling the --autolr checks."""
    assert main(_argv(tmp_path / "run", "--swad")) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("dgalign: error: --autolr cannot be combined with --swad")
        and "\n" not in err
    )
    assert not (tmp_path / "run" / "results.jsonl").exists()
