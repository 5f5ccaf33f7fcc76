"""SWAD: the loss-valley rule on a known loss curve, the averaged weights, and `--swad`
through the real loop (records unchanged, exact resume, model_swad.pt)."""

import json

import pytest
import torch
from tests.train.helpers import strip_run_specific

from dgalign.algorithms.erm import ERM
from dgalign.runs.directory import RunDirectory
from dgalign.train import RunConfig, run_training
from dgalign.train.swad import LossValley, RunningMean, Segment

#: Segment k has weight k and this validation loss: a descent, a valley from segment 4 with
#: threshold 1.3 * mean(1.0, 1.1, 1.2) = 1.43, then a rise from segment 10.
LOSSES = [5.0, 4.0, 3.0, 2.0, 1.0, 1.1, 1.2, 1.05, 1.1, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]


def _segment(k: int) -> Segment:
    return Segment(10 * k, 10 * k + 9, LOSSES[k], {"w": torch.tensor([float(k)])})


def _run(n: int) -> LossValley:
    valley = LossValley()
    for k in range(n):
        valley.update(_segment(k))
    return valley


def test_valley_is_detected_and_averaged_as_cha_et_al():
    """Segments 4..9 (mean weight 6.5): 4 converges (min of 4, 5, 6), 3 is above the threshold,
    and the window starting at 10 has no loss below it, so the valley dies there. Mutations
    caught: converging on the newest minimum, a threshold on the minimum loss, or averaging
    segments after the valley's end."""
    valley = _run(len(LOSSES))
    assert valley.converge_step == 49 and valley.threshold == pytest.approx(1.43)
    assert valley.dead
    average = valley.finish()
    assert (average.count, average.start, average.end) == (6, 40, 99)
    torch.testing.assert_close(average.weights["w"], torch.tensor([6.5], dtype=torch.float64))


def test_segments_left_at_the_end_join_while_their_window_stays_low():
    valley = _run(11)  # training ends inside the valley: the end-of-run pass adds 6..9
    assert not valley.dead
    average = valley.finish()
    assert (average.count, average.start, average.end) == (6, 40, 99)


def test_no_valley_gives_the_last_segment():
    valley = _run(4)  # losses still falling
    assert valley.converge_step is None
    average = valley.finish()
    assert average.count == 1 and average.weights["w"].item() == 3.0


def test_valley_state_round_trips():
    valley = _run(9)
    restored = LossValley.from_state(valley.state())
    for k in range(9, len(LOSSES)):
        valley.update(_segment(k))
        restored.update(_segment(k))
    assert restored.finish().weights["w"].item() == valley.finish().weights["w"].item()


def test_running_mean():
    mean = RunningMean()
    for k in range(4):
        mean.add({"w": torch.tensor([float(k)])}, k, k)
    assert mean.weights["w"].item() == 1.5 and (mean.start, mean.end) == (0, 3)


def _config(tmp_path, name, swad, **kw):
    return RunConfig(
        dataset="Spurious28",
        algorithm="ERM",
        output_dir=str(tmp_path / name),
        test_envs=[2],
        hparams=json.dumps({"backbone": "mlp", "mlp_width": 16, "batch_size": 8, "lr": 3e-4}),
        steps=41,
        checkpoint_freq=4,
        swad=swad,
        **kw,
    )


def test_swad_run_keeps_the_records_resumes_exactly_and_saves_the_average(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    plain = run_training(_config(tmp_path, "plain", False), progress=False).records
    full = run_training(_config(tmp_path, "full", True), progress=False).records
    last = full[-1]
    for key in plain[-1]:
        if key.startswith("env"):
            assert last[key] == plain[-1][key]  # --swad never changes the trained model
    assert {f"swad_env{i}_in_acc" for i in range(3)} <= set(last)
    assert last["swad_converged"] in (0.0, 1.0) and last["swad_n_averaged"] >= 1
    assert all("swad_val_loss" in r for r in full)
    assert (tmp_path / "full" / "model_swad.pt").exists()

    calls = {"n": 0}
    original = ERM.update

    def crash(self, minibatches):
        calls["n"] += 1
        if calls["n"] > 22:
            raise KeyboardInterrupt
        return original(self, minibatches)

    monkeypatch.setattr(ERM, "update", crash)
    config = _config(tmp_path, "resumed", True)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    monkeypatch.setattr(ERM, "update", original)
    resumed = run_training(config, progress=False).records
    assert strip_run_specific(resumed) == strip_run_specific(full)
    saved = torch.load(RunDirectory(config.output_dir).path / "model_swad.pt", weights_only=True)
    reference = torch.load(tmp_path / "full" / "model_swad.pt", weights_only=True)
    for key, value in reference["model_dict"].items():
        assert torch.equal(saved["model_dict"][key], value), key
