"""Tiny finished Spurious28 runs (MLP backbone) shared by the analysis tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dgalign.train import RunConfig, run_training

HP = {"backbone": "mlp", "mlp_width": 16, "batch_size": 16}
FGMIX_HP = {**HP, "start_step": 2, "n_directions": 4, "mixup_batch": 8, "tau_init": 5.0}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _train(root: Path, name: str, algorithm: str, hparams: dict, **kw) -> Path:
    config = RunConfig(
        dataset="Spurious28",
        algorithm=algorithm,
        output_dir=str(root / name),
        test_envs=[2],
        hparams=json.dumps(hparams),
        steps=8,
        checkpoint_freq=4,
        **kw,
    )
    run_training(config, progress=False)
    return root / name


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """`erm` (lr 0, so its final weights are its initialisation), `fgmix` (with --swa) and a
    folder `path` of model files standing in for checkpoint copies of an optimisation path."""
    root = tmp_path_factory.mktemp("analysis_runs")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {
            "erm": _train(root, "erm", "ERM", {**HP, "lr": 0.0}),
            "fgmix": _train(root, "fgmix", "FGMix", FGMIX_HP, swa=True, swa_start=1),
        }
    finally:
        torch.set_num_threads(previous)
    path = root / "path"
    path.mkdir()
    shutil.copy(out["fgmix"] / "model_swa.pt", path / "a.pt")
    shutil.copy(out["fgmix"] / "model.pt", path / "b.pt")
    out["path"] = path
    return out
