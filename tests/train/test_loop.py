"""The training loop: records, determinism, resume, finished runs, divergence."""

import json

import pytest
import torch
from tests.train.helpers import start_holder, strip_run_specific

from dgalign.algorithms.erm import ERM
from dgalign.algorithms.registry import _REGISTRY
from dgalign.errors import ConfigError, RunDirError, TrainingDiverged
from dgalign.runs.directory import RunDirectory
from dgalign.train import RunConfig, run_training


def _config(tmp_path, fast_hparams, name="run", **kw):
    args = dict(
        dataset="Spurious28",
        algorithm="ERM",
        output_dir=str(tmp_path / name),
        test_envs=[2],
        hparams=fast_hparams,
        steps=25,
        checkpoint_freq=5,
    )
    args.update(kw)
    return RunConfig(**args)


def test_records_have_domainbed_fields(tmp_path, fast_hparams):
    result = run_training(_config(tmp_path, fast_hparams), progress=False)
    assert result.status == "completed"
    rundir = RunDirectory(result.output_dir)
    records = rundir.read_records()
    assert [r["step"] for r in records] == [0, 5, 10, 15, 20, 24]
    for r in records:
        for key in (
            "args",
            "hparams",
            "step",
            "epoch",
            "step_time",
            "mem_gb",
            "loss",
            "hess_dist",
            "grad_dist",
        ):
            assert key in r
        for i in range(3):
            assert 0.0 <= r[f"env{i}_in_acc"] <= 1.0 and 0.0 <= r[f"env{i}_out_acc"] <= 1.0
        assert r["args"]["test_envs"] == [2] and r["args"]["dataset"] == "Spurious28"
    assert rundir.is_done() and rundir.model.exists() and not rundir.checkpoint.exists()
    model = torch.load(rundir.model, weights_only=True)
    assert model["model_num_classes"] == 2 and "model_dict" in model
    assert "step 24" in rundir.out.read_text()


def test_same_arguments_give_identical_records(tmp_path, fast_hparams):
    a = run_training(_config(tmp_path, fast_hparams, "a"), progress=False).records
    b = run_training(_config(tmp_path, fast_hparams, "b"), progress=False).records
    assert strip_run_specific(a) == strip_run_specific(b)
    c = run_training(_config(tmp_path, fast_hparams, "c", seed=1), progress=False).records
    assert strip_run_specific(a) != strip_run_specific(c)


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path, fast_hparams, monkeypatch):
    full = run_training(_config(tmp_path, fast_hparams, "full"), progress=False).records

    calls = {"n": 0}
    original = ERM.update

    def crash_after_12(self, minibatches):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return original(self, minibatches)

    monkeypatch.setattr(ERM, "update", crash_after_12)
    config = _config(tmp_path, fast_hparams, "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    rundir = RunDirectory(config.output_dir)
    assert [r["step"] for r in rundir.read_records()] == [0, 5, 10]
    assert rundir.checkpoint.exists() and not rundir.is_done()
    monkeypatch.setattr(ERM, "update", original)
    resumed = run_training(config, progress=False).records
    assert strip_run_specific(resumed) == strip_run_specific(full)
    assert "resuming" in rundir.out.read_text()


def test_finished_run_is_not_run_again(tmp_path, fast_hparams, capsys):
    config = _config(tmp_path, fast_hparams)
    run_training(config, progress=False)
    before = RunDirectory(config.output_dir).results.read_text()
    result = run_training(config, progress=False)
    assert result.status == "already_done"
    assert "finished run" in capsys.readouterr().err
    assert RunDirectory(config.output_dir).results.read_text() == before


def test_directory_of_a_different_run_is_refused(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams, steps=6)
    with pytest.raises(KeyboardInterrupt), _interrupt_at(3):
        run_training(config, progress=False)
    other = _config(tmp_path, fast_hparams, steps=6, seed=5)
    with pytest.raises(RunDirError, match=r"different run .*seed"):
        run_training(other, progress=False)
    assert RunDirectory(config.output_dir).read_records()  # nothing lost


def test_unknown_directory_contents_are_refused(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(RunDirError, match="unknown run"):
        run_training(config, progress=False)
    assert (tmp_path / "run" / "results.jsonl").read_text() == '{"step": 0}\n'


def test_nan_loss_stops_with_step_and_keeps_records(tmp_path, fast_hparams, monkeypatch):
    class NaNAt12(ERM):
        DESCRIPTION = "test only"
        n = 0

        def update(self, minibatches):
            out = super().update(minibatches)
            NaNAt12.n += 1
            return {"loss": float("nan")} if NaNAt12.n == 12 else out

    monkeypatch.setitem(_REGISTRY, "NaNAt12", NaNAt12)
    config = _config(tmp_path, fast_hparams, algorithm="NaNAt12")
    with pytest.raises(TrainingDiverged, match="loss became nan at step 11") as info:
        run_training(config, progress=False)
    assert "\n" not in str(info.value)
    rundir = RunDirectory(config.output_dir)
    assert [r["step"] for r in rundir.read_records()] == [0, 5, 10]
    assert "became nan" in rundir.err.read_text()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"test_envs": [3]}, "out of range"),
        ({"test_envs": [0, 1, 2]}, "no training environment"),
        ({"test_envs": [1, 1]}, "duplicates"),
        ({"holdout_fraction": 1.5}, "holdout-fraction"),
        ({"steps": 0}, "--steps"),
        ({"dataset": "MNISTT"}, "unknown dataset"),
        ({"algorithm": "ERN"}, "unknown algorithm"),
        ({"hparams": '{"lr": '}, "not valid JSON"),
        ({"hparams": '{"momentum": 0.9}'}, "unknown hyper-parameter"),
    ],
)
def test_bad_configuration_is_rejected_before_anything_is_written(
    tmp_path, fast_hparams, changes, message
):
    config = _config(tmp_path, fast_hparams, **changes)
    with pytest.raises(ConfigError, match=message):
        run_training(config, progress=False)
    assert not (tmp_path / "run").exists()


class _interrupt_at:
    """Context manager: ERM.update raises KeyboardInterrupt on its n-th call."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.original = ERM.update
        calls = {"n": 0}
        original = self.original
        n = self.n

        def update(self_, minibatches):
            calls["n"] += 1
            if calls["n"] >= n:
                raise KeyboardInterrupt
            return original(self_, minibatches)

        ERM.update = update
        return self

    def __exit__(self, *exc):
        ERM.update = self.original
        return False


def test_results_file_is_valid_jsonl(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams)
    run_training(config, progress=False)
    for line in RunDirectory(config.output_dir).results.read_text().splitlines():
        json.loads(line)


def test_a_held_lock_refuses_a_second_run_and_a_killed_owner_releases_it(tmp_path, fast_hparams):
    config = _config(tmp_path, fast_hparams)
    lock = tmp_path / "run" / "lock"
    lock.parent.mkdir()
    holder = start_holder(lock)
    try:
        with pytest.raises(RunDirError, match=f"being run by pid {holder.pid}"):
            run_training(config, progress=False)
    finally:
        holder.kill()  # SIGKILL: the lock file stays, the kernel drops the lock
        holder.wait()
    assert lock.exists()
    assert run_training(config, progress=False).status == "completed"
    assert not lock.exists()
