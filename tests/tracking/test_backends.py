"""Each backend against its own store: what `start` logs when the store already holds part of
the history (a crash between a record and the tracker's write, a half-written record), read
back with the tracker's own reader."""

import pytest
from tests.tracking.readers import (
    mlflow_runs,
    mlflow_scalars,
    tensorboard_scalars,
    wandb_history,
    wandb_offline_runs,
)

from dgalign.tracking import RunInfo


def info(tmp_path, name="run"):
    log_dir = tmp_path / "sweep" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    return RunInfo(
        log_dir=log_dir,
        key=str(log_dir),
        name=name,
        group="sweep",
        store_dir=tmp_path / "sweep",
        tags={"run_hash": "0" * 32, "algorithm": "ERM", "dataset": "Spurious28"},
        params={"hp.lr": 0.001, "arg.test_envs": [2]},
    )


def point(step, shift=0.0):
    return step, {"acc/env0_in": 0.5 + step / 100 + shift, "train/loss": 1.0 / (step + 1)}


def series(points):
    out = {}
    for step, scalars in points:
        for key, value in scalars.items():
            out.setdefault(key, []).append((step, value))
    return out


def test_tensorboard_purges_a_half_written_record_and_skips_what_it_holds(tmp_path):
    pytest.importorskip("tensorboard")
    from dgalign.tracking.tensorboard_logger import TensorBoardLogger

    run = info(tmp_path)
    first = TensorBoardLogger()
    first.start(run, [])
    first.log(point(0))
    first.log(point(5))
    step, scalars = point(10, shift=0.25)  # the killed attempt's value of step 10 ...
    first.writer.add_scalar("acc/env0_in", scalars["acc/env0_in"], step)  # ... half written
    first.writer.close()  # the process died here

    history = [point(0), point(5), point(10)]  # the resumed run recomputed step 10
    second = TensorBoardLogger()
    second.start(run, history)
    second.log(point(15))
    second.finish("FINISHED")
    got = tensorboard_scalars(run.log_dir)
    expected = series([*history, point(15)])
    assert {k: [s for s, _ in v] for k, v in got.items()} == {
        k: [s for s, _ in v] for k, v in expected.items()
    }
    assert got["acc/env0_in"][2][1] == pytest.approx(point(10)[1]["acc/env0_in"], rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run.log_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["algorithm"].string_value == "ERM"
    assert start.hparams["hp.lr"].number_value == 0.001
    assert "run/identity/text_summary" in acc.Tags()["tensors"]


def test_mlflow_logs_only_the_metric_steps_it_lacks(tmp_path, tracker_env):
    pytest.importorskip("mlflow")
    from dgalign.tracking.mlflow_logger import MlflowLogger

    run = info(tmp_path)
    first = MlflowLogger()
    first.start(run, [])
    first.log(point(0))
    first._log(5, {"acc/env0_in": point(5)[1]["acc/env0_in"]})  # killed mid-record

    second = MlflowLogger()
    second.start(run, [point(0), point(5)])
    second.log(point(10))
    second.finish("FINISHED")
    (found,) = mlflow_runs(tmp_path / "sweep" / "mlruns")
    assert found.info.run_id == first.run_id and found.info.status == "FINISHED"
    assert found.data.params == {"hp.lr": "0.001", "arg.test_envs": "[2]"}
    assert found.data.tags["dgalign.algorithm"] == "ERM"
    assert mlflow_scalars(tmp_path / "sweep" / "mlruns", found.info.run_id) == series(
        [point(0), point(5), point(10)]
    )


def test_mlflow_store_from_environment(tmp_path, tracker_env, monkeypatch):
    pytest.importorskip("mlflow")
    from dgalign.tracking.mlflow_logger import MlflowLogger

    store = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    logger = MlflowLogger()
    logger.start(info(tmp_path), [point(0)])
    logger.finish("FINISHED")
    assert not (tmp_path / "sweep" / "mlruns").exists()
    (found,) = mlflow_runs(store)
    assert logger.client.get_experiment(found.info.experiment_id).name == "mine"


def test_wandb_is_offline_without_a_key_and_a_resumed_run_holds_the_whole_history(
    tmp_path, tracker_env
):
    pytest.importorskip("wandb")
    from dgalign.tracking.wandb_logger import WandbLogger, mode

    assert mode() == "offline"
    run = info(tmp_path)
    first = WandbLogger()
    first.start(run, [])
    first.log(point(0))
    first.finish("FAILED")
    second = WandbLogger()
    second.start(run, [point(0), point(5)])
    second.log(point(10))
    second.finish("FINISHED")
    import wandb

    wandb.teardown()  # W&B's service writes the run file out when it stops (as at exit)
    offline = wandb_offline_runs(run.log_dir)
    assert len(offline) == 2 and first.run.id == second.run.id
    assert wandb_history(offline[-1]) == series([point(0), point(5), point(10)])


def test_wandb_mode_follows_the_key_and_the_environment(tracker_env, monkeypatch):
    from dgalign.tracking.wandb_logger import mode

    (tracker_env / ".netrc").write_text("machine api.wandb.ai login user password k\n")
    (tracker_env / ".netrc").chmod(0o600)
    assert mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert mode() == "disabled"
