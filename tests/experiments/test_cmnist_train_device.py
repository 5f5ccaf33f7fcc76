"""Every Colored MNIST reproduction row, balanced and with label shift, trained with its
dynamics on a fake accelerator (`tests.device_harness`): no tensor made on the CPU, and no
host sync before the results leave the device after the last step."""

import pytest
import torch
from tests.device_harness import DEVICE, fake, on_fake_device

from dgalign.experiments import cmnist_train
from dgalign.experiments.cmnist_model import init_restart
from dgalign.experiments.cmnist_rows import ABLATIONS, METHODS
from dgalign.experiments.cmnist_train import Protocol, train_restarts

from .conftest import synthetic_restart

TINY = Protocol(steps=3, anneal_iters=1, penalty_weight=50.0, lr=0.01, hidden=8)
ENVS = ("env0", "env1", "test", "gray")
#: Where results leave the device, once per run after the last step: the per-step trace and
#: the trained weights.
TO_HOST = frozenset({"host_lists", "unstack"})


@pytest.mark.parametrize("label_shift", [False, True])
@pytest.mark.parametrize("name", sorted({**METHODS, **ABLATIONS}))
def test_reproduction_rows_stay_on_the_device(name, label_shift, monkeypatch):
    torch.set_num_threads(1)
    data = [synthetic_restart(seed=s) for s in range(2)]
    gen = torch.Generator().manual_seed(0)
    inits = [init_restart(gen, hidden=TINY.hidden) for _ in data]
    real = {e: cmnist_train.stack_env(data, e, torch.float32, "cpu") for e in ENVS}
    with on_fake_device() as report:
        monkeypatch.setattr(
            cmnist_train, "stack_env", lambda _r, e, _d, _dev: tuple(fake(t) for t in real[e])
        )
        fake_inits = [{k: fake(v) for k, v in s.items()} for s in inits]
        out = train_restarts(
            data,
            fake_inits,
            {**METHODS, **ABLATIONS}[name],
            TINY,
            label_shift=label_shift,
            device=DEVICE,
            progress=False,
            dynamics_every=2,
        )
    assert report.wrong_device(TO_HOST) == []
    assert [s for s in report.syncs if s.rsplit("(", 1)[-1].rstrip(")") not in TO_HOST] == []
    assert out.states[0]["w3"].shape == (1, TINY.hidden)
    assert out.records[0]["dynamics"]["step"] == [0, 2]
