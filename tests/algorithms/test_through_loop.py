"""The algorithms added for DomainBed parity go through the real training loop: two
checkpoints, an interruption after the first, and a resume that gives the records of an
uninterrupted run. Switching steps are set early so the resumed part runs every phase."""

import json

import pytest
import torch
from tests.train.helpers import strip_run_specific

from dgalign import algorithms
from dgalign.train import RunConfig, run_training

EARLY = {
    "ERMPlusPlus": {"linear_steps": 2, "sma_start": 3},
    "TRM": {"iters": 2},
    "IB_ERM": {"ib_penalty_anneal_iters": 2},
    "IB_IRM": {"ib_penalty_anneal_iters": 2, "irm_penalty_anneal_iters": 3},
    "EQRM": {"eqrm_burnin_iters": 2},
    "RDM": {"rdm_penalty_anneal_iters": 2},
    "DDG": {"ddg_pretrain_steps": 3},  # the interruption falls in stage 2
}
NEW = [
    "ERMPlusPlus", "TRM", "Transfer", "IB_ERM", "IB_IRM", "CAD", "CondCAD",
    "CausIRL_CORAL", "CausIRL_MMD", "EQRM", "RDM", "ADRMX", "URM",
    "CNSN", "MetaMixup", "L2AOT", "DDG",
]  # fmt: skip


def _config(tmp_path, name, algorithm):
    hparams = {"backbone": "mlp", "mlp_width": 16, "batch_size": 8, **EARLY.get(algorithm, {})}
    return RunConfig(
        dataset="Spurious28",
        algorithm=algorithm,
        output_dir=str(tmp_path / name),
        test_envs=[2],
        hparams=json.dumps(hparams),
        steps=7,
        checkpoint_freq=3,
    )


@pytest.mark.parametrize("algorithm", NEW)
def test_two_checkpoints_and_exact_resume(algorithm, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    full = run_training(_config(tmp_path, "full", algorithm), progress=False).records
    assert [r["step"] for r in full] == [0, 3, 6]
    cls = algorithms.get(algorithm)
    original = cls.update
    calls = {"n": 0}

    def crash_after_4(self, minibatches):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return original(self, minibatches)

    monkeypatch.setattr(cls, "update", crash_after_4)
    config = _config(tmp_path, "resumed", algorithm)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    monkeypatch.setattr(cls, "update", original)
    resumed = run_training(config, progress=False).records
    assert strip_run_specific(resumed) == strip_run_specific(full)
