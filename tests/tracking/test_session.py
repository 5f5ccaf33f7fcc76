"""Metric names, the one-line errors of a missing extra, and a failing tracker that is
reported once while the run goes on with all its records."""

import sys

import pytest
from tests.train.helpers import strip_run_specific

from dgalign.cli import main
from dgalign.errors import ConfigError
from dgalign.runs.directory import RunDirectory
from dgalign.tracking import (
    Tracking,
    TrackingError,
    check_loggers,
    metric_name,
    record_point,
    session,
)


def test_metric_names_group_the_record_keys():
    assert metric_name("env0_in_acc") == "acc/env0_in"
    assert metric_name("env12_out_acc") == "acc/env12_out"
    assert metric_name("swa_env1_out_acc") == "swa_acc/env1_out"
    assert metric_name("hess_dist") == "curvature/hess_dist"
    assert metric_name("mem_gb") == "system/mem_gb"
    assert metric_name("step_time") == "system/step_time"
    assert metric_name("loss") == "train/loss"
    step, scalars = record_point(
        {"step": 7, "args": {"a": 1}, "hparams": {"lr": 1.0}, "loss": 2, "flag": True, "s": "x"}
    )
    assert step == 7 and scalars == {"train/loss": 2.0}


def block(monkeypatch, *packages):
    """Make `packages` look uninstalled (as after `pip install dgalign` without extras)."""
    for name in packages:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_extra_is_a_one_line_error_naming_it(
    tmp_path, monkeypatch, capsys, make_train_argv
):
    block(monkeypatch, "wandb", "mlflow", "tensorboard")
    with pytest.raises(ConfigError, match=r"pip install 'dgalign\[mlflow\]'"):
        check_loggers(["mlflow"])
    run_dir = tmp_path / "r"
    assert main(make_train_argv(run_dir, 3, 1, ["wandb"])) == 2
    err = capsys.readouterr().err
    assert err == (
        "dgalign: error: --logger wandb needs the wandb package, which is not installed: "
        "pip install 'dgalign[wandb]'\n"
    )
    assert not run_dir.exists()
    sweep = [
        "sweep",
        "launch",
        "--output-dir",
        str(tmp_path / "s"),
        "--datasets",
        "Spurious28",
        "--algorithms",
        "ERM",
        "--n-hparams",
        "1",
        "--n-trials",
        "1",
        "--yes",
        "--logger",
        "tensorboard",
    ]
    assert main(sweep) == 2
    assert "dgalign[tensorboard]" in capsys.readouterr().err
    # without any --logger the extras are never imported
    assert main(make_train_argv(run_dir, 3, 1, [])) == 0


class Failing:
    """A backend that fails at its `fail_at`-th call of `log`."""

    name = "tensorboard"

    def __init__(self, fail_at):
        self.fail_at, self.calls, self.finished = fail_at, 0, []

    def start(self, info, history):
        pass

    def log(self, point):
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("disk full\nsecond line")

    def finish(self, status):
        self.finished.append(status)


def test_failing_tracker_is_reported_once_and_the_run_keeps_every_record(
    tmp_path, monkeypatch, capsys, make_train_argv
):
    fake = Failing(fail_at=2)
    monkeypatch.setattr(session, "make_logger", lambda name: fake)
    run_dir = tmp_path / "r"
    assert main(make_train_argv(run_dir, 25, 5, ["tensorboard"])) == 0
    assert fake.calls == 2 and fake.finished == ["FAILED"]  # off after its failure
    err = capsys.readouterr().err
    assert err.count("tensorboard logging failed") == 1
    assert "OSError: disk full" in err and "second line" not in err
    assert (run_dir / "err.txt").read_text().count("tensorboard logging failed") == 1
    plain = tmp_path / "plain"
    assert main(make_train_argv(plain, 25, 5, [])) == 0
    records = RunDirectory(run_dir).read_records()
    assert [r["step"] for r in records] == [0, 5, 10, 15, 20, 24]
    assert strip_run_specific(records) == strip_run_specific(RunDirectory(plain).read_records())


def test_a_tracker_that_cannot_start_is_reported_and_strict_tracking_raises(monkeypatch):
    class Broken(Failing):
        name = "mlflow"

        def start(self, info, history):
            raise RuntimeError("no route to host")

    monkeypatch.setattr(session, "make_logger", lambda name: Broken(1))
    tracking = Tracking(["mlflow"])
    tracking.start(object(), [])
    tracking.log((0, {"a": 1.0}))
    tracking.finish()
    assert tracking.failed == {"mlflow": "RuntimeError: no route to host"}
    with pytest.raises(TrackingError, match=r"mlflow failed .*no route to host"):
        Tracking(["mlflow"], strict=True).start(object(), [])
