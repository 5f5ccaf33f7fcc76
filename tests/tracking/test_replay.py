"""Tracking of sweeps and reproductions, and `dgalign runs export` of run directories (ours,
DomainBed's, a reproduction's) after the fact, read back with the trackers' readers."""

import json

import pytest
from tests.experiments.conftest import synthetic_mnist
from tests.tracking.conftest import FAST
from tests.tracking.readers import mlflow_runs, mlflow_scalars, tensorboard_scalars

from dgalign.cli import main
from dgalign.experiments import cmnist_data
from dgalign.experiments.cmnist_data import DataConfig
from dgalign.experiments.cmnist_run import ReproduceConfig, run_reproduction
from dgalign.experiments.cmnist_train import Protocol
from dgalign.runs.directory import RunDirectory
from dgalign.tracking import record_point
from dgalign.tracking.identity import restart_points

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def series(points):
    out = {}
    for step, scalars in points:
        for key, value in scalars.items():
            out.setdefault(key, []).append((step, value))
    return out


def tb_matches(log_dir, points):
    """TensorBoard's scalars of `log_dir` are `points` (each step once, float32 values)."""
    got, want = tensorboard_scalars(log_dir), series(points)
    assert set(got) == set(want)
    for key, values in want.items():
        assert [s for s, _ in got[key]] == [s for s, _ in values], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in values], rel=1e-6)


def domainbed_run(root, name, test_env, done=True):
    """A run directory as DomainBed's train.py leaves it (no run.json; args in each record)."""
    path = root / name
    path.mkdir(parents=True)
    args = {
        "dataset": "VLCS",
        "algorithm": "CORAL",
        "test_envs": [test_env],
        "hparams_seed": 3,
        "trial_seed": 1,
        "seed": 7,
        "output_dir": str(path),
        "holdout_fraction": 0.2,
    }
    lines = []
    for step in (0, 300, 600):
        record = {
            "args": args,
            "hparams": {"lr": 5e-5, "mmd_gamma": 1.0},
            "step": step,
            "epoch": step / 100,
            "loss": 1.0 / (step + 1),
            "mem_gb": 3.5,
            "step_time": 0.2,
            **{
                f"env{i}_{s}_acc": 0.5 + i / 10 + step / 6000
                for i in range(4)
                for s in ("in", "out")
            },
        }
        lines.append(json.dumps(record))
    (path / "results.jsonl").write_text("\n".join(lines) + "\n" + '{"half a li')
    if done:
        (path / "done").write_text("done\n")
    return path


def test_export_domainbed_sweep_twice_holds_each_record_once(tmp_path, tracker_env, capsys):
    sweep = tmp_path / "vlcs"
    runs = [domainbed_run(sweep, "a" * 32, 0), domainbed_run(sweep, "b" * 32, 1, done=False)]
    for _ in range(2):
        assert main(["runs", "export", str(sweep), "--to", "tensorboard", "--to", "mlflow"]) == 0
    out = capsys.readouterr().out
    assert "exported 2 run(s), 6 record(s)" in out
    found = {r.data.tags["dgalign.run_hash"]: r for r in mlflow_runs(sweep / "mlruns")}
    assert set(found) == {"a" * 32, "b" * 32}
    assert found["a" * 32].info.status == "FINISHED" and found["b" * 32].info.status == "KILLED"
    assert found["a" * 32].data.tags["dgalign.algorithm"] == "CORAL"
    assert found["a" * 32].data.params["hp.mmd_gamma"] == "1.0"
    for run in runs:
        lines = (run / "results.jsonl").read_text().splitlines()[:3]
        points = [record_point(json.loads(line)) for line in lines]
        tb_matches(run, points)
        mlflow_id = found[run.name].info.run_id
        assert mlflow_scalars(sweep / "mlruns", mlflow_id) == series(points)


def test_export_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["runs", "export", str(tmp_path / "empty"), "--to", "tensorboard"]) == 2
    assert capsys.readouterr().err.startswith("dgalign: error: no runs in")
    assert main(["runs", "export", str(tmp_path / "nope"), "--to", "tensorboard"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_sweep_jobs_log_to_the_trackers(tmp_path, tracker_env):
    argv = [
        "sweep",
        "launch",
        "--output-dir",
        str(tmp_path / "sweep"),
        "--datasets",
        "Spurious28",
        "--algorithms",
        "ERM",
        "--n-hparams",
        "1",
        "--n-trials",
        "1",
        "--single-test-envs",
        "--steps",
        "6",
        "--checkpoint-freq",
        "2",
        "--hparams",
        FAST,
        "--yes",
        "--logger",
        "tensorboard",
        "--logger",
        "mlflow",
    ]
    assert main(argv) == 0
    run_dirs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "done").exists())
    assert len(run_dirs) == 3
    by_hash = {
        r.data.tags["dgalign.run_hash"]: r for r in mlflow_runs(tmp_path / "sweep" / "mlruns")
    }
    assert set(by_hash) == {p.name for p in run_dirs}
    for run_dir in run_dirs:
        records = RunDirectory(run_dir).read_records()
        points = [record_point(r) for r in records]
        tb_matches(run_dir, points)
        run = by_hash[run_dir.name]
        assert run.data.tags["dgalign.test_envs"] == str(records[0]["args"]["test_envs"][0])
        assert mlflow_scalars(tmp_path / "sweep" / "mlruns", run.info.run_id) == series(points)


def test_reproduce_logs_each_restart_and_export_adds_nothing(tmp_path, tracker_env, monkeypatch):
    images, digits = synthetic_mnist(50300)
    monkeypatch.setattr(cmnist_data, "load_mnist_train", lambda data_dir: (images, digits))
    config = ReproduceConfig(
        output_dir=str(tmp_path / "repro"),
        methods=["ERM", "IRM"],
        restarts=2,
        data=DataConfig(pool=200),
        protocol=Protocol(steps=4, anneal_iters=2, hidden=8),
        quick=True,
        dynamics_every=2,
        fgsm_eps=[0.0],
        progress=False,
        loggers=["tensorboard", "mlflow"],
    )
    root = run_reproduction(config)
    assert main(["runs", "export", str(root), "--to", "tensorboard", "--to", "mlflow"]) == 0
    runs = {r.info.run_name: r for r in mlflow_runs(root / "mlruns")}
    assert set(runs) == {"ERM restart 0", "ERM restart 1", "IRM restart 0", "IRM restart 1"}
    for method in ("ERM", "IRM"):
        for k in (0, 1):
            record = json.loads((root / method / f"restart{k}.json").read_text())
            points = restart_points(record)
            assert [s for s, _ in points] == [0, 1, 2, 3]
            assert "eval/hessian_distance" in points[2][1] and "train/penalty" in points[1][1]
            tb_matches(root / method / f"restart{k}", points)
            run = runs[f"{method} restart {k}"]
            assert run.data.tags["dgalign.algorithm"] == method
            assert run.data.tags["dgalign.trial_seed"] == str(k)
            assert mlflow_scalars(root / "mlruns", run.info.run_id) == series(points)
