"""Environment of the tracking tests: no W&B key or login (so W&B runs offline, as it does for
a user without one), W&B's and MLflow's settings and caches inside the test's directory."""

import pytest

FAST = '{"backbone": "mlp", "mlp_width": 32, "batch_size": 16}'


@pytest.fixture
def tracker_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    for name in (
        "WANDB_API_KEY",
        "WANDB_MODE",
        "WANDB_PROJECT",
        "WANDB_BASE_URL",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "WANDB_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))  # no ~/.netrc: no W&B login
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return home


def train_argv(run_dir, steps, freq, loggers, extra=()):
    argv = [
        "train",
        "--dataset",
        "Spurious28",
        "--algorithm",
        "ERM",
        "--test-envs",
        "2",
        "--output-dir",
        str(run_dir),
        "--steps",
        str(steps),
        "--checkpoint-freq",
        str(freq),
        "--hparams",
        FAST,
        "--no-progress",
        *extra,
    ]
    for name in loggers:
        argv += ["--logger", name]
    return argv


@pytest.fixture
def make_train_argv():
    return train_argv
