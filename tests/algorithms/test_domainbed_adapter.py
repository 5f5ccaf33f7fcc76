"""A class written for DomainBed's contract runs unchanged through `register_domainbed`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dgalign import algorithms
from dgalign.algorithms.domainbed_adapter import register_domainbed
from dgalign.algorithms.spaces import resolve_hparams
from dgalign.train import RunConfig, run_training
from dgalign.utils.registry import RegistryError


class DomainBedStyleERM(torch.nn.Module):
    """ERM as DomainBed writes it (its own network and optimizer, `update` with `unlabeled`)."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__()
        self.hparams = hparams
        n_in = int(np.prod(input_shape))
        self.network = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(n_in, hparams["width"]), torch.nn.ReLU(),
            torch.nn.Linear(hparams["width"], num_classes),
        )  # fmt: skip
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=hparams["lr"])
        self.register_buffer("update_count", torch.tensor([0]))

    def update(self, minibatches, unlabeled=None):
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        loss = F.cross_entropy(self.predict(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.update_count += 1
        return {"loss": loss.item(), "as_tensor": loss.detach()}

    def predict(self, x):
        return self.network(x)


@pytest.fixture
def registered():
    cls = register_domainbed(
        DomainBedStyleERM,
        hparams={"width": (16, lambda r: int(r.choice([8, 16, 32])))},
        name="DBStyleERM",
    )
    yield cls
    algorithms.ALGORITHMS.unregister("DBStyleERM")


def test_hparams_table_draws_like_domainbed(registered):
    assert algorithms.get("DBStyleERM") is registered
    assert resolve_hparams("DBStyleERM", "Spurious28", 0, 0)["width"] == 16
    draws = {resolve_hparams("DBStyleERM", "Spurious28", s, 0)["width"] for s in range(1, 12)}
    assert draws <= {8, 16, 32} and len(draws) > 1


def test_trains_and_checkpoints_its_optimizer(registered, tmp_path):
    hp = json.dumps({"batch_size": 8})
    config = RunConfig(
        dataset="Spurious28",
        algorithm="DBStyleERM",
        test_envs=[2],
        hparams=hp,
        output_dir=str(tmp_path / "a"),
        steps=6,
        checkpoint_freq=3,
    )
    records = run_training(config, progress=False).records
    assert [r["step"] for r in records] == [0, 3, 5]
    assert isinstance(records[-1]["as_tensor"], float) and records[-1]["loss"] > 0
    hparams = resolve_hparams("DBStyleERM", "Spurious28", 0, 0)
    a = registered((3, 28, 28), 2, 2, hparams)
    x, y = torch.randn(4, 3, 28, 28), torch.tensor([0, 1, 0, 1])
    a.update([(x, y), (x, y)])
    b = registered((3, 28, 28), 2, 2, hparams)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as through a checkpoint file
    b.load_extra_state(copy.deepcopy(a.extra_state()))
    assert int(b.wrapped.update_count) == 1
    a.update([(x, y), (x, y)])
    b.update([(x, y), (x, y)])
    assert torch.equal(a.predict(x), b.predict(x))


def test_a_class_without_the_contract_is_one_line():
    with pytest.raises(
        RegistryError, match="cannot register DomainBed algorithm 'X': lacks predict"
    ):
        register_domainbed(type("X", (), {"update": lambda self, m: {}}))
    with pytest.raises(Exception, match=r"give \(default, rule\)"):
        register_domainbed(DomainBedStyleERM, hparams={"width": 16}, name="Bad")
    assert "Bad" not in algorithms.names()
